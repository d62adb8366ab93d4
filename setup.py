"""Builds pycgn and its extension pycgn._C with torch.utils.cpp_extension.

CPU sources (csrc/**/*.cpp) are always compiled; CUDA sources (csrc/**/*.cu) when torch is a
CUDA build and nvcc is found, or always with FORCE_CUDA=1 (which fails loudly if it cannot).
The extensions are optional unless PYCGN_STRICT_BUILD=1 or FORCE_CUDA=1: pycgn falls back to its
plain-PyTorch path without _C, and pycgn.Pipeline is missing without _pipeline (a warning says why).
_pipeline's JSON header comes from the pip package nlohmann-json (pinned in pyproject.toml's build
requirements and the README's install line), else from the system (Debian: nlohmann-json3-dev).
"""
import glob
import os
import re

from setuptools import find_packages, setup

import torch
from torch.utils.cpp_extension import CUDA_HOME, BuildExtension, CppExtension, CUDAExtension

HERE = os.path.dirname(os.path.abspath(__file__))


def _version():
    text = open(os.path.join(HERE, "pycgn", "_version.py")).read()
    return re.search(r'__version__ = "([^"]+)"', text).group(1)


def _sources(pattern):
    # Filter on the path inside the checkout: the checkout's own folder may be named tests or cpp.
    rel = (os.path.relpath(p, HERE) for p in glob.glob(os.path.join(HERE, "csrc", "**", pattern), recursive=True))
    return sorted(p for p in rel if f"{os.sep}tests{os.sep}" not in p and f"{os.sep}cpp{os.sep}" not in p)


def extensions():
    force = os.environ.get("FORCE_CUDA", "0") == "1"
    strict = force or os.environ.get("PYCGN_STRICT_BUILD", "0") == "1"
    cuda = torch.version.cuda is not None and CUDA_HOME is not None
    if force and not cuda:
        raise RuntimeError(
            f"FORCE_CUDA=1 but CUDA cannot be built: torch {torch.__version__} is "
            f"{'a CUDA build' if torch.version.cuda else 'a CPU-only build'}, CUDA_HOME={CUDA_HOME}")
    # -lstdc++ ahead of what the compiler driver adds: a g++ that links libstdc++ statically by
    # default (the lent H200's /opt/gcc/bin/g++ wrapper does) would give the module its own,
    # uninitialised copy of the C++ runtime beside torch's, and formatting an error message
    # crashed there (tests/test_ext_runtime.py). Linked first, the shared one provides every symbol.
    link = ["-fopenmp", "-lstdc++"]
    # -ffp-contract=off: the blend keeps eager PyTorch's bits (no fused multiply-add)
    cxx = ["-O3", "-std=c++17", "-fvisibility=hidden", "-ffp-contract=off", "-fopenmp"]
    # PYCGN_STATIC: the core is compiled into _C, so its PYCGN_API symbols stay hidden there too.
    macros = [("Py_LIMITED_API", "0x030A0000"), ("PYCGN_STATIC", "1")]
    common = dict(include_dirs=[os.path.join(HERE, "include")], define_macros=macros,
                  py_limited_api=True, extra_link_args=link, optional=not strict)
    if cuda:
        macros.append(("PYCGN_WITH_CUDA", "1"))
        exts = [CUDAExtension("pycgn._C", _sources("*.cpp") + _sources("*.cu"),
                              extra_compile_args={"cxx": cxx, "nvcc": ["-O3", "-std=c++17", "-lineinfo"]},
                              **common)]
    else:
        exts = [CppExtension("pycgn._C", _sources("*.cpp"), extra_compile_args={"cxx": cxx}, **common)]
    if PIPELINE:
        exts.append(pipeline_extension(cxx, link, strict))
    return exts


def _json_include():
    """The folder holding nlohmann/json.hpp from the pip package, or None (then the compiler's
    default paths: a system package)."""
    try:
        import nlohmann_json
    except ImportError:
        return None
    inc = os.path.join(os.path.dirname(nlohmann_json.__file__), "include")
    return inc if os.path.isfile(os.path.join(inc, "nlohmann", "json.hpp")) else None


# pycgn._pipeline: pybind11 bindings of the C++ pipeline (pycgn.Pipeline). pybind11 needs the full
# Python API, so with it the wheel is not abi3; PYCGN_BUILD_PIPELINE=0 leaves it out.
PIPELINE = os.environ.get("PYCGN_BUILD_PIPELINE", "1") != "0"


def pipeline_extension(cxx, link, strict):
    """The whole C++ path in one module: pipeline, sidecar, sampler and the CPU compositing core
    (the CUDA compositing path is CMake's: here generate() composites on the CPU)."""
    sources = ["cpp/python/pipeline_module.cpp", "cpp/pipeline.cpp", "cpp/sidecar.cpp", "cpp/sampler.cpp",
               "csrc/cpu/composite_cpu.cpp"]
    macros = [("PYCGN_STATIC", "1"), ("PYCGN_PIPELINE_CUDA", "0"), ("PYCGN_VERSION", f'"{_version()}"')]
    include = [os.path.join(HERE, d) for d in ("include", "csrc", "cpp")] + [d for d in [_json_include()] if d]
    return CppExtension("pycgn._pipeline", sources, include_dirs=include, define_macros=macros,
                        extra_compile_args={"cxx": [*cxx, "-fno-fast-math"]}, extra_link_args=link,
                        optional=not strict)


class Build(BuildExtension):
    """BuildExtension that honours ``optional``: torch's ninja build raises RuntimeError, which
    setuptools' own optional handling does not catch, so an optional extension that failed to
    compile (a missing header) stopped the whole install."""

    def build_extension(self, ext):
        try:
            super().build_extension(ext)
        except (RuntimeError, OSError) as e:
            if not ext.optional:
                raise
            self.warn(f"building optional extension {ext.name} failed, pycgn installs without it: {e}")


setup(
    version=_version(),
    packages=find_packages(include=["pycgn", "pycgn.*"]),
    package_data={"pycgn": ["weights/*.pt", "weights/*.md", "weights/*.json", "models/*.txt", "explore.html"]},
    ext_modules=extensions(),
    cmdclass={"build_ext": Build.with_options(no_python_abi_suffix=True)},
    options={} if PIPELINE else {"bdist_wheel": {"py_limited_api": "cp310"}},
)
