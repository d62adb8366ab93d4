"""``pycgn synth``: its arguments and exit statuses.

The command line recorded in the manifest is the one this handler was given (``args.argv``, set
by ``pycgn.cli.main``), never read from ``sys.argv`` by the library.
"""
from __future__ import annotations

import shlex
import sys

from .. import _checks
from ..synth import DEFAULT_BATCH, ENGINES, FORMATS, SynthError, synth


def _cmd_synth(args) -> int:
    argv = getattr(args, "argv", None)
    try:
        synth(model=args.model, n=args.n, out=args.out, counterfactuals=args.counterfactuals,
              format=args.format, shard_size=args.shard_size, seed=args.seed, backend=args.backend,
              device=args.device, batch_size=args.batch_size, workers=args.workers, engine=args.engine,
              ray_address=args.ray_address, quiet=args.quiet, design=args.design, precision=args.precision,
              command=shlex.join(["pycgn", *argv]) if argv else None)
    except SynthError as e:
        print(f"pycgn synth: error: {' '.join(str(e).split())}", file=sys.stderr)
        return 1
    return 0


def register(sub) -> None:
    p = sub.add_parser(
        "synth", help="synthesize a labelled counterfactual dataset (resumable, sharded)",
        description="Synthesize N counterfactual images with labels and inputs into sharded files, "
                    "resumable after any interruption. Example: pycgn synth --model colored_mnist "
                    "--n 100000 --counterfactuals 10 --out data/cf --format npz")
    p.add_argument("--model", default="colored_mnist",
                   help="shipped model name or checkpoint path (default: %(default)s)")
    p.add_argument("--n", type=int, required=True, help="number of images")
    p.add_argument("--counterfactuals", type=int, default=1,
                   help="K images per shape sample: same mask, new texture and background (default: 1)")
    p.add_argument("--out", required=True, help="output folder (created; rerun to resume)")
    p.add_argument("--format", default="npz", choices=FORMATS, help="shard format (default: npz)")
    p.add_argument("--shard-size", type=int, default=10000, help="images per shard (default: 10000)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    p.add_argument("--backend", default="auto", help=_checks.BACKEND_HELP)
    p.add_argument("--precision", default="float32", choices=_checks.PRECISIONS,
                   help=_checks.PRECISION_HELP + "; bfloat16 is the fastest on AMX/AVX512-BF16 CPUs, its images "
                                                 "within a few uint8 levels of float32")
    p.add_argument("--device", default="auto", help="auto, cpu or cuda (default: auto)")
    p.add_argument("--batch-size", type=int, default=None, help=f"images per forward (default: {DEFAULT_BATCH})")
    p.add_argument("--workers", type=int, default=None,
                   help="local processes or Ray actors (default: 1 local; one per CPU on Ray)")
    p.add_argument("--engine", default="local", choices=ENGINES, help="local or ray (default: local)")
    p.add_argument("--ray-address", default=None, help="address of an existing Ray cluster (default: start one)")
    p.add_argument("--design", default=None, metavar="MECH=RULE,...",
                   help="draw the classes from a dataset design, e.g. texture=agree:0.9,bg=uniform (see pycgn "
                        "benchmark make; default: every class uniform)")
    p.add_argument("--quiet", action="store_true", help="no progress bar and no summary")
    p.set_defaults(func=_cmd_synth)
