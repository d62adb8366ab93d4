"""``pycgn generate``, ``grid``, ``interpolate`` and ``info``."""
from __future__ import annotations

import json

import numpy as np

from .. import _checks
from ..api import MECHANISMS, get_generator, info
from ..sheets import check_writable, grid, interpolate, save_image, tile


def _classes_arg(text: str | None):
    """'3' -> '3'; '3,7,None' -> ['3', '7', None]; class names stay strings, resolved by the model."""
    if text is None:
        return None
    parts = [p.strip() for p in text.split(",")]
    parts = [None if p.lower() in ("none", "random", "") else p for p in parts]
    return parts[0] if len(parts) == 1 else parts


def _add_common(p, backend=True):
    p.add_argument("--model", default="colored_mnist",
                   help="shipped model name (colored_mnist, double_colored_mnist, wildlife_mnist) or a "
                        "checkpoint path (default: %(default)s)")
    p.add_argument("--seed", type=int, default=0, help="random seed; same seed, same images (default: 0)")
    if backend:
        p.add_argument("--backend", default="auto", help=_checks.BACKEND_HELP)
    p.add_argument("--precision", default="float32", choices=_checks.PRECISIONS, help=_checks.PRECISION_HELP)
    p.add_argument("--device", default="auto", help="auto, cpu or cuda (default: auto)")
    p.add_argument("--truncation", type=float, default=None,
                   help="ImageNet CGN only: noise truncation in (0, 1] (default: 0.5)")
    p.add_argument("--scale", type=int, default=4, help="enlarge each image this many times (default: 4)")
    p.add_argument("-o", "--out", required=True,
                   help="output image: .png, .jpg, .webp, .bmp or .tif (no suffix: PNG)")
    p.add_argument("--quiet", action="store_true", help="no status messages on stderr")


def _mechanism_args(p):
    for m, what in (("shape", "shape (mask)"), ("texture", "texture (foreground)"), ("bg", "background")):
        p.add_argument(f"--{m}", default=None,
                       help=f"class of the {what}: an id, a name, a comma list (one per image) or 'random'")


NO_LABELS = (["--no-labels"], dict(action="store_true", help="leave the class names off the sheet's axes"))


def _settings(args) -> None:
    """A deprecated backend name becomes the backend and precision it stands for, with one line."""
    if args.backend in _checks.DEPRECATED_BACKENDS:
        from .._status import say
        say(f"pycgn {args.command}: {_checks.deprecation(args.backend)}")
        args.backend, args.precision = _checks.backend_alias(args.backend, args.precision)


def _cmd_generate(args) -> int:
    _settings(args)
    check_writable(args.out)
    if args.n < 1:
        raise ValueError(f"-n must be >= 1, got {args.n}")
    gen = get_generator(args.model, args.backend, args.device, args.truncation, args.precision)
    images = gen.generate(_classes_arg(args.shape), _classes_arg(args.texture), _classes_arg(args.bg), n=args.n,
                          seed=args.seed, output="numpy")
    cols = args.cols or int(np.ceil(np.sqrt(len(images))))
    save_image(tile(images, cols=cols, scale=args.scale), args.out)
    print(f"wrote {args.out}: {len(images)} images ({gen.info.variant}, backend {gen.backend}, {gen.precision}, "
          f"seed {args.seed})")
    return 0


def _cmd_grid(args) -> int:
    _settings(args)
    sheet = grid(rows=args.rows, cols=args.cols, row_classes=_classes_arg(args.row_classes),
                 col_classes=_classes_arg(args.col_classes), shape=_classes_arg(args.shape),
                 texture=_classes_arg(args.texture), bg=_classes_arg(args.bg), model=args.model, seed=args.seed,
                 same_noise=not args.vary_noise, backend=args.backend, device=args.device, path=args.out,
                 scale=args.scale, truncation=args.truncation, labels=not args.no_labels, precision=args.precision)
    print(f"wrote {args.out}: {args.rows} down x {args.cols} across, {sheet.shape[1]}x{sheet.shape[0]} px")
    return 0


def _cmd_interpolate(args) -> int:
    interpolate(mechanism=args.mechanism, start=_classes_arg(args.start), end=_classes_arg(args.end),
                steps=args.steps, rows=args.rows, shape=_classes_arg(args.shape),
                texture=_classes_arg(args.texture), bg=_classes_arg(args.bg), model=args.model, seed=args.seed,
                device=args.device, path=args.out, scale=args.scale, truncation=args.truncation,
                labels=not args.no_labels, precision=args.precision)
    print(f"wrote {args.out}: {args.mechanism} from {args.start} to {args.end} in {args.steps} steps")
    return 0


def _cmd_info(args) -> int:
    data = info()
    if args.json:
        print(json.dumps(data, indent=2))
        return 0
    ext = data["extension"]
    print(f"pycgn {data['pycgn']} (torch {data['torch']}, python {data['python']})")
    print(f"extension: {'loaded' if ext['loaded'] else 'NOT loaded: ' + str(ext['error'])}; "
          f"CPU kernels: {'yes' if ext['cpu_kernels'] else 'no'}; CUDA kernels: {'yes' if ext['cuda_kernels'] else 'no'}")
    print(f"CUDA device: {'yes' if data['cuda_available'] else 'no'}")
    print(f"CPU bfloat16: {data['cpu_bfloat16']}")
    print(f"backends: {', '.join(data['backends'])}")
    for p, names in data["precisions"].items():
        print(f"precision {p}: {', '.join(names) if names else 'not on this device'}")
    if data["onnxruntime"]:
        print(f"onnxruntime {data['onnxruntime']['version']}: {', '.join(data['onnxruntime']['providers'])}")
    for name, path in data["models"].items():
        print(f"model {name}: {path or 'missing'}")
    cache = data["cache"]
    print(f"cache: {cache['folder']} ({len(cache['entries'])} {_plural(len(cache['entries']), 'entry', 'entries')}; "
          f"`pycgn cache` lists them)")
    for e in cache["entries"]:
        if e["kind"] == "auto choices":
            print(f"backend auto chose: {e['detail']}")
    return 0


def _plural(n: int, one: str, many: str) -> str:
    return one if n == 1 else many


def _image_command(sub, name, func, help, description, options, backend=True):
    """A subcommand that draws images: its own ``options`` ((flags, kwargs) pairs), then the
    mechanism classes and the options every image command shares."""
    p = sub.add_parser(name, help=help, description=description)
    for flags, kwargs in options:
        p.add_argument(*flags, **kwargs)
    _mechanism_args(p)
    _add_common(p, backend=backend)
    p.set_defaults(func=func)


def register(sub) -> None:
    _image_command(
        sub, "generate", _cmd_generate, "write a PNG grid of counterfactual images",
        "Generate counterfactual images: each mechanism takes its own class. "
        "Example: pycgn generate --shape 3 --texture 7 --bg 1 -n 16 --seed 5 -o out.png",
        [(["-n"], dict(type=int, default=16, help="number of images (default: 16)")),
         (["--cols"], dict(type=int, default=0, help="images per row of the grid (default: square)"))])
    _image_command(
        sub, "grid", _cmd_grid, "a table of classes, e.g. shapes down x backgrounds across",
        "One mechanism's classes down the rows, another's across the columns. "
        "Example: pycgn grid --rows shape --cols bg --texture 2 -o grid.png",
        [(["--rows"], dict(default="shape", choices=MECHANISMS, help="mechanism that varies down (default: shape)")),
         (["--cols"], dict(default="bg", choices=MECHANISMS, help="mechanism that varies across (default: bg)")),
         (["--row-classes"], dict(default=None, help="comma list of classes down (default: all)")),
         (["--col-classes"], dict(default=None, help="comma list of classes across (default: all)")),
         (["--vary-noise"], dict(action="store_true", help="draw new latents per cell instead of sharing them")),
         NO_LABELS])
    # no --backend: interpolation feeds blended class vectors to the nets, which only eager torch takes
    _image_command(
        sub, "interpolate", _cmd_interpolate, "an interpolation sheet between two classes of one mechanism",
        "Moves one mechanism's class embedding from --start to --end. "
        "Example: pycgn interpolate --mechanism shape --start 3 --end 8 -o interp.png",
        [(["--mechanism"], dict(default="shape", choices=MECHANISMS,
                                help="mechanism to interpolate (default: shape)")),
         (["--start"], dict(required=True, help="class at the left")),
         (["--end"], dict(required=True, help="class at the right")),
         (["--steps"], dict(type=int, default=8, help="columns (default: 8)")),
         (["--rows"], dict(type=int, default=4, help="rows, each with its own latents (default: 4)")),
         NO_LABELS],
        backend=False)

    p = sub.add_parser("info", help="models, backends, kernels and versions of this install",
                       description="What this install can do: versions, the compiled extension's kernels, "
                                   "backends, execution providers and the shipped models.")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=_cmd_info)
