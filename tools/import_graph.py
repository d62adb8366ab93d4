#!/usr/bin/env python3
"""pycgn's import graph: every import between pycgn modules (top-level and inside functions),
checked for circles and for imports that break the layering.

    python tools/import_graph.py            # prints the graph's edges; exit 1 on a violation
    python tools/import_graph.py --check    # prints only violations

Implicit imports of parent packages (``import pycgn.a.b`` runs ``pycgn/__init__``) are not edges:
they are how Python loads packages, not a dependency a module chose.
"""
from __future__ import annotations

import argparse
import ast
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1] / "pycgn"
COMPILED = {"pycgn._C", "pycgn._pipeline"}  # the extensions: leaves written in C++

# module prefix -> modules it must never import (the layering of docs/ARCHITECTURE.md)
FORBIDDEN = {
    "pycgn.models": ("pycgn.api", "pycgn.runtime", "pycgn.export", "pycgn.synth", "pycgn.sheets", "pycgn.cli",
                     "pycgn.checkpoint", "pycgn.train", "pycgn.evaluate", "pycgn.data"),
    "pycgn.sampler": ("pycgn.models", "pycgn.api", "pycgn.runtime", "pycgn.export", "pycgn.synth"),
    "pycgn.reference": ("pycgn.ops", "pycgn.api", "pycgn.runtime", "pycgn.models"),
    "pycgn.data": ("pycgn.api", "pycgn.runtime", "pycgn.export", "pycgn.sheets", "pycgn.cli", "pycgn.train"),
}


def modules(root: Path = ROOT) -> dict[str, Path]:
    out = {}
    for p in sorted(root.rglob("*.py")):
        parts = list(p.relative_to(root.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        out[".".join(parts)] = p
    return out


def _target(name: str, known: dict) -> str | None:
    while name and name not in known:  # pycgn.api.Generator -> pycgn.api
        name = name.rpartition(".")[0]
    return name or None


def edges(known: dict[str, Path]) -> set[tuple[str, str]]:
    found = set()
    for mod, path in known.items():
        package = mod if path.name == "__init__.py" else mod.rpartition(".")[0]
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    anchor = package.split(".")[:len(package.split(".")) - (node.level - 1)]
                    base = ".".join(anchor + ([base] if base else []))
                # "from pkg import sub" imports the submodule pkg.sub when there is one
                names = [f"{base}.{a.name}" if f"{base}.{a.name}" in known else base for a in node.names
                         if f"{base}.{a.name}" not in COMPILED]
            for name in names:
                t = _target(name, known)
                if t and t != mod and t.startswith("pycgn"):
                    found.add((mod, t))
    return found


def cycles(graph: set[tuple[str, str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    adj: dict[str, list[str]] = {}
    for a, b in graph:
        adj.setdefault(a, []).append(b)
        adj.setdefault(b, [])
    index, low, stack, on, out = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in adj[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    sys.setrecursionlimit(10000)
    for v in sorted(adj):
        if v not in index:
            visit(v)
    return out


def violations(graph: set[tuple[str, str]]) -> list[str]:
    found = [f"import circle: {' <-> '.join(c)}" for c in cycles(graph)]
    for a, b in sorted(graph):
        for prefix, banned in FORBIDDEN.items():
            if (a == prefix or a.startswith(prefix + ".")) and any(b == x or b.startswith(x + ".") for x in banned):
                found.append(f"{a} imports {b}, which {prefix} must not depend on")
    return found


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--check", action="store_true", help="print only violations")
    args = ap.parse_args(argv)
    graph = edges(modules())
    if not args.check:
        for a, b in sorted(graph):
            print(f"{a} -> {b}")
    bad = violations(graph)
    for line in bad:
        print(line, file=sys.stderr)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
