import os
from pathlib import Path

import pytest
import torch

# Status lines ("pycgn: exporting ...") are for people at a terminal; tests that check them unset this.
os.environ.setdefault("PYCGN_QUIET", "1")

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "reference" / "cgn_mnist_official"
VARIANTS = ("colored_mnist", "double_colored_mnist", "wildlife_mnist")


def published(variant: str) -> Path:
    """Path of a published checkpoint; skips the test where ../shared is absent (a user's machine)."""
    p = SHARED / f"{variant}.pth"
    if not p.is_file():
        pytest.skip(f"published checkpoint {p} is absent (../shared is only on pycgn developer and CI machines)")
    return p


def random_mnist(seed: int = 1234):
    """An MnistCGN with random, non-trivial weights and running statistics (eval mode)."""
    from pycgn.models import MnistCGN
    g = torch.Generator().manual_seed(seed)
    m = MnistCGN()
    with torch.no_grad():
        for name, t in m.state_dict().items():
            if t.is_floating_point():
                t.copy_(torch.rand(t.shape, generator=g) + 0.5 if name.endswith("running_var")
                        else torch.randn(t.shape, generator=g) * 0.2)
    return m.eval()


def _cuda_param():
    if not torch.cuda.is_available():
        return pytest.param("cuda", marks=pytest.mark.skip(reason="no CUDA device"))
    return "cuda"


DEVICES = ("cpu", _cuda_param())


@pytest.fixture(params=DEVICES)
def device(request):
    """Every test that takes `device` runs on the CPU and on CUDA (skipped, saying so, without
    a GPU): the same assertions on each device, as in torchvision's ops tests."""
    return torch.device(request.param)


@pytest.fixture
def random_model():
    return random_mnist(1234)


@pytest.fixture(autouse=True)
def _cache_dir(tmp_path_factory, monkeypatch):
    # exported-model caches of the runtime never touch the user's home in tests
    monkeypatch.setenv("PYCGN_CACHE_DIR", str(tmp_path_factory.getbasetemp() / "pycgn-cache"))
    yield


def pytest_report_header(config):
    import pycgn
    return f"pycgn {pycgn.__version__}, extension loaded: {pycgn._ext.AVAILABLE}, torch {torch.__version__}, threads {torch.get_num_threads()}, cpus {os.cpu_count()}"
