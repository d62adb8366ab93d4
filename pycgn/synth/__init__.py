"""Dataset synthesis at scale: ``pycgn synth`` and ``pycgn.synth.synth``.

A dataset is ``n`` samples cut into shards of ``shard_size`` consecutive sample indices. Sample
``i`` is a pure function of ``(weights, seed, counterfactuals, i)`` (``pycgn.sampler``), so a
shard's bytes depend only on the command and its index range: never on ``workers``,
``batch_size`` or ``engine``. Layout of ``out``::

    manifest.json                 what made the data and every finished shard (count, sha256)
    shard-00000.npz | .tar | /    npz arrays, webdataset tar (png + json), or a png folder

Faults: each shard is written under a temporary name and renamed when complete, the manifest
likewise; a rerun of the same command removes temporary leftovers, checks finished shards
(sha256) and makes only the missing ones, so a run killed at any moment and rerun gives exactly
the uninterrupted dataset. A different command on a used folder is refused.

Memory stays flat in ``n``: the generator fills one of a few preallocated shard buffers while a
writer thread encodes and writes the previous one (the generator never waits on disk unless
the disk is slower than generation).

Rooms: ``format`` (the shard format, shared with the reader), ``store`` (the output folder),
``engines`` (local, processes, Ray), ``dataset`` (``SynthDataset``); the CLI is ``pycgn.cli.synth``;
this module holds ``synth()``, which ties them together.
"""
from __future__ import annotations

import os
import shlex
import sys
import threading
import time
from contextlib import nullcontext
from pathlib import Path

from .. import _checks
from .._version import __version__
from . import store
from .design import make_sampler
from .engines import DEFAULT_BATCH, LAST_RUN, MIN_BATCH, ray_session, run_local, run_processes, run_ray
from .format import (ARRAYS, FORMAT_VERSION, FORMATS, INPUTS, KIND, LABELS, MANIFEST, Plan, files_sha256,
                     shard_sha256)
from .store import SynthError

ENGINES = ("local", "ray")

__all__ = ["DEFAULT_BATCH", "ENGINES", "FORMATS", "INPUTS", "KIND", "LABELS", "LAST_RUN", "MANIFEST", "Plan",
           "SynthDataset", "SynthError", "files_sha256", "shard_sha256", "synth"]


def __getattr__(name):
    if name == "SynthDataset":  # torch's Dataset is imported only by those who read
        from .dataset import SynthDataset
        return SynthDataset
    raise AttributeError(f"module 'pycgn.synth' has no attribute {name!r}")


def _progress_bar(total: int, initial: int, quiet: bool):
    from tqdm import tqdm
    return tqdm(total=total, initial=initial, unit="img", unit_scale=True, dynamic_ncols=True, smoothing=0.05,
                disable=quiet or not sys.stderr.isatty(), desc="pycgn synth")


def _canonical_command(model, n, out, k, fmt, shard_size, seed, design=None, precision="float32") -> str:
    src = model if isinstance(model, (str, os.PathLike)) else getattr(getattr(model, "info", None), "source", "")
    args = ["pycgn", "synth", "--model", os.fspath(src) or "<in-memory model>", "--n", str(n),
            "--counterfactuals", str(k), "--out", os.fspath(out), "--format", fmt, "--shard-size",
            str(shard_size), "--seed", str(seed)]
    if design is not None:
        args += ["--design", design.text()]
    if precision != "float32":
        args += ["--precision", precision]
    return shlex.join(args)


# ``auto`` compiles the aoti packages for jobs of at least this many images, and only considers them
# (cached) for smaller ones. A compile repays itself from n = compile_s / (1/rate_without - 1/rate_with)
# images on. Measured on the project's 2-core machine with the folded MNIST nets (benchmarks/RESULTS.md,
# 2026-11-29 evening): compiling the three packages took 52-62 s (plus ~2 min for AOTInductor's
# precompiled headers the first time on a machine); at batch 256-1024 aoti ran the nets 1.15-1.3x
# eager torch in float32 and 1.2x in bfloat16. With synth at ~1,900 (float32) / ~4,300 (bfloat16)
# img/s and those gains on the nets (~1.1x on the whole job), the break-even is ~1.2-3.5 million
# images (float32) and ~1.6 million (bfloat16): below 2,000,000 a compile would cost more than it saves.
AOTI_MIN_IMAGES = 2_000_000


def _compile_aoti_if_repaid(gen, n: int) -> bool:
    """Compile ``gen``'s aoti packages into the cache when ``n`` images repay it; True if it did."""
    from .. import runtime
    if n < AOTI_MIN_IMAGES or gen.model.kind != "mnist_cgn" or "aoti" not in runtime.available_backends():
        return False
    precision = getattr(gen, "precision", "float32")
    if runtime.aoti_cached(gen.model, precision, gen.device):
        return False
    from .._status import say
    say(f"synth: {n:,} images repay compiling the model's aoti packages (from {AOTI_MIN_IMAGES:,} on); "
        f"later runs load them")
    runtime.cached_export(gen.model, "aoti", precision=precision, device=gen.device)
    return True


def _pinned_generator(model, backend: str, device, batch_size: int, precision: str = "float32", n: int = 0):
    """A Generator whose backend is fixed for the whole dataset, and that backend's name.

    ``auto`` may choose another backend per batch-size class, and backends differ in the last
    bits, so ``auto`` is resolved once (for ``batch_size``) and recorded in the manifest. For a
    job of ``AOTI_MIN_IMAGES`` or more, ``auto`` first compiles the aoti packages (once per machine).
    """
    from ..api import Generator
    gen = Generator(model, backend, device, precision=precision)
    if backend == "auto" and _compile_aoti_if_repaid(gen, n):
        gen = Generator(gen.model, backend, device, precision=precision)  # auto now finds the packages in the cache
    if backend != "auto" or gen.backend != "auto":
        return gen, gen.backend
    return gen, gen.pin(max(batch_size, MIN_BATCH))


def _positive(name: str, value) -> int:
    value = _checks.count(name, value)
    if value < 1:
        raise ValueError(f"{name} must be >= 1, got {value}")
    return value


def synth(model="colored_mnist", n: int = 10000, out="synth", counterfactuals: int = 1, format: str = "npz",
          shard_size: int = 10000, seed: int = 0, backend: str = "auto", device: str = "auto",
          batch_size: int | None = None, workers: int | None = None, engine: str = "local",
          ray_address: str | None = None, quiet: bool = False, command: str | None = None,
          design=None, precision: str = "float32") -> dict:
    """Synthesize ``n`` counterfactual images with labels into the folder ``out``; returns the manifest.

    ``model``: shipped name, checkpoint path or ``MnistCGN``. ``counterfactuals`` K: sample ``i``
    shares its shape (mask) with the other samples of ``i // K`` and draws its own texture and
    background classes and latents. ``format``: ``npz`` (arrays ``images`` (N, H, W, 3) uint8,
    ``index``, ``shape``, ``texture``, ``bg`` int64 and the inputs ``u_shape``, ``u_texture``,
    ``u_bg``, ``fg_offset``, ``bg_offset``), ``webdataset`` (tar of ``KEY.png`` + ``KEY.json``)
    or ``png`` (a folder per shard: PNGs, ``labels.csv``, ``inputs.npz``). ``workers``: local
    processes (default 1, which overlaps generation and writing with a thread) or Ray actors.
    ``engine``: ``local`` or ``ray`` (an existing cluster at ``ray_address`` or a local one).
    ``command``: the command line to record in the manifest (default: one equivalent to this call).
    ``design``: draw the classes from a dataset design (``pycgn.synth.design``; a ``Design``, its
    JSON dict or its ``texture=agree:0.9,...`` text) instead of uniformly; recorded in the manifest.
    ``precision``: ``float32`` (default), ``bfloat16`` or ``float16`` (CUDA only), as in
    ``pycgn.generate``; recorded in the manifest.
    Rerunning the same call resumes; a different call on a used folder raises ``ValueError``.
    """
    n = _positive("n", n)
    k = _positive("counterfactuals", counterfactuals)
    shard_size = _positive("shard_size", shard_size)
    if format not in FORMATS:
        raise ValueError(f"format must be one of {', '.join(FORMATS)}, got {format!r}")
    if engine not in ENGINES:
        raise ValueError(f"engine must be one of {', '.join(ENGINES)}, got {engine!r}")
    batch_size = DEFAULT_BATCH if batch_size is None else _positive("batch_size", batch_size)
    if workers is not None:
        workers = _positive("workers", workers)
    if not isinstance(out, (str, os.PathLike)):
        raise TypeError(f"out must be a folder path, got {type(out).__name__}")
    if ray_address is not None and engine != "ray":
        raise ValueError("ray_address only applies to engine 'ray'")
    from ..sampler import Sampler
    Sampler(seed)  # checks the seed before any work
    if design is not None:
        from .design import parse_design
        design = parse_design(design)
        if k != 1:
            raise ValueError("counterfactuals must be 1 with a design (the design draws every class)")

    t0 = time.perf_counter()
    out_path = Path(out)
    # Everything that can refuse the run (model, backend, device, the Ray cluster) is checked
    # before the folder is created or changed: a run that cannot start leaves nothing behind.
    old = store.read_manifest(out_path) if out_path.is_dir() else None  # read only; again under the lock
    if old is not None and backend == "auto":
        backend = old.get("backend", "auto")  # resume with what made the first shards
    if backend in _checks.DEPRECATED_BACKENDS:  # one status line, then the setting it stands for
        from .._status import say
        say(f"pycgn synth: {_checks.deprecation(backend)}")
        backend, precision = _checks.backend_alias(backend, precision)
    gen, backend_used = _pinned_generator(model, backend, device, batch_size, precision, n)
    info = gen.info
    if design is not None:
        design = design.resolve(gen)
    with ray_session(ray_address) if engine == "ray" else nullcontext() as ray, \
            store.locked(store.prepare_out(out_path)):
        old = store.read_manifest(out_path)
        if old is None:
            store.check_unused(out_path)
        plan = Plan(n, shard_size, format)
        manifest = {
            "kind": KIND, "format_version": FORMAT_VERSION, "pycgn_version": __version__,
            "command": command or _canonical_command(model, n, out, k, format, shard_size, seed, design,
                                                           gen.precision),
            "model": {"name": info.variant, "sha256": info.sha256},
            "seed": int(seed), "n": n, "counterfactuals": k, "format": format, "shard_size": shard_size,
            "backend": backend_used, "precision": gen.precision, "device": gen.device.type,
            "image_size": gen.model.image_size, "class_names": list(info.class_names),
            "arrays": dict(ARRAYS), "complete": False, "shards": [],
        }
        if design is not None:
            manifest["design"] = design.to_json()
        if old is not None:
            diffs = store.differences(old, manifest)
            if diffs:
                raise ValueError(f"out: {out_path} holds a dataset made by a different command "
                                 f"({'; '.join(diffs)}); use another --out or delete it")
            manifest["command"] = old.get("command", manifest["command"])
        store.clear_leftovers(out_path)
        todo, finished = store.resume(out_path, plan, old, quiet)
        manifest["shards"] = list(finished)
        store.write_manifest(out_path, manifest)

        lock = threading.Lock()
        resumed = sum(s["count"] for s in finished)
        bar = _progress_bar(n, resumed, quiet)

        def done(rec):
            with lock:
                manifest["shards"].append(rec)
                store.write_manifest(out_path, manifest)

        t1 = time.perf_counter()
        try:
            if not todo:
                pass
            elif engine == "ray":
                run_ray(ray, gen.model, backend_used, gen.device.type, seed, k, plan, todo, batch_size,
                        workers, out_path, done, bar.update, design, gen.precision)
            elif (workers or 1) > 1:
                run_processes(gen.model, backend_used, gen.device.type, seed, k, plan, todo, batch_size,
                              workers, out_path, done, bar.update, design, gen.precision)
            else:
                run_local(gen, make_sampler(gen, seed, k, design), plan, todo, batch_size, out_path,
                          done, bar.update)
        finally:
            bar.close()
        manifest["complete"] = True
        store.write_manifest(out_path, manifest)
    made = n - resumed
    dt = time.perf_counter() - t1
    LAST_RUN.update(backend=backend_used, made=made, generate_s=dt, engine=engine, workers=workers or 1)
    if not quiet:
        rate = f", {made / dt:,.0f} img/s" if made and dt > 0 else ""
        shards = f"{plan.shards} {format} shard{'' if plan.shards == 1 else 's'}"
        print(f"pycgn synth: {n:,} image{'' if n == 1 else 's'} in {shards} -> {out_path} ({made:,} made, "
              f"{resumed:,} resumed) in {time.perf_counter() - t0:.1f} s{rate}; backend {backend_used}, "
              f"{gen.precision}",
              file=sys.stderr)
    return manifest
