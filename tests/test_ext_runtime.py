"""pycgn's compiled modules use the process's C++ runtime (libstdc++.so.6), never a copy of their own.

The lent H200's compiler (/opt/gcc/bin/g++, a wrapper) links libstdc++ statically by default. A
module built with it carries a second, uninitialised C++ runtime beside torch's: formatting an
argument error's message (c10::str, an ostringstream) segfaulted there, on CPU and CUDA alike, and
cuts the message short after "[" with this machine's g++ 12. setup.py links -lstdc++ ahead of the
driver's static copy. The errors run in a child process, so a crash fails a test instead of pytest.
"""
import importlib.util
import os
import shutil
import subprocess
import sys

import pytest
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PROBE = """
import sys, torch, pycgn
dev = sys.argv[1]
m = torch.rand(1, 1, 4, 4, device=dev); f = torch.rand(1, 3, 4, 4, device=dev)
print(pycgn.__file__, pycgn._ext.AVAILABLE)
try:
    pycgn.composite(m, f, f, out_dtype="uint8", layout="NHWC", out=torch.empty(1, dtype=torch.uint8, device=dev))
except ValueError as e:
    print(str(e).splitlines()[0])
"""
EXPECTED = "composite: out must have shape [1, 4, 4, 3], got [1]"
DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


def _probe(device, cwd=ROOT, env=None):
    r = subprocess.run([sys.executable, "-c", PROBE, device], cwd=cwd, env=env, capture_output=True, text=True,
                       timeout=300)
    assert r.returncode == 0, f"exit {r.returncode} (a negative one is a signal): {r.stderr[-3000:]}"
    lines = r.stdout.splitlines()
    assert len(lines) == 2, r.stdout
    return lines


def _assert_shared_runtime(path):
    """tools/shared_cxx_runtime.sh: the rule's one statement (cpp_check.sh and gpu_check.sh use it too)."""
    if not (shutil.which("readelf") and shutil.which("nm")):
        pytest.skip("binutils (readelf, nm) not installed: cannot read the modules' ELF tables")
    r = subprocess.run([os.path.join(ROOT, "tools", "shared_cxx_runtime.sh"), path], capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr


@pytest.mark.parametrize("device", DEVICES)
def test_argument_error_is_raised_whole(device):
    where, msg = _probe(device)
    assert where == f"{os.path.join(ROOT, 'pycgn', '__init__.py')} True", where  # this checkout's extension
    assert msg == EXPECTED


@pytest.mark.parametrize("module", ["pycgn._C", "pycgn._pipeline"])
def test_modules_load_the_shared_cxx_runtime(module):
    import pycgn  # noqa: F401  (finds the modules inside this checkout's package)

    spec = importlib.util.find_spec(module)
    if spec is None:
        if module == "pycgn._C":
            pytest.fail("pycgn._C is not built (see test_fallback.py::test_extension_is_built_here)")
        pytest.skip("pycgn._pipeline is not built here (PYCGN_BUILD_PIPELINE=0 or no nlohmann-json)")
    _assert_shared_runtime(spec.origin)


@pytest.mark.slow
def test_built_by_a_compiler_that_links_libstdcxx_statically(tmp_path):
    """The lent machine's case on this one: g++ told to link libstdc++ statically (LDFLAGS, which
    setuptools puts on the link line as the wrapper does) still gives a module on the shared one."""
    if not shutil.which("g++"):
        pytest.skip("no g++ on PATH: setup.py's build needs one")
    copy = tmp_path / "src"
    copy.mkdir()
    skip = shutil.ignore_patterns("*.so", "__pycache__", "weights", "*.onnx", "*.pt2")
    for name in ("setup.py", "pyproject.toml", "README.md", "LICENSE"):
        if os.path.exists(os.path.join(ROOT, name)):
            shutil.copy(os.path.join(ROOT, name), copy / name)
    for name in ("csrc", "include", "pycgn"):
        shutil.copytree(os.path.join(ROOT, name), copy / name, ignore=skip)
    env = dict(os.environ, LDFLAGS="-static-libstdc++", PYCGN_BUILD_PIPELINE="0", PYCGN_STRICT_BUILD="1",
               FORCE_CUDA="0", MAX_JOBS=os.environ.get("MAX_JOBS", "2"), PYTHONPATH=str(copy))
    env.pop("CXX", None)  # the g++ above, which takes -static-libstdc++
    b = subprocess.run([sys.executable, "setup.py", "build_ext", "--inplace"], cwd=copy, env=env,
                       capture_output=True, text=True, timeout=900)
    assert b.returncode == 0, b.stdout[-3000:] + b.stderr[-3000:]
    assert "-static-libstdc++" in b.stdout + b.stderr, "LDFLAGS did not reach the link line: the test tests nothing"
    (built,) = [p for p in (copy / "pycgn").iterdir() if p.name.startswith("_C") and p.suffix == ".so"]
    _assert_shared_runtime(str(built))
    where, msg = _probe("cpu", cwd=copy, env=env)
    assert where == f"{copy / 'pycgn' / '__init__.py'} True", where
    assert msg == EXPECTED
