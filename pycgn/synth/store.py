"""The output folder of ``pycgn synth``: its lock, its manifest, its shards, and resuming.

Every shard and every manifest is written under a temporary name (``.shard-00000.npz.XXXX.tmp``)
and renamed when complete (``pycgn._io``); a rerun removes temporary leftovers, keeps the
finished shards that check out and lists the shards still to make.
"""
from __future__ import annotations

import errno
import fcntl
import json
import os
import re
import shutil
import sys
import tempfile
from contextlib import contextmanager
from pathlib import Path

from .. import _checks, _io
from .format import KIND, MANIFEST, Plan, files_sha256, shard_sha256

_TMP = re.compile(r"^\.(shard-\d+(\.npz|\.tar)?|manifest\.json)\..+\.tmp$")
# settings that fix the bytes of the data; the rest (workers, batch size, engine) do not
IDENTITY = ("seed", "n", "counterfactuals", "format", "shard_size", "backend", "precision", "device", "design")


class SynthError(RuntimeError):
    """A run that could not finish (disk full, a worker died); finished shards stay valid."""


def _why(e: OSError) -> str:
    return "disk full" if e.errno in (errno.ENOSPC, errno.EDQUOT) else (e.strerror or str(e))


def store_shard(out: Path, name: str, files: dict) -> str:
    """Write one shard atomically; returns its sha256. Disk errors become ``SynthError``."""
    final = out / name
    try:
        if "" in files:
            _io.atomic_write_bytes(final, files[""])
        else:
            if final.exists():
                remove(final)
            with _io.atomic_folder(final) as tmp:
                for rel, data in files.items():
                    (tmp / rel).write_bytes(data)
    except OSError as e:
        raise SynthError(f"cannot write shard {final}: {_why(e)}; finished shards are kept, rerun the same "
                         f"command to resume") from e
    return files_sha256(files)


def remove(path: Path) -> None:
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


@contextmanager
def locked(out: Path):
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


def prepare_out(out: Path) -> Path:
    """Create the folder ``out`` if needed and check that files can be written in it."""
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


def read_manifest(out: Path) -> dict | None:
    """The manifest in ``out``, or None if there is none; refuses one pycgn synth did not write."""
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


def check_unused(out: Path) -> None:
    """Refuse a folder that holds other files and no manifest: it is not taken over."""
    stray = [p.name for p in out.iterdir() if not _TMP.match(p.name)]
    if stray:
        raise ValueError(f"out: {out} is not empty ({stray[0]}, ...) and holds no pycgn synth "
                         f"{MANIFEST}; use a new or empty folder")


def differences(old: dict, new: dict) -> list[str]:
    """How the settings of the manifest ``old`` differ from ``new`` in what fixes the data."""
    diffs = []
    if old.get("model", {}).get("sha256") != new["model"]["sha256"]:
        diffs.append(f"model weights {old.get('model', {}).get('sha256', '?')[:12]}... there, "
                     f"{new['model']['sha256'][:12]}... here")
    old = dict(old)
    old.setdefault("precision", "float32")  # before pycgn recorded it, data was made in float32...
    old["backend"], old["precision"] = _checks.backend_alias(old.get("backend"), old["precision"])  # torch-bf16
    for k in IDENTITY:
        if old.get(k) != new.get(k):  # design: absent without one
            diffs.append(f"{k} {old.get(k)!r} there, {new.get(k)!r} here")
    return diffs


def write_manifest(out: Path, manifest: dict) -> None:
    manifest["shards"] = sorted(manifest["shards"], key=lambda s: s["start"])
    try:
        _io.atomic_write_bytes(out / MANIFEST, (json.dumps(manifest, indent=1) + "\n").encode())
    except OSError as e:
        raise SynthError(f"cannot write {out / MANIFEST}: {_why(e)}; rerun the same command to resume") from e


def clear_leftovers(out: Path) -> None:
    """Remove the temporary files and folders of a killed run."""
    for p in out.iterdir():
        if _TMP.match(p.name):
            remove(p)


def resume(out: Path, plan: Plan, old: dict | None, quiet: bool) -> tuple[list[int], list[dict]]:
    """(shard ids still to make, records of the finished shards kept). Only a shard whose sha256 is
    the manifest's is kept: one the manifest does not list (a run killed between the shard's rename
    and the manifest's) may have been changed since, and its structure cannot tell; it is made again."""
    recorded = {s["name"]: s for s in (old or {}).get("shards", [])}
    todo, finished = [], []
    for sid in range(plan.shards):
        name, (start, count) = plan.name(sid), plan.range(sid)
        path = out / name
        rec = recorded.get(name)
        if path.exists() or path.is_symlink():
            if rec is not None and rec.get("count") == count and rec.get("start") == start \
                    and _sha256_or_none(path) == rec.get("sha256"):
                finished.append(rec)
                continue
            if not quiet:
                why = "is not in the manifest" if rec is None else "does not match the manifest"
                print(f"pycgn synth: {name} {why}; making it again", file=sys.stderr)
            remove(path)
        todo.append(sid)
    return todo, finished


def _sha256_or_none(path: Path) -> str | None:
    try:
        return shard_sha256(path)
    except OSError:  # unreadable, or a link (not followed): not the shard the manifest lists
        return None
