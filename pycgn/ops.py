"""``composite``: mask, foreground and background to finished images in one fused pass.

Per image b, channel c, pixel (y, x)::

    m   = clamp(mask[b, 0 or c, y, x], lo, hi)   (as torch.clamp: a NaN mask stays NaN)
    f   = fg[b, c, (y + fg_offset[b, 0]) mod Hf, (x + fg_offset[b, 1]) mod Wf]
    g   = bg[b, c, (y + bg_offset[b, 0]) mod Hb, (x + bg_offset[b, 1]) mod Wb]
    out = m*f + (1-m)*g as float32, or round-half-even(clamp((v+1)*127.5, 0, 255)) as uint8 (NaN -> 0)

Runs the compiled operator ``torch.ops.pycgn.composite`` (CPU, and CUDA when built with it)
and falls back to :func:`pycgn.reference.composite` where it is missing. float16 and
bfloat16 inputs are converted to float32 here (the kernel reads float32 only); results equal
the reference bit for bit, non-finite values included. An ``out=`` must be writable and share
no memory with the inputs (else a ValueError names it). A fake kernel makes the operator
traceable by ``torch.compile`` and ``torch.export``.
"""
from __future__ import annotations

import warnings

import numpy as np
import torch

from . import _ext, reference

__all__ = ["composite"]

_FLOATS = (torch.float32, torch.float16, torch.bfloat16)
_OUT_DTYPES = {"float32": torch.float32, "uint8": torch.uint8,
               torch.float32: torch.float32, torch.uint8: torch.uint8}


def _check_args(mask, fg, bg, fg_offset, bg_offset, out_dtype, layout, lo, hi):
    """The operator's checks, for where the C++ one does not run (its fake kernel, and the
    reference fallback without the extension); the same messages. Returns the output shape."""
    if layout not in ("NCHW", "NHWC"):
        raise ValueError(f"composite: layout must be 'NCHW' or 'NHWC', got {layout!r}")
    if out_dtype not in (torch.float32, torch.uint8):
        raise TypeError(f"composite: out_dtype must be float32 or uint8, got {out_dtype}")
    for name, t in (("mask", mask), ("fg", fg), ("bg", bg)):
        if t.dtype != torch.float32:
            raise TypeError(f"composite: {name} must be float32, got {t.dtype}")
        if t.dim() != 4:
            raise ValueError(f"composite: {name} must have 4 dimensions (N, C, H, W), got shape {tuple(t.shape)}")
        if t.device != mask.device:
            raise ValueError(f"composite: {name} is on {t.device} but mask is on {mask.device}")
    n, mc, h, w = mask.shape
    c = fg.shape[1]
    for name, o in (("fg_offset", fg_offset), ("bg_offset", bg_offset)):
        if o is None:
            continue
        if o.dtype not in (torch.int32, torch.int64):
            raise TypeError(f"composite: {name} must be int32 or int64, got {o.dtype}")
        if o.dim() != 2 or o.shape[0] != n or o.shape[1] != 2:
            raise ValueError(f"composite: {name} must have shape ({n}, 2), got {tuple(o.shape)}")
        if o.device != mask.device:
            raise ValueError(f"composite: {name} is on {o.device} but mask is on {mask.device}")
    if not lo <= hi:
        raise ValueError(f"composite: clamp must have lo <= hi, got ({lo}, {hi})")
    if fg.shape[0] != n:
        raise ValueError(f"composite: fg has batch {fg.shape[0]} but mask has {n}")
    if bg.shape[0] != n:
        raise ValueError(f"composite: bg has batch {bg.shape[0]} but mask has {n}")
    if bg.shape[1] != c:
        raise ValueError(f"composite: bg has {bg.shape[1]} channels but fg has {c}")
    if mc != 1 and mc != c:
        raise ValueError(f"composite: mask must have 1 or {c} (fg's) channels, got {mc}")
    for name, t in (("fg", fg), ("bg", bg)):
        if t.shape[2] < 1 or t.shape[3] < 1:
            raise ValueError(f"composite: {name} must have height and width >= 1, got {tuple(t.shape)}")
    return (n, h, w, c) if layout == "NHWC" else (n, c, h, w)


def _check_out(out, shape, out_dtype, device, inputs=()):
    """The out= checks of the C++ operator; ``inputs``: (name, tensor) pairs it must not overlap."""
    if out.dtype != out_dtype:
        raise TypeError(f"composite: out must be {out_dtype}, got {out.dtype}")
    if tuple(out.shape) != tuple(shape):
        raise ValueError(f"composite: out must have shape {tuple(shape)}, got {tuple(out.shape)}")
    if out.device != device:
        raise ValueError(f"composite: out is on {out.device} but mask is on {device}")
    if out.numel() == 0:
        return
    if any(s == 0 and n > 1 for s, n in zip(out.stride(), out.shape)):
        raise ValueError("composite: out has elements that share memory (a stride of 0, e.g. from expand)")
    first, last = _span(out)
    for name, t in inputs:
        if t is not None and t.numel() > 0:
            a, b = _span(t)
            if not (last < a or b < first):
                raise ValueError(f"composite: out shares memory with {name}; pass a separate out tensor")


def _span(t):
    """First and last byte a tensor can touch (torch strides are >= 0)."""
    last = sum((n - 1) * s for n, s in zip(t.shape, t.stride()))
    return t.data_ptr(), t.data_ptr() + (last + 1) * t.element_size() - 1


if _ext.AVAILABLE and hasattr(torch.ops.pycgn, "composite"):
    @torch.library.register_fake("pycgn::composite")
    def _composite_fake(mask, fg, bg, fg_offset, bg_offset, out_dtype, layout, lo, hi):
        shape = _check_args(mask, fg, bg, fg_offset, bg_offset, out_dtype, layout, lo, hi)
        return mask.new_empty(shape, dtype=out_dtype)

    @torch.library.register_fake("pycgn::composite.out")
    def _composite_out_fake(mask, fg, bg, fg_offset, bg_offset, out_dtype, layout, lo, hi, *, out):
        shape = _check_args(mask, fg, bg, fg_offset, bg_offset, out_dtype, layout, lo, hi)
        if out.dtype != out_dtype:
            raise TypeError(f"composite: out must be {out_dtype}, got {out.dtype}")
        if tuple(out.shape) != tuple(shape):
            raise ValueError(f"composite: out must have shape {tuple(shape)}, got {tuple(out.shape)}")
        return out  # fake tensors have no addresses: overlap is checked when it runs


def _setup_context(ctx, inputs, output):
    mask, fg, bg, fg_offset, bg_offset, out_dtype, layout, lo, hi = inputs
    ctx.save_for_backward(mask, fg, bg, fg_offset, bg_offset)
    ctx.args = (out_dtype, layout, lo, hi)


def _backward(ctx, grad):
    """Gradients of the float output through the reference expression (training is not this
    kernel's job, but a requires_grad input must not silently get no gradient)."""
    mask, fg, bg, fg_offset, bg_offset = ctx.saved_tensors
    out_dtype, layout, lo, hi = ctx.args
    if out_dtype != torch.float32:
        raise RuntimeError("composite: the uint8 output is not differentiable; use out_dtype='float32'")
    need = ctx.needs_input_grad[:3]
    with torch.enable_grad():
        leaves = [t.detach().requires_grad_(r) for t, r in zip((mask, fg, bg), need)]
        v = reference.composite(*leaves, _reduced(fg_offset, fg), _reduced(bg_offset, bg), "float32", layout,
                                (lo, hi))
        wanted = [t for t in leaves if t.requires_grad]
        got = iter(torch.autograd.grad(v, wanted, grad) if wanted else ())
    grads = [next(got) if r else None for r in need]
    return (*grads, None, None, None, None, None, None)


if _ext.AVAILABLE and hasattr(torch.ops.pycgn, "composite"):
    torch.library.register_autograd("pycgn::composite", _backward, setup_context=_setup_context)


def _as_tensor(name: str, a):
    """numpy -> torch without copying where torch can view the array."""
    if isinstance(a, torch.Tensor):
        return a
    if isinstance(a, np.ndarray):
        if any(s < 0 for s in a.strides) or a.dtype.byteorder == ">":
            a = np.ascontiguousarray(a, dtype=a.dtype.newbyteorder("="))
        if not a.flags.writeable:  # read only: torch warns, but the kernel never writes inputs
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", UserWarning)
                return torch.from_numpy(a)
        return torch.from_numpy(a)
    raise TypeError(f"composite: {name} must be a torch.Tensor or numpy.ndarray, got {type(a).__name__}")


def _out_tensor(out, numpy_in: bool, arrays):
    """The tensor the operator writes, and the array to copy it into afterwards (or None).

    numpy knows what torch cannot: a read-only array (np.frombuffer of bytes, a memmap opened
    "r", writeable=False) is refused instead of written through. An array torch cannot view
    (negative strides, big-endian) gets the result through a native temporary and
    np.copyto, so the caller's array is always the one written.
    """
    if numpy_in != isinstance(out, np.ndarray):
        raise TypeError("composite: out must be a numpy array for numpy inputs and a tensor for tensors")
    if not isinstance(out, np.ndarray):
        return out, None
    if not out.flags.writeable:
        raise ValueError("composite: out is a read-only numpy array; pass a writable one")
    if all(s >= 0 for s in out.strides) and out.dtype.isnative:
        return torch.from_numpy(out), None
    for name, a in arrays:
        if isinstance(a, np.ndarray) and np.may_share_memory(out, a):
            raise ValueError(f"composite: out shares memory with {name}; pass a separate out array")
    return torch.from_numpy(np.empty(out.shape, out.dtype.newbyteorder("="))), out


def composite(mask, fg, bg, fg_offset=None, bg_offset=None, out_dtype="float32", layout="NCHW",
              clamp=reference.CLAMP, out=None):
    """Composite CGN parts into images: ``m*fg + (1-m)*bg`` with circular texture shifts.

    Args:
        mask: (N, 1 or C, H, W) soft mask; its H, W are the output's.
        fg, bg: (N, C, Hf, Wf) and (N, C, Hb, Wb) textures, any size >= 1.
        fg_offset, bg_offset: (N, 2) int32/int64 (dy, dx) shifts, any value (reduced modulo
            the texture size), or None for zero.
        out_dtype: "float32" or "uint8" (round-half-even of clamp((v+1)*127.5, 0, 255); NaN -> 0).
        layout: "NCHW" or "NHWC" of the output.
        clamp: (lo, hi) applied to the mask as torch.clamp does (a NaN mask gives a NaN value).
        out: optional writable tensor/array of the output's shape and dtype, sharing no memory
            with the inputs, to write into.

    mask, fg and bg share one dtype (float32, float16 or bfloat16) and device. Torch tensors in,
    a tensor out; numpy arrays in, an array out (inputs viewed without copying where possible).
    """
    numpy_in = isinstance(mask, np.ndarray)
    arrays = (("mask", mask), ("fg", fg), ("bg", bg), ("fg_offset", fg_offset), ("bg_offset", bg_offset))
    mask, fg, bg = _as_tensor("mask", mask), _as_tensor("fg", fg), _as_tensor("bg", bg)
    if fg_offset is not None:
        fg_offset = _as_tensor("fg_offset", fg_offset)
    if bg_offset is not None:
        bg_offset = _as_tensor("bg_offset", bg_offset)
    try:
        dtype = _OUT_DTYPES[out_dtype]
    except (KeyError, TypeError):
        raise ValueError(f"composite: out_dtype must be 'float32' or 'uint8', got {out_dtype!r}") from None
    try:
        lo, hi = (float(v) for v in clamp)
    except (TypeError, ValueError):
        raise TypeError(f"composite: clamp must be a pair of floats (lo, hi), got {clamp!r}") from None
    # What only this layer knows: the dtypes it converts to the operator's float32.
    if mask.dtype not in _FLOATS:
        raise TypeError(f"composite: mask must be float32, float16 or bfloat16, got {mask.dtype}")
    for name, t in (("fg", fg), ("bg", bg)):
        if t.dtype != mask.dtype:
            raise TypeError(f"composite: {name} is {t.dtype} but mask is {mask.dtype}")
    if mask.dtype != torch.float32:
        mask, fg, bg = mask.float(), fg.float(), bg.float()
    out_t, copy_back = (None, None) if out is None else _out_tensor(out, numpy_in, arrays)

    if _ext.AVAILABLE and _has_kernel(mask.device):  # the operator checks every argument
        if out_t is None:
            res = torch.ops.pycgn.composite(mask, fg, bg, fg_offset, bg_offset, dtype, layout, lo, hi)
        else:
            res = torch.ops.pycgn.composite.out(mask, fg, bg, fg_offset, bg_offset, dtype, layout, lo, hi,
                                                out=out_t)
    else:
        shape = _check_args(mask, fg, bg, fg_offset, bg_offset, dtype, layout, lo, hi)
        if out_t is not None:
            _check_out(out_t, shape, dtype, mask.device,
                       (("mask", mask), ("fg", fg), ("bg", bg), ("fg_offset", fg_offset), ("bg_offset", bg_offset)))
        res = reference.composite(mask, fg, bg, _reduced(fg_offset, fg), _reduced(bg_offset, bg),
                                  out_dtype="uint8" if dtype == torch.uint8 else "float32",
                                  layout=layout, clamp=(lo, hi))
        if out_t is not None:
            res = out_t.copy_(res)
    if copy_back is not None:
        np.copyto(copy_back, res.numpy())
    if numpy_in:
        return out if out is not None else res.numpy()
    return res


# Looked up once: the dispatcher query is not traceable by torch.compile.
_KERNELS = {"cpu": _ext.has_cpu_kernels(), "cuda": _ext.has_cuda_kernels()}


def _has_kernel(device: torch.device) -> bool:
    return _KERNELS.get(device.type, False)


def _reduced(offset, tex):
    """Offsets reduced modulo the texture size, so the reference never overflows int64.

    The sizes are Python scalars, not a tensor made from them: no host-to-device copy, so the
    backward and the fallback can run inside a captured CUDA graph."""
    if offset is None:
        return None
    o = offset.long()
    return torch.stack((o[:, 0].remainder(tex.shape[2]), o[:, 1].remainder(tex.shape[3])), 1)
