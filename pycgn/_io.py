"""Atomic file writes: a reader never sees a half-written file or folder under its final name."""
from __future__ import annotations

import os
import shutil
import stat
import tempfile
from contextlib import contextmanager
from pathlib import Path


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


_UMASK = _umask()  # read once: os.umask is process-wide, so reading it later would race other threads


def check_replaceable(path, what: str = "output") -> Path:
    """``path`` as a Path, if pycgn may put a file there: nothing is there yet, or a regular file
    the user may write (what ``open(path, "w")`` would allow, with the permission bits honoured
    even for root). A device, FIFO, socket or folder is never replaced: renaming over
    ``/dev/null`` would replace the system's node with a file."""
    path = Path(path)
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return path
    except OSError as e:
        raise OSError(f"{what} {path}: cannot be checked ({e.strerror or e})") from None
    if stat.S_ISDIR(st.st_mode):
        raise IsADirectoryError(f"{what} {path} is a directory; give a file name such as {path / 'out.png'}")
    if not stat.S_ISREG(st.st_mode):
        raise PermissionError(f"{what} {path} is not a regular file (a device, FIFO or socket); "
                              f"pycgn writes only regular files")
    if not st.st_mode & 0o222 or not os.access(path, os.W_OK):
        raise PermissionError(f"{what} {path} is read-only; pycgn does not replace it")
    return path


@contextmanager
def atomic_path(path):
    """Yield a temporary path beside ``path``; rename it over ``path`` only if the block succeeds.
    Only a regular, writable file is ever replaced (``check_replaceable``, before and after)."""
    path = check_replaceable(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent or ".")
    os.close(fd)
    os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp makes 0600; a finished file gets the usual mode
    try:
        yield Path(tmp)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        check_replaceable(path)  # again: something may have appeared there meanwhile
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise


def atomic_write_bytes(path, data: bytes) -> None:
    with atomic_path(path) as tmp:
        Path(tmp).write_bytes(data)


@contextmanager
def atomic_folder(path):
    """Yield a temporary folder beside ``path`` (which must not exist); once the block succeeds,
    its files are synced and it is renamed to ``path``. On failure it is deleted."""
    path = Path(path)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent or "."))
    try:
        yield tmp
        for p in tmp.iterdir():
            fd = os.open(p, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        os.chmod(tmp, 0o777 & ~_UMASK)  # mkdtemp makes 0700; a finished folder gets the usual mode
        os.rename(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
