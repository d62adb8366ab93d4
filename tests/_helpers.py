"""Inputs and the oracle shared by the compositing tests (test_composite*, test_cuda)."""
import torch

from pycgn import reference


def make(n, mc, c, h, w, hf=None, wf=None, hb=None, wb=None, dtype=torch.float32, seed=0, device="cpu"):
    """mask (n, mc, h, w), fg (n, c, hf, wf), bg (n, c, hb, wb), drawn on the CPU (the same
    values on every device), then moved to ``device``."""
    g = torch.Generator().manual_seed(seed)
    hf, wf = hf or h, wf or w
    hb, wb = hb or h, wb or w
    # mask beyond [0, 1] so the clamp matters; textures a little beyond [-1, 1] so uint8 clamps
    mask = (torch.rand(n, mc, h, w, generator=g) * 1.2 - 0.1).to(dtype)
    fg = (torch.rand(n, c, hf, wf, generator=g) * 2.2 - 1.1).to(dtype)
    bg = (torch.rand(n, c, hb, wb, generator=g) * 2.2 - 1.1).to(dtype)
    return mask.to(device), fg.to(device), bg.to(device)


def offsets(n, dtype, lo, hi, seed=1, device="cpu"):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(lo, hi, (n, 2), generator=g, dtype=torch.int64).to(dtype).to(device)


def expected(mask, fg, bg, fo, bo, out_dtype="float32", layout="NCHW", clamp=reference.CLAMP):
    """The reference on the CPU, with offsets reduced in Python integers (it would overflow on
    huge ones)."""
    def red(o, t):
        if o is None:
            return None
        return torch.tensor([[int(a) % t.shape[2], int(b) % t.shape[3]] for a, b in o.tolist()],
                            dtype=torch.int64).reshape(-1, 2)
    mask, fg, bg = (t.detach().cpu().float() for t in (mask, fg, bg))
    return reference.composite(mask, fg, bg, red(fo, fg), red(bo, bg), out_dtype=out_dtype, layout=layout,
                               clamp=clamp)


def assert_same(got, exp):
    """Bit-exact, as the docs promise (pycgn.ops: "results equal the reference bit for bit"):
    equal values, NaN where the reference has NaN. (+0 and -0 compare equal.)"""
    got = got.cpu()
    assert got.shape == exp.shape and got.dtype == exp.dtype, (got.shape, got.dtype, exp.shape, exp.dtype)
    if got.is_floating_point():
        same = (got == exp) | (got.isnan() & exp.isnan())
    else:
        same = got == exp
    if not bool(same.all()):
        bad = (~same).nonzero()[:5].tolist()
        raise AssertionError(f"{int((~same).sum())} of {got.numel()} values differ, first at {bad}: "
                             f"got {[got[tuple(i)].item() for i in bad]}, expected {[exp[tuple(i)].item() for i in bad]}")


def same_view(t, device):
    """``t`` on ``device`` with the same sizes, strides and storage offset (``Tensor.to``
    makes a strided view dense): copies the whole storage, then views it the same way."""
    if t is None:
        return None
    flat = t.as_strided((t.untyped_storage().nbytes() // t.element_size(),), (1,), 0)
    return flat.to(device).as_strided(t.shape, t.stride(), t.storage_offset())


def kill_after(cmd, started, delay: float, timeout: float = 60, **popen) -> bool:
    """Run ``cmd``, wait until ``started()`` (or ``timeout``), then ``delay`` seconds more, and
    SIGKILL it if it is still running: an interruption at an arbitrary moment. True if killed."""
    import os
    import signal
    import subprocess
    import time
    p = subprocess.Popen(cmd, **popen)
    t = time.monotonic()
    while p.poll() is None and time.monotonic() - t < timeout and not started():
        time.sleep(0.05)
    time.sleep(delay)
    killed = p.poll() is None
    if killed:
        os.kill(p.pid, signal.SIGKILL)
    p.wait()
    return killed
