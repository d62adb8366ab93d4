#!/usr/bin/env python
"""Export CGN models to ONNX and/or TorchScript folders with ``pycgn.export`` (all the logic lives there).

    python export/export_models.py --out exported                    # the shipped models, both formats
    python export/export_models.py --out exported --format onnx path/to/model.pt

Each model goes to ``OUT/<name>/<format>/``: shape, texture and background files plus
``pycgn_export.json``.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from pycgn.checkpoint import SHIPPED, CheckpointError
from pycgn.export import FORMATS, export


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("models", nargs="*", metavar="NAME_OR_PATH",
                   help=f"shipped model names or checkpoint paths (default: {', '.join(SHIPPED)})")
    p.add_argument("--out", required=True, metavar="DIR", help="root folder of the exports")
    p.add_argument("--format", choices=FORMATS + ("all",), default="all")
    args = p.parse_args(argv)
    formats = FORMATS if args.format == "all" else (args.format,)
    for model in args.models or SHIPPED:
        name = Path(model).stem if model not in SHIPPED else model
        for fmt in formats:
            try:
                out = export(model, Path(args.out) / name / fmt, format=fmt)
            except (CheckpointError, ValueError, TypeError, OSError) as e:
                print(f"export_models: {model}: error: {' '.join(str(e).split())}", file=sys.stderr)
                return 2
            print(out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
