"""Dataset synthesis at scale: ``pycgn synth`` and ``pycgn.synth.synth``.

A dataset is ``n`` samples cut into shards of ``shard_size`` consecutive sample indices. Sample
``i`` is a pure function of ``(weights, seed, counterfactuals, i)`` (``pycgn.sampler``), so a
shard's bytes depend only on the command and its index range: never on ``workers``,
``batch_size`` or ``engine``. Layout of ``out``::

    manifest.json                 what made the data and every finished shard (count, sha256)
    shard-00000.npz | .tar | /    npz arrays, webdataset tar (png + json), or a png folder

Faults: each shard is written under a temporary name (``.shard-00000.npz.XXXX.tmp``) and renamed
when complete, the manifest likewise; a rerun of the same command removes temporary leftovers,
checks finished shards (sha256) and makes only the missing ones, so a run killed at any moment
and rerun gives exactly the uninterrupted dataset. A different command on a used folder is
refused.

Memory stays flat in ``n``: the generator fills one of a few preallocated shard buffers while a
writer thread encodes and writes the previous one (the generator never waits on disk unless
the disk is slower than generation).
"""
from __future__ import annotations

import errno
import fcntl
import hashlib
import io
import json
import os
import queue
import re
import shlex
import shutil
import sys
import tarfile
import tempfile
import threading
import time
import zipfile
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch

from . import _checks
from ._io import atomic_path
from ._version import __version__

FORMATS = ("npz", "webdataset", "png")
ENGINES = ("local", "ray")
MANIFEST = "manifest.json"
KIND = "pycgn-synth"
FORMAT_VERSION = 1
LABELS = ("index", "shape", "texture", "bg")
INPUTS = ("u_shape", "u_texture", "u_bg", "fg_offset", "bg_offset")
CSV_COLUMNS = ("file", "index", "shape", "texture", "bg", "fg_offset_y", "fg_offset_x", "bg_offset_y",
               "bg_offset_x")
DEFAULT_BATCH = 256
# Some kernels take another code path for a batch of one (a GEMV instead of a GEMM) and differ in
# the last bit; smaller batches are padded so a sample's bits never depend on its batch.
MIN_BATCH = 8
_EXT = {"npz": ".npz", "webdataset": ".tar", "png": ""}
_TMP = re.compile(r"^\.(shard-\d+(\.npz|\.tar)?|manifest\.json)\..+\.tmp$")
_ZIP_TIME = (1980, 1, 1, 0, 0, 0)  # fixed member times: same data, same bytes


class SynthError(RuntimeError):
    """A run that could not finish (disk full, a worker died); finished shards stay valid."""


# ---------------------------------------------------------------------------------------------
# Plan: which indices go to which shard file

class Plan:
    def __init__(self, n: int, shard_size: int, fmt: str):
        self.n, self.shard_size, self.fmt = n, shard_size, fmt
        self.shards = -(-n // shard_size)
        self._width = max(5, len(str(max(self.shards - 1, 0))))
        self.key_width = max(9, len(str(max(n - 1, 0))))

    def range(self, i: int) -> tuple[int, int]:
        start = i * self.shard_size
        return start, min(self.shard_size, self.n - start)

    def name(self, i: int) -> str:
        return f"shard-{i:0{self._width}d}{_EXT[self.fmt]}"

    def key(self, index: int) -> str:
        return f"{index:0{self.key_width}d}"


# ---------------------------------------------------------------------------------------------
# Generation: one shard's arrays

class _Buffer:
    """Preallocated arrays for one shard; reused so memory stays flat."""

    def __init__(self, capacity: int, size: int, latent: int):
        self.capacity = capacity
        self.images = np.empty((capacity, size, size, 3), dtype=np.uint8)
        self.arrays = {name: np.empty(capacity, dtype=np.int64) for name in LABELS}
        for name in ("u_shape", "u_texture", "u_bg"):
            self.arrays[name] = np.empty((capacity, latent), dtype=np.float32)
        for name in ("fg_offset", "bg_offset"):
            self.arrays[name] = np.empty((capacity, 2), dtype=np.int64)

    def view(self, count: int) -> dict[str, np.ndarray]:
        out = {"images": self.images[:count]}
        out.update({k: v[:count] for k, v in self.arrays.items()})
        return out


def _pad(draw, m: int):
    from .sampler import Draw
    reps = -(-m // len(draw))
    return Draw(**{k: v.repeat(reps, *([1] * (v.dim() - 1)))[:m] for k, v in vars(draw).items()})


def _fill(gen, sampler, buf: _Buffer, start: int, count: int, batch_size: int, progress=None) -> None:
    """Generate samples start..start+count-1 into ``buf`` in batches; batches never cross shards."""
    for a in range(0, count, batch_size):
        b = min(a + batch_size, count)
        draw = sampler.draw(range(start + a, start + b))
        for name in LABELS + INPUTS:
            buf.arrays[name][a:b] = getattr(draw, name).numpy()
        if b - a < MIN_BATCH:
            images = gen.images(_pad(draw, MIN_BATCH))[: b - a]
            buf.images[a:b] = images.cpu().numpy()
        else:
            images = gen.images(draw, out=torch.from_numpy(buf.images[a:b]))
            if images.data_ptr() != buf.images[a:b].ctypes.data:  # a runtime that ignores ``out``
                buf.images[a:b] = images.cpu().numpy()
        if progress is not None:
            progress(b - a)


# ---------------------------------------------------------------------------------------------
# Encoding: one shard's arrays -> {relative file name: bytes} ("" is the shard file itself)

def _npz(arrays: dict, names) -> memoryview:
    """An uncompressed npz (``np.load`` reads it, ``SynthDataset`` memory-maps it) with fixed member
    times, so the same arrays give the same bytes. Arrays are written from their own memory: the
    shard exists once more in memory, not three times."""
    f = io.BytesIO()
    with zipfile.ZipFile(f, "w", compression=zipfile.ZIP_STORED, allowZip64=True) as zf:
        for name in names:
            arr = np.ascontiguousarray(arrays[name])
            info = zipfile.ZipInfo(f"{name}.npy", date_time=_ZIP_TIME)
            info.external_attr = 0o644 << 16
            with zf.open(info, "w", force_zip64=arr.nbytes > 1 << 30) as w:
                np.lib.format.write_array_header_1_0(w, np.lib.format.header_data_from_array_1_0(arr))
                w.write(memoryview(arr).cast("B"))
    return f.getbuffer()


def _png(img: np.ndarray) -> bytes:
    from PIL import Image
    f = io.BytesIO()
    Image.fromarray(img).save(f, format="PNG", compress_level=6)
    return f.getvalue()


def _sample_json(arrays: dict, j: int) -> bytes:
    rec = {name: int(arrays[name][j]) for name in LABELS}
    for name in ("u_shape", "u_texture", "u_bg"):
        rec[name] = [float(v) for v in arrays[name][j]]  # float32 -> float64 repr: exact round trip
    for name in ("fg_offset", "bg_offset"):
        rec[name] = [int(v) for v in arrays[name][j]]
    return json.dumps(rec, separators=(",", ":")).encode()


def _encode(fmt: str, arrays: dict, plan: Plan) -> dict:
    """{relative name: bytes-like}; ``""`` names the shard file itself (npz, tar)."""
    if fmt == "npz":
        return {"": _npz(arrays, ("images",) + LABELS + INPUTS)}
    index = arrays["index"]
    if fmt == "webdataset":
        f = io.BytesIO()
        with tarfile.open(fileobj=f, mode="w", format=tarfile.USTAR_FORMAT) as tf:
            for j in range(len(index)):
                key = plan.key(int(index[j]))
                for ext, data in (("png", _png(arrays["images"][j])), ("json", _sample_json(arrays, j))):
                    ti = tarfile.TarInfo(f"{key}.{ext}")
                    ti.size, ti.mtime, ti.mode = len(data), 0, 0o644
                    tf.addfile(ti, io.BytesIO(data))
        return {"": f.getbuffer()}
    files, rows = {}, [",".join(CSV_COLUMNS)]
    for j in range(len(index)):
        name = f"{plan.key(int(index[j]))}.png"
        files[name] = _png(arrays["images"][j])
        fo, bo = arrays["fg_offset"][j], arrays["bg_offset"][j]
        rows.append(",".join(map(str, (name, *(int(arrays[k][j]) for k in LABELS), *fo, *bo))))
    files["labels.csv"] = ("\n".join(rows) + "\n").encode()
    files["inputs.npz"] = _npz(arrays, ("index",) + INPUTS)
    return files


def files_sha256(files: dict) -> str:
    """sha256 of a shard: of its bytes for a file; for a folder, of its ``sha256sum`` listing."""
    if "" in files:
        return hashlib.sha256(files[""]).hexdigest()
    lines = "".join(f"{hashlib.sha256(files[k]).hexdigest()}  {k}\n" for k in sorted(files))
    return hashlib.sha256(lines.encode()).hexdigest()


def shard_sha256(path) -> str:
    """sha256 of a shard on disk, as recorded in the manifest (see ``files_sha256``)."""
    path = Path(path)
    if path.is_dir():
        lines = []
        for p in sorted(path.iterdir(), key=lambda p: p.name):
            lines.append(f"{_file_sha256(p)}  {p.name}\n")
        return hashlib.sha256("".join(lines).encode()).hexdigest()
    return _file_sha256(path)


def _file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 22):
            h.update(chunk)
    return h.hexdigest()


# ---------------------------------------------------------------------------------------------
# Writing: temporary name, then rename

def _umask() -> int:
    """The process umask, read once: os.umask can only be read by setting it, racing other threads."""
    global _UMASK
    if _UMASK is None:
        _UMASK = os.umask(0o022)
        os.umask(_UMASK)
    return _UMASK


_UMASK = None
# timings of the latest local run in this process, for benchmarks (not part of the data)
LAST_RUN: dict = {}


def _atomic_bytes(path: Path, data, mode: int) -> None:
    with atomic_path(path) as tmp:
        Path(tmp).write_bytes(data)
        os.chmod(tmp, mode)  # mkstemp makes 0600 files; a dataset is meant to be shared


def _fsync_write(path: Path, data: bytes) -> None:
    with open(path, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


def _store(out: Path, name: str, files: dict) -> str:
    """Write one shard atomically; returns its sha256. Disk errors become ``SynthError``."""
    final = out / name
    umask = _umask()
    try:
        if "" in files:
            _atomic_bytes(final, files[""], 0o666 & ~umask)
        else:
            if final.exists():
                _remove(final)
            tmp = Path(tempfile.mkdtemp(prefix=f".{name}.", suffix=".tmp", dir=out))
            try:
                for rel, data in files.items():
                    _fsync_write(tmp / rel, data)
                os.chmod(tmp, 0o777 & ~umask)
                os.rename(tmp, final)
            except BaseException:
                shutil.rmtree(tmp, ignore_errors=True)
                raise
    except OSError as e:
        why = "disk full" if e.errno in (errno.ENOSPC, errno.EDQUOT) else (e.strerror or str(e))
        raise SynthError(f"cannot write shard {final}: {why}; finished shards are kept, rerun the same "
                         f"command to resume") from e
    return files_sha256(files)


# ---------------------------------------------------------------------------------------------
# Checking finished shards on resume

def _check_shard(path: Path, fmt: str, start: int, count: int, plan: Plan) -> bool:
    """Whether a shard on disk (not yet in the manifest) is complete and holds start..start+count-1."""
    want = np.arange(start, start + count, dtype=np.int64)
    try:
        if fmt == "npz":
            with np.load(path, allow_pickle=False) as z:
                return (np.array_equal(z["index"], want) and z["images"].shape[0] == count
                        and all(z[k].shape[0] == count for k in LABELS + INPUTS))
        if fmt == "webdataset":
            with tarfile.open(path) as tf:
                names = tf.getnames()
            keys = [plan.key(int(i)) for i in want]
            return names == [f"{k}.{e}" for k in keys for e in ("png", "json")]
        names = {p.name for p in path.iterdir()}
        keys = {f"{plan.key(int(i))}.png" for i in want}
        if names != keys | {"labels.csv", "inputs.npz"}:
            return False
        with np.load(path / "inputs.npz", allow_pickle=False) as z:
            ok = np.array_equal(z["index"], want)
        rows = (path / "labels.csv").read_text().splitlines()
        return ok and len(rows) == count + 1
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile, tarfile.TarError):
        return False


def _remove(path: Path) -> None:
    """Delete a file or folder; a folder is first renamed to a temporary name, so a kill during the
    deletion never leaves half a shard under its final name."""
    if path.is_dir() and not path.is_symlink():
        if not _TMP.match(path.name):
            doomed = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
            os.rename(path, doomed / path.name)
            path = doomed
        shutil.rmtree(path)
    elif path.exists() or path.is_symlink():
        path.unlink()


# ---------------------------------------------------------------------------------------------
# The output folder: lock, manifest, resume

@contextmanager
def _locked(out: Path):
    """Exclusive lock on the folder itself (no lock file to leave behind)."""
    fd = os.open(out, os.O_RDONLY)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise SynthError(f"{out} is being written by another pycgn synth process") from None
        yield
    finally:
        os.close(fd)


def _prepare_out(out: Path) -> Path:
    if out.exists() and not out.is_dir():
        raise NotADirectoryError(f"out: {out} exists and is not a folder")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        if isinstance(e, (PermissionError, NotADirectoryError, FileNotFoundError)):
            raise type(e)(f"out: cannot create the folder {out}: {e.strerror}") from e
        raise PermissionError(f"out: cannot create the folder {out}: {e.strerror or e}") from e
    try:  # os.access lies for root and on some network file systems: try a real file
        fd, probe = tempfile.mkstemp(prefix=".manifest.json.", suffix=".tmp", dir=out)
        os.close(fd)
        os.unlink(probe)
    except OSError as e:
        raise PermissionError(f"out: the folder {out} is not writable: {e.strerror or e}") from e
    return out


# settings that fix the bytes of the data; the rest (workers, batch size, engine) do not
_IDENTITY = ("seed", "n", "counterfactuals", "format", "shard_size", "backend", "device")


def _read_manifest(out: Path) -> dict | None:
    path = out / MANIFEST
    if not path.exists():
        return None
    try:
        m = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise SynthError(f"{path} is not a readable manifest ({e}); move it away or use another --out") from e
    if not isinstance(m, dict) or m.get("kind") != KIND:
        raise ValueError(f"out: {out} holds a {MANIFEST} that pycgn synth did not write; use another folder")
    return m


def _differences(old: dict, new: dict) -> list[str]:
    diffs = []
    if old.get("model", {}).get("sha256") != new["model"]["sha256"]:
        diffs.append(f"model weights {old.get('model', {}).get('sha256', '?')[:12]}... there, "
                     f"{new['model']['sha256'][:12]}... here")
    for k in _IDENTITY:
        if old.get(k) != new[k]:
            diffs.append(f"{k} {old.get(k)!r} there, {new[k]!r} here")
    return diffs


def _write_manifest(out: Path, manifest: dict) -> None:
    manifest["shards"] = sorted(manifest["shards"], key=lambda s: s["start"])
    try:
        _atomic_bytes(out / MANIFEST, (json.dumps(manifest, indent=1) + "\n").encode(), 0o666 & ~_umask())
    except OSError as e:
        why = "disk full" if e.errno in (errno.ENOSPC, errno.EDQUOT) else (e.strerror or str(e))
        raise SynthError(f"cannot write {out / MANIFEST}: {why}; rerun the same command to resume") from e


# ---------------------------------------------------------------------------------------------
# Engines

def _threads_each(workers: int) -> int:
    return max(1, torch.get_num_threads() // workers)


def _run_local(gen, sampler, plan: Plan, todo, batch_size: int, out: Path, done, progress,
               pool: int = 2) -> None:
    """Generate shards ``todo`` in this process while a writer thread encodes and writes them.

    ``done(record)`` is called (from the writer thread) after each shard is renamed into place.
    At most ``pool`` shard buffers exist: memory is independent of ``n``.
    """
    size, latent = gen.model.image_size, gen.model.latent_dim
    free: queue.Queue = queue.Queue()
    for _ in range(pool):
        free.put(None)
    full: queue.Queue = queue.Queue()
    failure: list[BaseException] = []

    stats = {"generator_waited_s": 0.0, "writer_busy_s": 0.0}

    def writer():
        while True:
            item = full.get()
            if item is None:
                return
            sid, buf, start, count = item
            t = time.perf_counter()
            try:
                if not failure:
                    files = _encode(plan.fmt, buf.view(count), plan)
                    sha = _store(out, plan.name(sid), files)
                    del files
                    done({"name": plan.name(sid), "start": start, "count": count, "sha256": sha})
            except BaseException as e:  # noqa: BLE001 - handed to the generating thread
                failure.append(e)
            finally:
                stats["writer_busy_s"] += time.perf_counter() - t
                free.put(buf)

    thread = threading.Thread(target=writer, name="pycgn-synth-writer", daemon=True)
    thread.start()
    try:
        for sid in todo:
            start, count = plan.range(sid)
            t = time.perf_counter()
            buf = free.get()
            stats["generator_waited_s"] += time.perf_counter() - t
            if failure:
                break
            if buf is None or buf.capacity < count:
                buf = _Buffer(max(count, plan.shard_size if plan.n > plan.shard_size else count), size, latent)
            _fill(gen, sampler, buf, start, count, batch_size, progress)
            full.put((sid, buf, start, count))
    finally:
        full.put(None)
        thread.join()
        LAST_RUN.update(stats)
    if failure:
        raise failure[0]


def _worker_main(model, backend, device, seed, k, plan, batch_size, threads, tasks, results, out):
    """One process of ``workers > 1``: pulls shard ids, reports progress and finished shards."""
    try:
        torch.set_num_threads(threads)
        from .api import Generator
        gen = Generator(model, backend, device)
        sampler = gen.sampler(seed, counterfactuals=k)
        _run_local(gen, sampler, plan, iter(tasks.get, None), batch_size, out,
                   done=lambda rec: results.put(("done", rec)),
                   progress=lambda m: results.put(("progress", m)))
        results.put(("exit", None))
    except BaseException as e:  # noqa: BLE001 - reported to the parent in one line
        results.put(("error", f"{type(e).__name__}: {e}"))


def _run_processes(model, backend, device, seed, k, plan, todo, batch_size, workers, out, done, progress):
    import multiprocessing as mp
    ctx = mp.get_context("spawn")  # fork would copy torch's thread pools and locks
    tasks, results = ctx.Queue(), ctx.Queue()
    for sid in todo:
        tasks.put(sid)
    for _ in range(workers):
        tasks.put(None)
    threads = _threads_each(workers)
    procs = [ctx.Process(target=_worker_main, daemon=True,
                         args=(model, backend, device, seed, k, plan, batch_size, threads, tasks, results, out))
             for _ in range(workers)]
    for p in procs:
        p.start()
    live, error = len(procs), None
    try:
        while live:
            try:
                kind, value = results.get(timeout=1.0)
            except queue.Empty:
                if not any(p.is_alive() for p in procs) and results.empty():
                    error = error or "a worker process died"
                    break
                continue
            if kind == "progress":
                progress(value)
            elif kind == "done":
                done(value)
            elif kind == "exit":
                live -= 1
            else:
                error, live = value, live - 1
                break
    finally:
        if error:
            for p in procs:
                if p.is_alive():
                    p.terminate()
        for p in procs:
            p.join()
    if error:
        raise SynthError(f"worker failed: {error}")


class _RayWorker:
    """A Ray actor: one Generator, makes whole shards and returns their encoded files."""

    def __init__(self, model, backend, device, seed, k, plan, threads):
        torch.set_num_threads(threads)
        from .api import Generator
        self.gen = Generator(model, backend, device)
        self.sampler = self.gen.sampler(seed, counterfactuals=k)
        self.plan = plan
        m = self.gen.model
        self.buf = _Buffer(min(plan.shard_size, plan.n), m.image_size, m.latent_dim)

    def make(self, sid: int, batch_size: int):
        start, count = self.plan.range(sid)
        _fill(self.gen, self.sampler, self.buf, start, count, batch_size)
        files = _encode(self.plan.fmt, self.buf.view(count), self.plan)
        return sid, {k: bytes(v) for k, v in files.items()}


def _run_ray(model, backend, device, seed, k, plan, todo, batch_size, workers, address, out, done, progress):
    try:
        import ray
    except ImportError:
        raise ValueError("engine 'ray' needs Ray: pip install 'pycgn[ray]' (or use --engine local)") from None
    started = False
    if not ray.is_initialized():
        kw = dict(include_dashboard=False, log_to_driver=False, configure_logging=False)
        ray.init(address=address, **kw) if address else ray.init(**kw)
        started = True
    try:
        cpus = float(ray.cluster_resources().get("CPU", 1.0))
        actors = workers or max(1, int(cpus))
        # fractional CPUs: actors must fit beside the driver and other tasks, or they wait forever
        share = max(0.01, min(1.0, cpus / actors) * 0.5)
        threads = max(1, int(cpus // actors)) if workers else 1
        cls = ray.remote(num_cpus=share)(_RayWorker)
        model_ref = ray.put(model)
        pool = [cls.remote(model_ref, backend, device, seed, k, plan, threads) for _ in range(actors)]
        pending, todo = {}, list(todo)
        todo.reverse()
        for a in pool * 2:  # two shards in flight per actor: one generating, one returning
            if todo:
                pending[a.make.remote(todo.pop(), batch_size)] = a
        while pending:
            ready, _ = ray.wait(list(pending), num_returns=1)
            ref = ready[0]
            actor = pending.pop(ref)
            sid, files = ray.get(ref)
            if todo:
                pending[actor.make.remote(todo.pop(), batch_size)] = actor
            start, count = plan.range(sid)
            done({"name": plan.name(sid), "start": start, "count": count, "sha256": _store(out, plan.name(sid), files)})
            progress(count)
            del files
    finally:
        if started:
            ray.shutdown()


# ---------------------------------------------------------------------------------------------
# The entry point

def _progress_bar(total: int, initial: int, quiet: bool):
    from tqdm import tqdm
    return tqdm(total=total, initial=initial, unit="img", unit_scale=True, dynamic_ncols=True, smoothing=0.05,
                disable=quiet or not sys.stderr.isatty(), desc="pycgn synth")


def _canonical_command(model, n, out, k, fmt, shard_size, seed) -> str:
    src = model if isinstance(model, (str, os.PathLike)) else getattr(getattr(model, "info", None), "source", "")
    args = ["pycgn", "synth", "--model", os.fspath(src) or "<in-memory model>", "--n", str(n),
            "--counterfactuals", str(k), "--out", os.fspath(out), "--format", fmt, "--shard-size",
            str(shard_size), "--seed", str(seed)]
    return shlex.join(args)


def _pinned_generator(model, backend: str, device, batch_size: int):
    """A Generator whose backend is fixed for the whole dataset, and that backend's name.

    ``auto`` may choose another backend per batch-size class, and backends differ in the last
    bits, so ``auto`` is resolved once (for ``batch_size``) and recorded in the manifest.
    """
    from .api import Generator
    gen = Generator(model, backend, device)
    if backend != "auto" or gen.backend != "auto":
        return gen, gen.backend
    return gen, gen.pin(max(batch_size, MIN_BATCH))


def synth(model="colored_mnist", n: int = 10000, out="synth", counterfactuals: int = 1, format: str = "npz",
          shard_size: int = 10000, seed: int = 0, backend: str = "auto", device: str = "auto",
          batch_size: int | None = None, workers: int | None = None, engine: str = "local",
          ray_address: str | None = None, quiet: bool = False, command: str | None = None) -> dict:
    """Synthesize ``n`` counterfactual images with labels into the folder ``out``; returns the manifest.

    ``model``: shipped name, checkpoint path or ``MnistCGN``. ``counterfactuals`` K: sample ``i``
    shares its shape (mask) with the other samples of ``i // K`` and draws its own texture and
    background classes and latents. ``format``: ``npz`` (arrays ``images`` (N, H, W, 3) uint8,
    ``index``, ``shape``, ``texture``, ``bg`` int64 and the inputs ``u_shape``, ``u_texture``,
    ``u_bg``, ``fg_offset``, ``bg_offset``), ``webdataset`` (tar of ``KEY.png`` + ``KEY.json``)
    or ``png`` (a folder per shard: PNGs, ``labels.csv``, ``inputs.npz``). ``workers``: local
    processes (default 1, which overlaps generation and writing with a thread) or Ray actors.
    ``engine``: ``local`` or ``ray`` (an existing cluster at ``ray_address`` or a local one).
    Rerunning the same call resumes; a different call on a used folder raises ``ValueError``.
    """
    n = _checks.count("n", n)
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    k = _checks.count("counterfactuals", counterfactuals)
    if k < 1:
        raise ValueError(f"counterfactuals must be >= 1, got {k}")
    shard_size = _checks.count("shard_size", shard_size)
    if shard_size < 1:
        raise ValueError(f"shard_size must be >= 1, got {shard_size}")
    if format not in FORMATS:
        raise ValueError(f"format must be one of {', '.join(FORMATS)}, got {format!r}")
    if engine not in ENGINES:
        raise ValueError(f"engine must be one of {', '.join(ENGINES)}, got {engine!r}")
    batch_size = DEFAULT_BATCH if batch_size is None else _checks.count("batch_size", batch_size)
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if workers is not None:
        workers = _checks.count("workers", workers)
        if workers < 1:
            raise ValueError(f"workers must be >= 1, got {workers}")
    if not isinstance(out, (str, os.PathLike)):
        raise TypeError(f"out must be a folder path, got {type(out).__name__}")
    if ray_address is not None and engine != "ray":
        raise ValueError("ray_address only applies to engine 'ray'")
    from .sampler import Sampler
    Sampler(seed)  # checks the seed before any work

    t0 = time.perf_counter()
    _umask()  # read while only this thread runs
    out_path = _prepare_out(Path(out))
    with _locked(out_path):
        old = _read_manifest(out_path)
        if old is None:
            stray = [p.name for p in out_path.iterdir() if not _TMP.match(p.name)]
            if stray:
                raise ValueError(f"out: {out_path} is not empty ({stray[0]}, ...) and holds no pycgn synth "
                                 f"{MANIFEST}; use a new or empty folder")
        if old is not None and backend == "auto":
            backend = old.get("backend", "auto")  # resume with what made the first shards
        gen, backend_used = _pinned_generator(model, backend, device, batch_size)
        info = gen.info
        plan = Plan(n, shard_size, format)
        manifest = {
            "kind": KIND, "format_version": FORMAT_VERSION, "pycgn_version": __version__,
            "command": command or _canonical_command(model, n, out, k, format, shard_size, seed),
            "model": {"name": info.variant, "sha256": info.sha256},
            "seed": int(seed), "n": n, "counterfactuals": k, "format": format, "shard_size": shard_size,
            "backend": backend_used, "device": gen.device.type,
            "image_size": gen.model.image_size, "class_names": list(info.class_names),
            "arrays": {"images": "uint8 (N, H, W, 3)", **{name: "int64 (N,)" for name in LABELS},
                       "u_shape": "float32 (N, latent)", "u_texture": "float32 (N, latent)",
                       "u_bg": "float32 (N, latent)", "fg_offset": "int64 (N, 2) (dy, dx)",
                       "bg_offset": "int64 (N, 2) (dy, dx)"},
            "complete": False, "shards": [],
        }
        if old is not None:
            diffs = _differences(old, manifest)
            if diffs:
                raise ValueError(f"out: {out_path} holds a dataset made by a different command "
                                 f"({'; '.join(diffs)}); use another --out or delete it")
            manifest["command"] = old.get("command", manifest["command"])
        for p in out_path.iterdir():  # leftovers of a killed run
            if _TMP.match(p.name):
                _remove(p)

        recorded = {s["name"]: s for s in (old or {}).get("shards", [])}
        todo, finished = [], []
        for sid in range(plan.shards):
            name, (start, count) = plan.name(sid), plan.range(sid)
            path = out_path / name
            rec = recorded.get(name)
            if path.exists():
                if rec is not None and rec.get("count") == count and rec.get("start") == start \
                        and shard_sha256(path) == rec.get("sha256"):
                    finished.append(rec)
                    continue
                if rec is None and _check_shard(path, format, start, count, plan):
                    finished.append({"name": name, "start": start, "count": count, "sha256": shard_sha256(path)})
                    continue
                if not quiet:
                    print(f"pycgn synth: {name} does not match the manifest; making it again", file=sys.stderr)
                _remove(path)
            todo.append(sid)
        manifest["shards"] = list(finished)
        _write_manifest(out_path, manifest)

        lock = threading.Lock()
        resumed = sum(s["count"] for s in finished)
        bar = _progress_bar(n, resumed, quiet)

        def done(rec):
            with lock:
                manifest["shards"].append(rec)
                _write_manifest(out_path, manifest)

        def progress(m):
            bar.update(m)

        t1 = time.perf_counter()
        try:
            if not todo:
                pass
            elif engine == "ray":
                _run_ray(gen.model, backend_used, gen.device.type, seed, k, plan, todo, batch_size, workers,
                         ray_address, out_path, done, progress)
            elif (workers or 1) > 1:
                _run_processes(gen.model, backend_used, gen.device.type, seed, k, plan, todo, batch_size,
                               workers, out_path, done, progress)
            else:
                _run_local(gen, gen.sampler(seed, counterfactuals=k), plan, todo, batch_size, out_path,
                           done, progress)
        finally:
            bar.close()
        manifest["complete"] = True
        _write_manifest(out_path, manifest)
    made = n - resumed
    dt = time.perf_counter() - t1
    LAST_RUN.update(backend=backend_used, made=made, generate_s=dt, engine=engine, workers=workers or 1)
    if not quiet:
        rate = f", {made / dt:,.0f} img/s" if made and dt > 0 else ""
        print(f"pycgn synth: {n:,} images in {plan.shards} {format} shards -> {out_path} ({made:,} made, "
              f"{resumed:,} resumed) in {time.perf_counter() - t0:.1f} s{rate}; backend {backend_used}",
              file=sys.stderr)
    return manifest


# ---------------------------------------------------------------------------------------------
# Command line

def _cmd_synth(args) -> int:
    argv = ["pycgn"] + (sys.argv[1:] if sys.argv and sys.argv[1:2] == ["synth"] else [])
    try:
        synth(model=args.model, n=args.n, out=args.out, counterfactuals=args.counterfactuals,
              format=args.format, shard_size=args.shard_size, seed=args.seed, backend=args.backend,
              device=args.device, batch_size=args.batch_size, workers=args.workers, engine=args.engine,
              ray_address=args.ray_address, quiet=args.quiet,
              command=shlex.join(argv) if len(argv) > 1 else None)
    except SynthError as e:
        print(f"pycgn synth: error: {' '.join(str(e).split())}", file=sys.stderr)
        return 1
    return 0


def _one_line_error(parser):
    def error(message):
        print(f"{parser.prog}: error: {message} (see --help)", file=sys.stderr)
        sys.exit(2)
    return error


def register_cli(sub) -> None:
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
    p.add_argument("--backend", default="auto",
                   help=_checks.BACKEND_HELP + "; torch-bf16 is the fastest on AMX CPUs, its images within "
                                               "a few uint8 levels of float32")
    p.add_argument("--device", default="auto", help="auto, cpu or cuda (default: auto)")
    p.add_argument("--batch-size", type=int, default=None, help=f"images per forward (default: {DEFAULT_BATCH})")
    p.add_argument("--workers", type=int, default=None,
                   help="local processes or Ray actors (default: 1 local; one per CPU on Ray)")
    p.add_argument("--engine", default="local", choices=ENGINES, help="local or ray (default: local)")
    p.add_argument("--ray-address", default=None, help="address of an existing Ray cluster (default: start one)")
    p.add_argument("--quiet", action="store_true", help="no progress bar and no summary")
    p.error = _one_line_error(p)
    p.set_defaults(func=_cmd_synth)


def main(argv=None) -> int:
    from .cli import main as cli_main
    return cli_main(["synth", *(sys.argv[1:] if argv is None else argv)])


if __name__ == "__main__":
    sys.exit(main())
