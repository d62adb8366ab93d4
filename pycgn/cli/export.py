"""``pycgn export``."""
from __future__ import annotations

import json

from ..export import FORMATS, MECHANISMS, SIDECAR, export


def _cli(args) -> int:
    out = export(args.model, args.out, format=args.format)
    side = json.loads((out / SIDECAR).read_text())
    for m in MECHANISMS:
        print(out / side["files"][m])
    print(out / SIDECAR)
    return 0


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "export", help="write the shape, texture and background generators as ONNX or TorchScript",
        description="Export the three mechanisms of a CGN, each (u float32 (N, 32), y int64 (N,)) -> "
                    "image with a dynamic batch, plus the sidecar pycgn_export.json.")
    p.add_argument("--model", default="colored_mnist", metavar="NAME_OR_PATH",
                   help="a shipped model's name or a checkpoint path (default: colored_mnist)")
    p.add_argument("--format", choices=FORMATS, default="onnx", help="file format (default: onnx)")
    p.add_argument("--out", required=True, metavar="DIR", help="folder to write (created if needed)")
    p.set_defaults(func=_cli)
