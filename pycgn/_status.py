"""One-line status messages on stderr for work that makes a caller wait (an export, timing the
backends, a compile), so that no step is silent for more than about a second.

Silenced by ``PYCGN_QUIET=1`` or ``quiet(True)`` (the CLI's ``--quiet``)."""
from __future__ import annotations

import os
import sys

_quiet = False


def quiet(on: bool = True) -> None:
    global _quiet
    _quiet = bool(on)


def say(message: str) -> None:
    if _quiet or os.environ.get("PYCGN_QUIET", "") not in ("", "0"):
        return
    print(f"pycgn: {message}", file=sys.stderr, flush=True)
