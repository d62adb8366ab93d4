"""``pycgn export``."""
from __future__ import annotations

import json

from .._checks import PRECISIONS
from ..export import FORMATS, MECHANISMS, SIDECAR, aoti_compile_estimate, aoti_fields, export


def _cli(args) -> int:
    model = args.model
    if args.format == "aoti":
        from .._status import say
        from ..checkpoint import load
        aoti_fields(args.precision, args.device)  # a bad target fails before the status line
        model = load(model)
        say(f"compiling three AOTInductor packages ({args.precision}, {args.device}): "
            f"{aoti_compile_estimate(model)}")
    out = export(model, args.out, format=args.format, precision=args.precision, device=args.device)
    side = json.loads((out / SIDECAR).read_text())
    for m in MECHANISMS:
        print(out / side["files"][m])
    print(out / SIDECAR)
    return 0


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "export", help="write the shape, texture and background generators as ONNX, TorchScript or AOTInductor packages",
        description="Export the three mechanisms of a CGN, each (u float32 (N, 32), y int64 (N,)) -> "
                    "image with a dynamic batch, plus the sidecar pycgn_export.json.")
    p.add_argument("--model", default="colored_mnist", metavar="NAME_OR_PATH",
                   help="a shipped model's name or a checkpoint path (default: colored_mnist)")
    p.add_argument("--format", choices=FORMATS, default="onnx", help="file format (default: onnx)")
    p.add_argument("--precision", choices=PRECISIONS, default="float32",
                   help="aoti only: the precision the packages compute in; float16 on CUDA only "
                        "(default: float32; inputs and outputs stay float32)")
    p.add_argument("--device", choices=("cpu", "cuda"), default="cpu",
                   help="aoti only: the device the packages are compiled for (default: cpu)")
    p.add_argument("--out", required=True, metavar="DIR", help="folder to write (created if needed)")
    p.set_defaults(func=_cli)
