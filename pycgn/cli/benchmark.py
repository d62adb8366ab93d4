"""``pycgn benchmark make`` (spurious-correlation benchmark folders) and ``pycgn benchmark evaluate``
(biased vs counterfactual-trained classifier, per group)."""
from __future__ import annotations

import json
import shlex
import sys
from pathlib import Path

from .. import _checks
from ..synth import DEFAULT_BATCH, FORMATS, SynthError

EXAMPLE = ("pycgn benchmark make --model colored_mnist --out bench "
           "--split train:20000:texture=agree:0.99 --split test:5000:texture=uniform "
           "--split anti:5000:texture=permute:1.0")


def _cmd_make(args) -> int:
    from ..synth.benchmark import benchmark
    from ..synth.design import parse_split, read_splits
    splits = {}
    if args.design:
        for name, (n, design) in read_splits(args.design).items():
            splits[name] = (args.n if n is None else n, design)
    for text in args.split or ():
        name, n, design = parse_split(text)
        if name in splits:
            raise ValueError(f"--split: split {name!r} given twice")
        splits[name] = (n, design)
    if not splits:
        raise ValueError(f"give --split NAME:N:DESIGN (one or more) or --design FILE.json; e.g. {EXAMPLE}")
    for name, (n, _) in splits.items():
        if n is None:
            raise ValueError(f"split {name!r}: no n (give \"n\" in the design file or --n)")
    argv = getattr(args, "argv", None)
    try:
        benchmark(splits, model=args.model, out=args.out, seed=args.seed, format=args.format,
                  shard_size=args.shard_size, backend=args.backend, device=args.device, batch_size=args.batch_size,
                  workers=args.workers, quiet=args.quiet, command=shlex.join(["pycgn", *argv]) if argv else None)
    except SynthError as e:
        print(f"pycgn benchmark: error: {' '.join(str(e).split())}", file=sys.stderr)
        return 1
    return 0


def _cmd_evaluate(args) -> int:
    from ..groups import evaluate_benchmark, markdown
    from .evaluate import _write
    r = evaluate_benchmark(args.root, train=args.train, epochs=args.epochs, counterfactuals=args.counterfactuals,
                           seed=args.seed, model=args.model, progress=not args.quiet)
    out = Path(args.root) if args.out is None else Path(args.out)
    _write(out / "groups.json", json.dumps(r, indent=1) + "\n")
    _write(out / "GROUPS.md", markdown(r))
    print(markdown(r))
    return 0


def register(subparsers) -> None:
    p = subparsers.add_parser("benchmark", help="spurious-correlation benchmarks (make, evaluate)",
                              description="Benchmarks with controlled correlations between the label and each "
                                          f"factor. Example: {EXAMPLE}")
    sub = p.add_subparsers(dest="action", metavar="ACTION", required=True)
    q = sub.add_parser("make", help="write a benchmark folder: named splits, each from a design, and a datasheet",
                       description="Write each split with pycgn synth (resumable, bit-identical whatever the "
                                   "workers or batch size) from its design, then DATASHEET.md. A design: "
                                   "MECH=RULE,... with RULE uniform | agree:P | permute:P | fixed:C | "
                                   "subset:A|B, plus label=MECH and classes=A|B|... "
                                   f"Example: {EXAMPLE}")
    q.add_argument("--model", default="colored_mnist",
                   help="shipped model name or checkpoint path (default: %(default)s)")
    q.add_argument("--out", required=True, help="benchmark folder (created; rerun to resume)")
    q.add_argument("--split", action="append", metavar="NAME:N:DESIGN",
                   help="a split, e.g. train:20000:texture=agree:0.99,bg=agree:0.5 (repeatable)")
    q.add_argument("--design", default=None,
                   help='JSON file {"splits": {NAME: {"n": N, MECH: RULE}}, ...}; top-level fields apply to '
                        "every split (default: none)")
    q.add_argument("--n", type=int, default=None, help="images of a split whose design file gives no n (default: none)")
    q.add_argument("--seed", type=int, default=0, help="benchmark seed; each split's seed derives from it and "
                                                       "the split's name (default: 0)")
    q.add_argument("--format", default="npz", choices=FORMATS, help="shard format (default: npz)")
    q.add_argument("--shard-size", type=int, default=10000, help="images per shard (default: 10000)")
    q.add_argument("--backend", default="auto", help=_checks.BACKEND_HELP)
    q.add_argument("--device", default="auto", help="auto, cpu or cuda (default: auto)")
    q.add_argument("--batch-size", type=int, default=None, help=f"images per forward (default: {DEFAULT_BATCH})")
    q.add_argument("--workers", type=int, default=None, help="local processes (default: 1)")
    q.add_argument("--quiet", action="store_true", help="no progress bar and no summary")
    q.set_defaults(func=_cmd_make)
    e = sub.add_parser("evaluate", help="biased vs counterfactual-trained classifier: accuracy per split and group",
                       description="Train the paper's CNN on the benchmark's train split (biased) and on it plus "
                                   "CGN counterfactuals (repaired); report the accuracy on every split, per group "
                                   "(label x whether each factor agrees with it) and the worst group. Writes "
                                   "groups.json and GROUPS.md.")
    e.add_argument("root", help="benchmark folder (pycgn benchmark make)")
    e.add_argument("--train", default="train", help="the split to train on (default: train)")
    e.add_argument("--epochs", type=int, default=3, help="training epochs (default: 3)")
    e.add_argument("--counterfactuals", type=int, default=None,
                   help="counterfactual images added for the repaired classifier (default: as many as train)")
    e.add_argument("--model", default=None, help="the CGN of the counterfactuals (default: the benchmark's)")
    e.add_argument("--seed", type=int, default=0, help="seed of the classifiers and counterfactuals (default: 0)")
    e.add_argument("--out", default=None, help="folder of groups.json and GROUPS.md (default: the benchmark)")
    e.add_argument("--quiet", action="store_true", help="no progress bar")
    e.set_defaults(func=_cmd_evaluate)
