"""Without its compiled extension, pycgn still imports, warns once and gives the same images."""
import subprocess
import sys
import textwrap

import pytest

from conftest import published


def test_import_without_extension_warns_once_and_generates():
    path = published("colored_mnist")
    code = textwrap.dedent(f"""
        import sys, warnings
        sys.modules["pycgn._C"] = None  # makes `from . import _C` fail as if it was never built
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            import pycgn
            import pycgn.api, pycgn.reference
        ours = [w for w in caught if "pycgn._C" in str(w.message)]
        assert len(ours) == 1, [str(w.message) for w in caught]
        assert not pycgn._ext.AVAILABLE and not pycgn._ext.has_cpu_kernels()
        img = pycgn.generate(shape=3, texture=7, bg=1, n=4, seed=0, model=r"{path}", backend="torch")
        import numpy as np
        np.save(sys.argv[1], img)
    """)
    import tempfile, numpy as np, pycgn
    with tempfile.TemporaryDirectory() as d:
        out = f"{d}/img.npy"
        r = subprocess.run([sys.executable, "-c", code, out], capture_output=True, text=True, timeout=300)
        assert r.returncode == 0, r.stderr
        fallback = np.load(out)
    fast = pycgn.generate(shape=3, texture=7, bg=1, n=4, seed=0, model=path, backend="torch")
    assert fallback.shape == (4, 32, 32, 3)
    assert np.array_equal(fallback, fast)  # bit for bit, as pycgn.ops promises


def test_extension_is_built_here():
    import pycgn
    if not pycgn._ext.AVAILABLE:
        pytest.fail(f"pycgn._C did not load: {pycgn._ext.ERROR}")
