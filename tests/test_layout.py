"""The package's structure: no import circle, the layering of docs/ARCHITECTURE.md, module sizes."""
import importlib.util
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
spec = importlib.util.spec_from_file_location("import_graph", ROOT / "tools" / "import_graph.py")
import_graph = importlib.util.module_from_spec(spec)
spec.loader.exec_module(import_graph)

MAX_LINES = 450


def test_no_import_circle_and_layers_hold():
    graph = import_graph.edges(import_graph.modules())
    assert ("pycgn.export", "pycgn.models") in graph, "the graph misses plain imports"
    assert ("pycgn.checkpoint", "pycgn.models.imagenet") in graph, "the graph misses imports inside functions"
    assert import_graph.violations(graph) == []


def test_checker_finds_a_circle_and_a_layer_break():
    graph = {("pycgn.a", "pycgn.b"), ("pycgn.b", "pycgn.c"), ("pycgn.c", "pycgn.a"),
             ("pycgn.models.mnist", "pycgn.export")}
    found = import_graph.violations(graph)
    assert any("pycgn.a <-> pycgn.b <-> pycgn.c" in v for v in found), found
    assert any("pycgn.models.mnist imports pycgn.export" in v for v in found), found


def test_long_modules_say_why():
    long = {p: n for p in import_graph.modules().values()
            if (n := len(p.read_text().splitlines())) > MAX_LINES}
    unexplained = [f"{p.relative_to(ROOT)} ({n} lines)" for p, n in long.items()
                   if "Why one module" not in p.read_text().split('"""')[1]]
    assert unexplained == [], "modules over 450 lines need a 'Why one module' note in their docstring"


def _env_reads(text: str) -> set[str]:
    """PYCGN_* names read from the environment in Python or C++ source text."""
    reads = r"""(?:environ(?:\.get)?\s*[\[(]|getenv\s*\(|_ENV\s*=)\s*["'](PYCGN_\w+)["']"""
    return set(re.findall(reads, text))


def test_every_environment_variable_read_is_in_the_readme():
    sources = [ROOT / "setup.py"] + [p for d in ("pycgn", "csrc", "cpp", "include") for p in (ROOT / d).rglob("*")
                                     if p.suffix in {".py", ".cpp", ".h", ".cu"}]
    names = set().union(*(_env_reads(p.read_text()) for p in sources))
    assert {"PYCGN_CACHE_DIR", "PYCGN_CPU_PREFETCH", "PYCGN_STRICT_BUILD"} <= names, "the scan misses reads"
    readme = (ROOT / "README.md").read_text()
    assert sorted(n for n in names if f"`{n}" not in readme) == []


def test_environment_scan_finds_each_form():
    text = ('os.environ.get("PYCGN_A", "")\nos.environ["PYCGN_B"]\nstd::getenv("PYCGN_C")\n'
            'X_ENV = "PYCGN_D"\n("PYCGN_STATIC", "1")  # a macro, not a read\n')
    assert _env_reads(text) == {"PYCGN_A", "PYCGN_B", "PYCGN_C", "PYCGN_D"}
