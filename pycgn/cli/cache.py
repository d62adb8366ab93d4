"""``pycgn cache``: list or clear what pycgn keeps between runs."""
from __future__ import annotations

from ..cache import cache_dir, clear, entries


def register(sub) -> None:
    p = sub.add_parser("cache", help="list or clear the cached exports and backend choices",
                       description="pycgn caches each model's exported nets and backend auto's timing "
                                   "choices in $PYCGN_CACHE_DIR (default ~/.cache/pycgn). Everything there is "
                                   "derived: clearing costs only the time to export and measure again.")
    p.add_argument("--clear", action="store_true", help="remove everything in the cache folder")
    p.set_defaults(func=_cmd_cache)


def _human(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024


def _cmd_cache(args) -> int:
    root = cache_dir()
    if args.clear:
        freed = clear(root)
        print(f"cleared {root}: {_human(freed)} freed")
        return 0
    items = entries(root)
    total = sum(e.size for e in items)
    print(f"{root}: {len(items)} {'entry' if len(items) == 1 else 'entries'}, {_human(total)}")
    for e in items:
        print(f"  {_human(e.size):>10}  {e.kind:<12}  {e.path.name:<16}  {e.detail}")
    return 0
