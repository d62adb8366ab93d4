"""What pycgn keeps between runs: exports of each model's nets (per weights sha256 and format;
aoti packages also per precision, device architecture and torch version) and ``auto``'s backend
choices (per machine). ``pycgn cache`` lists and clears them.

The folder is ``$PYCGN_CACHE_DIR``, by default ``~/.cache/pycgn``. Everything in it is derived:
clearing it costs only the time to export and measure again."""
from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path


def cache_dir() -> Path:
    return Path(os.environ.get("PYCGN_CACHE_DIR") or Path.home() / ".cache" / "pycgn").expanduser()


@dataclass
class Entry:
    path: Path
    kind: str        # "export", "auto choices" or "other"
    size: int        # bytes
    detail: str      # what it is, in words


def _size(path: Path) -> int:
    if path.is_file():
        return path.stat().st_size
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file() and not p.is_symlink())


def entries(root: Path | None = None) -> list[Entry]:
    """Every item of the cache, exports first."""
    root = cache_dir() if root is None else Path(root)
    if not root.is_dir():
        return []
    out = []
    exports = root / "exports"
    for sha in sorted(exports.iterdir()) if exports.is_dir() else []:
        for d in sorted(sha.iterdir()) if sha.is_dir() else []:
            try:
                side = json.loads((d / "pycgn_export.json").read_text())
                detail = f"{side.get('variant', '?')} {side.get('runtime', '?')} export, weights {sha.name[:12]}"
                if side.get("runtime") == "aoti":  # native code: say for what it was compiled
                    detail += (f" ({side.get('precision', '?')}, {side.get('device', '?')} {side.get('arch', '?')}, "
                               f"torch {side.get('torch_version', '?')})")
            except (OSError, ValueError, AttributeError):
                detail = f"incomplete export, weights {sha.name[:12]}"
            out.append(Entry(d, "export", _size(d), detail))
    for f in sorted(root.glob("auto-*.json")):
        try:
            choice = json.loads(f.read_text())
            detail = ", ".join(f"batch <= {k}: {v}" for k, v in sorted(choice.items(), key=lambda kv: int(kv[0])))
        except (OSError, ValueError, AttributeError):
            detail = "unreadable"
        out.append(Entry(f, "auto choices", _size(f), detail or "none yet"))
    known = {e.path for e in out} | {exports}
    for p in sorted(root.iterdir()):
        if p not in known:
            out.append(Entry(p, "other", _size(p), ""))
    return out


def clear(root: Path | None = None) -> int:
    """Remove everything in the cache folder; returns the bytes freed."""
    root = cache_dir() if root is None else Path(root)
    freed = 0
    for e in entries(root):
        freed += e.size
        if e.path.is_dir() and not e.path.is_symlink():
            shutil.rmtree(e.path, ignore_errors=True)
        else:
            e.path.unlink(missing_ok=True)
    exports = root / "exports"
    if exports.is_dir():
        shutil.rmtree(exports, ignore_errors=True)
    return freed
