"""Spurious-correlation benchmarks: ``pycgn benchmark make`` and ``pycgn.synth.benchmark.benchmark``.

A benchmark is a folder of named splits, each a ``pycgn synth`` folder made with the split's design
and the seed ``split_seed(seed, name)`` (so a split is resumable and its bytes depend on nothing
but the command), and a datasheet::

    train/ val/ test/ ...       pycgn synth folders (manifest.json + shards)
    grid-<split>.png            the first 64 images of each split
    datasheet.json, DATASHEET.md  model, command, each split's design, requested and measured
                                agreement of each factor with the label, class counts and
                                label x factor tables
"""
from __future__ import annotations

import json
import os
import shlex
import sys
from pathlib import Path

import numpy as np

from .. import _io
from . import synth
from .design import check_split_name, parse_design, split_seed
from .format import MANIFEST, read_record

DATASHEET = "datasheet.json"
DATASHEET_MD = "DATASHEET.md"
KIND = "pycgn-benchmark"
GRID = 64


def benchmark(splits: dict, model="colored_mnist", out="benchmark", seed: int = 0, format: str = "npz",
              shard_size: int = 10000, backend: str = "auto", device: str = "auto", batch_size: int | None = None,
              workers: int | None = None, engine: str = "local", quiet: bool = False,
              command: str | None = None) -> dict:
    """Write the benchmark ``splits`` (``{name: (n, design)}``) into ``out``; returns the datasheet.

    Each split is ``pycgn.synth.synth`` with the split's design and seed ``split_seed(seed, name)``:
    rerunning resumes, and the bytes never depend on ``workers``, ``batch_size`` or ``engine``.
    """
    if not isinstance(splits, dict) or not splits:
        raise ValueError("splits: give at least one split, e.g. {'train': (20000, 'texture=agree:0.99')}")
    plan = {}
    for name, value in splits.items():
        if not (isinstance(value, (tuple, list)) and len(value) == 2):
            raise ValueError(f"splits.{name}: expected (n, design), got {value!r}")
        plan[check_split_name(name)] = (value[0], parse_design(value[1], f"design of split {name!r}"))
    from ..api import Generator
    names = Generator(model, backend="torch", device="cpu")  # every class checked before anything is made
    for name, (n, d) in plan.items():
        d.resolve(names)
    out = Path(out)
    command = command or _canonical_command(model, out, seed, plan, format, shard_size)
    _claim(out, seed, plan)
    manifests = {}
    for name, (n, design) in plan.items():
        manifests[name] = synth(model=model, n=n, out=out / name, format=format, shard_size=shard_size,
                                seed=split_seed(seed, name), backend=backend, device=device,
                                batch_size=batch_size, workers=workers, engine=engine, quiet=quiet,
                                command=command, design=design)
        backend = manifests[name]["backend"]  # every split from the same backend: the same bits
    sheet = datasheet(out, model, seed, command, manifests, plan)
    if not quiet:
        print(f"pycgn benchmark: {len(plan)} split{'s' if len(plan) > 1 else ''} -> {out}; "
              f"datasheet {out / DATASHEET_MD}", file=sys.stderr)
    return sheet


def _claim(out: Path, seed: int, plan: dict) -> None:
    """Record the benchmark's splits before any is made; a rerun must ask for the same ones (each
    split's folder then checks the rest, as ``pycgn synth`` does)."""
    from .store import prepare_out
    wanted = {"seed": int(seed), "splits": {name: {"n": n, "design": d.to_json()} for name, (n, d) in plan.items()}}
    path = out / DATASHEET
    if path.is_file():
        old = read_record(path, KIND, "not written by pycgn benchmark; use another --out")
        if old.get("plan") != wanted:
            raise ValueError(f"out: {out} holds a benchmark made with other splits or seed "
                             f"({sorted(old.get('plan', {}).get('splits', {}))} there, {sorted(plan)} here); "
                             f"use another --out or delete it")
        return
    if out.exists() and any(out.iterdir()):
        raise ValueError(f"out: {out} is not empty and holds no {DATASHEET}; use a new or empty folder")
    prepare_out(out)
    _write_json(out / DATASHEET, {"kind": KIND, "plan": wanted, "complete": False})


def _write_json(path: Path, doc: dict) -> None:
    with _io.atomic_path(path) as tmp:
        Path(tmp).write_text(json.dumps(doc, indent=1) + "\n")


def _canonical_command(model, out, seed, plan, fmt, shard_size) -> str:
    src = model if isinstance(model, (str, os.PathLike)) else getattr(getattr(model, "info", None), "source", "")
    args = ["pycgn", "benchmark", "make", "--model", os.fspath(src) or "<in-memory model>", "--out",
            os.fspath(out), "--seed", str(seed), "--format", fmt, "--shard-size", str(shard_size)]
    for name, (n, d) in plan.items():
        args += ["--split", f"{name}:{n}:{d.text()}"]
    return shlex.join(args)


def split_labels(root) -> dict[str, np.ndarray]:
    """Every label column (index, shape, texture, bg) of a finished split, read from its shards."""
    from .dataset import SynthDataset
    ds = SynthDataset(root, verify=False)
    if ds._labels is None:  # webdataset: the json members only, no image decoding
        ds._labels = np.array([[lab[k] for k in ("index", "shape", "texture", "bg")]
                               for lab in _tar_labels(ds)], dtype=np.int64)
    return {k: ds._labels[:, c] for c, k in enumerate(("index", "shape", "texture", "bg"))}


def _tar_labels(ds):
    import tarfile
    for p in ds._paths:
        with tarfile.open(p) as tf:
            for member in tf:
                if member.name.endswith(".json"):
                    yield json.loads(tf.extractfile(member).read())


def datasheet(out: Path, model, seed: int, command: str, manifests: dict, plan: dict) -> dict:
    """Measure every split and write ``datasheet.json``, ``DATASHEET.md`` and the sample grids."""
    from .dataset import SynthDataset
    from ..sheets import save_image, tile
    first = next(iter(manifests.values()))
    sheet = {"kind": KIND, "complete": True,
             "plan": {"seed": int(seed), "splits": {k: {"n": n, "design": d.to_json()} for k, (n, d) in plan.items()}},
             "model": {**first["model"], "source": _source(model)}, "seed": int(seed),
             "command": command, "backend": first["backend"], "class_names": first["class_names"], "splits": {}}
    for name, m in manifests.items():
        design = parse_design(m["design"])  # resolved when written: class ids throughout
        labels = split_labels(out / name)
        y = labels[design.label]
        factors = {}
        for mech in design.factors():
            f = labels[mech]
            classes = sorted(set(design.classes) | set(np.unique(f).tolist()))
            table = [[int(((y == a) & (f == b)).sum()) for b in classes] for a in design.classes]
            factors[mech] = {
                "rule": design.rule(mech).to_json(),
                "requested_agreement": round(design.requested_agreement(mech), 6),
                "measured_agreement": round(float((f == y).mean()), 6),
                "class_counts": {str(c): int((f == c).sum()) for c in classes},
                "label_x_factor": {"rows": list(design.classes), "cols": classes, "counts": table},
            }
        ds = SynthDataset(out / name, verify=False)
        images = np.stack([ds[i][0].permute(1, 2, 0).numpy() for i in range(min(GRID, len(ds)))])
        grid = f"grid-{name}.png"
        save_image(tile(images, cols=8, scale=max(1, 64 // images.shape[1])), out / grid)
        sheet["splits"][name] = {
            "n": m["n"], "seed": m["seed"], "format": m["format"], "design": m["design"], "grid": grid,
            "label": design.label,
            "label_counts": {str(c): int((y == c).sum()) for c in design.classes},
            "factors": factors,
        }
    _write_json(out / DATASHEET, sheet)
    with _io.atomic_path(out / DATASHEET_MD) as tmp:
        Path(tmp).write_text(markdown(sheet))
    return sheet


def _source(model) -> str:
    if isinstance(model, (str, os.PathLike)):
        return os.fspath(model)
    return str(getattr(getattr(model, "info", None), "source", "") or "<in-memory model>")


def markdown(sheet: dict) -> str:
    names = sheet["class_names"]
    lines = ["# Benchmark datasheet", "",
             f"- model: `{sheet['model']['source']}` ({sheet['model'].get('name')}), sha256 "
             f"`{sheet['model']['sha256']}`",
             f"- command: `{sheet['command']}`",
             f"- seed: {sheet['seed']}; backend: {sheet['backend']}; every image regenerates from "
             f"(seed, split, index)", "",
             "| split | n | label | factor | rule | requested agreement | measured agreement |",
             "|---|---:|---|---|---|---:|---:|"]
    for name, s in sheet["splits"].items():
        for mech, f in s["factors"].items():
            rule = ", ".join(f"{k}={v}" for k, v in f["rule"].items())
            lines.append(f"| {name} | {s['n']} | {s['label']} | {mech} | {rule} | "
                         f"{100 * f['requested_agreement']:.2f} % | {100 * f['measured_agreement']:.2f} % |")
    for name, s in sheet["splits"].items():
        lines += ["", f"## Split `{name}`", "", f"Design: `{json.dumps(s['design'])}`; seed {s['seed']}; "
                  f"format {s['format']}.", "", f"![{name}]({s['grid']})", ""]
        for mech, f in s["factors"].items():
            t = f["label_x_factor"]
            lines += [f"{s['label']} (rows) x {mech} (columns), counts:", "",
                      "| | " + " | ".join(_short(names, c) for c in t["cols"]) + " |",
                      "|---|" + "---:|" * len(t["cols"])]
            for r, row in zip(t["rows"], t["counts"]):
                lines.append(f"| {_short(names, r)} | " + " | ".join(map(str, row)) + " |")
            lines.append("")
    return "\n".join(lines) + "\n"


def _short(names, c: int) -> str:
    name = names[c] if 0 <= c < len(names) else str(c)
    return f"{c}" if name == str(c) else f"{c} {name.split(',')[0][:16]}"


def read_datasheet(root) -> dict:
    path = Path(root) / DATASHEET
    if not path.is_file():
        raise FileNotFoundError(f"{root}: no {DATASHEET}; not a pycgn benchmark folder (pycgn benchmark make)")
    sheet = json.loads(path.read_text())
    if sheet.get("kind") != KIND:
        raise ValueError(f"{path}: not a pycgn benchmark datasheet")
    if not sheet.get("complete"):
        raise ValueError(f"{root}: the benchmark is not complete; rerun its pycgn benchmark make command")
    return sheet


def split_manifest(root, split: str) -> dict:
    path = Path(root) / check_split_name(split) / MANIFEST
    if not path.is_file():
        raise FileNotFoundError(f"{root}: no split {split!r}")
    return json.loads(path.read_text())
