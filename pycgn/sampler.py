"""Seeded, counter-based sampling of every random input of a CGN.

Each value is a pure function of ``(seed, index, stream, k)`` through a SplitMix64 hash, so
sample ``i`` is the same whether it is drawn alone, in a batch of 1000, on another worker or
in C++ (``include/pycgn/sampler.h`` implements the same bits). Nothing here touches a
global RNG.

For ``counterfactuals = K > 1`` the shape inputs of sample ``i`` are keyed by ``i // K``:
the K counterfactuals of one shape sample share its mask and draw their own texture and
background (the paper's dataset scheme).
"""
from __future__ import annotations

from dataclasses import dataclass, fields

import numpy as np
import torch

from . import _checks

# Stream ids: part of the format, shared with the C++ sampler (include/pycgn/sampler.h). Never
# renumber. 0-7: every CGN's latents, classes and crop offsets. 16-18: the ImageNet CGN's truncated
# noise (pycgn.models.imagenet.truncated_normal; 16 also serves texture and background when the
# noise is shared, as in the published code). 8-10: a dataset design's classes
# (pycgn.synth.design: the label, the agree/permute coin and the other class, one column per
# mechanism). 11-15 are free.
U_SHAPE, U_TEXTURE, U_BG, Y_SHAPE, Y_TEXTURE, Y_BG, FG_OFFSET, BG_OFFSET = range(8)
DESIGN_LABEL, DESIGN_COIN, DESIGN_CLASS = 8, 9, 10
U_TRUNC, U_TRUNC_TEXTURE, U_TRUNC_BG = 16, 17, 18
SEED_MAX = 2**64 - 1

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_M1 = np.uint64(0xBF58476D1CE4E5B9)
_M2 = np.uint64(0x94D049BB133111EB)


def _mix(x: np.ndarray) -> np.ndarray:
    """SplitMix64: a bijective 64-bit finaliser with full avalanche."""
    x = x + _GOLDEN
    x = (x ^ (x >> np.uint64(30))) * _M1
    x = (x ^ (x >> np.uint64(27))) * _M2
    return x ^ (x >> np.uint64(31))


def _bits(seed: int, index: np.ndarray, stream: int, width: int) -> np.ndarray:
    """(N, width) uint64: hash(hash(hash(seed) ^ index) ^ (stream << 32 | k)), k < width."""
    with np.errstate(over="ignore"):
        base = _mix(_mix(np.array([seed], dtype=np.uint64)) ^ index.astype(np.uint64))
        k = (np.uint64(stream) << np.uint64(32)) | np.arange(width, dtype=np.uint64)
        return _mix(base[:, None] ^ k[None, :])


def _uniform(seed, index, stream, width) -> np.ndarray:
    """float64 in [0, 1) from the top 53 bits."""
    return (_bits(seed, index, stream, width) >> np.uint64(11)).astype(np.float64) * 2.0**-53


def normal(seed: int, index: np.ndarray, stream: int, dim: int) -> np.ndarray:
    """(N, dim) float32 standard normal, Box-Muller on the uniforms (2d, 2d+1)."""
    u = _uniform(seed, index, stream, 2 * dim)
    r = np.sqrt(-2.0 * np.log1p(-u[:, 0::2]))
    return (r * np.cos(2.0 * np.pi * u[:, 1::2])).astype(np.float32)


def integers(seed: int, index: np.ndarray, stream: int, width: int, high: int) -> np.ndarray:
    """(N, width) int64 uniform in {0, ..., high - 1}."""
    return np.floor(_uniform(seed, index, stream, width) * high).astype(np.int64)


@dataclass
class Draw:
    """Every input of a batch of samples; with the model's weights it fixes the images."""
    index: torch.Tensor       # (N,) int64, the sample numbers
    shape: torch.Tensor       # (N,) int64 class of the shape mechanism
    texture: torch.Tensor     # (N,) int64
    bg: torch.Tensor          # (N,) int64
    u_shape: torch.Tensor     # (N, latent) float32
    u_texture: torch.Tensor
    u_bg: torch.Tensor
    fg_offset: torch.Tensor   # (N, 2) int64, (dy, dx) of the circular texture crop
    bg_offset: torch.Tensor

    def __len__(self) -> int:
        return int(self.index.shape[0])

    def to(self, device) -> "Draw":
        return Draw(**{f.name: getattr(self, f.name).to(device) for f in fields(self)})

    def slice(self, start: int, stop: int) -> "Draw":
        """Samples ``start:stop`` of this batch (views, no copy)."""
        return Draw(**{f.name: getattr(self, f.name)[start:stop] for f in fields(self)})

    def numpy(self) -> dict[str, np.ndarray]:
        return {f.name: getattr(self, f.name).cpu().numpy() for f in fields(self)}


def _fixed_classes(name: str, value, n: int, n_classes: int) -> tuple[np.ndarray, np.ndarray] | None:
    """(values, is_fixed) for a class argument broadcast against n; None means all random."""
    if value is None:
        return None
    if isinstance(value, (int, np.integer)) and not isinstance(value, bool):
        vals = np.full(n, int(value), dtype=np.int64)
        fixed = np.ones(n, dtype=bool)
    else:
        items = list(value.tolist() if hasattr(value, "tolist") else value)
        if len(items) not in (1, n):
            raise ValueError(f"{name} has {len(items)} entries, expected 1 or n={n}")
        if len(items) == 1:
            items = items * n
        fixed = np.array([v is not None for v in items], dtype=bool)
        for v in items:
            if v is not None and (isinstance(v, bool) or not isinstance(v, (int, np.integer))):
                raise TypeError(f"{name} entries must be class ids (int) or None, got {type(v).__name__}")
        vals = np.array([0 if v is None else int(v) for v in items], dtype=np.int64)
    bad = fixed & ((vals < 0) | (vals >= n_classes))
    if bad.any():
        raise ValueError(f"{name} has class id {int(vals[bad][0])}, expected 0..{n_classes - 1}")
    return vals, fixed


class Sampler:
    """Draws latents, classes and crop offsets for sample indices from one seed.

    ``max_offset`` is the largest crop offset per axis: the published shuffler crops a
    32x32 window out of a 2x2 tiling of a 32x32 texture, i.e. offsets {0, ..., 32}.
    """

    def __init__(self, seed: int, n_classes: int = 10, latent_dim: int = 32, max_offset: int = 32,
                 counterfactuals: int = 1):
        if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
            raise TypeError(f"seed must be an int, got {type(seed).__name__}")
        if not 0 <= int(seed) <= SEED_MAX:
            raise ValueError(f"seed must be in 0..2**64-1, got {seed}")
        if counterfactuals < 1:
            raise ValueError(f"counterfactuals must be >= 1, got {counterfactuals}")
        self.seed = int(seed)
        self.n_classes = n_classes
        self.latent_dim = latent_dim
        self.max_offset = max_offset
        self.counterfactuals = counterfactuals

    def draw(self, indices, shape=None, texture=None, bg=None) -> Draw:
        """Inputs of the samples ``indices`` (an int range start/stop, or a sequence of ints).

        ``shape``/``texture``/``bg`` fix classes: an int, or a sequence of len(indices) whose
        entries may be None (random). Random draws never depend on which classes are fixed.
        """
        if isinstance(indices, range):
            idx = np.arange(indices.start, indices.stop, indices.step, dtype=np.int64)
        else:
            idx = np.asarray(indices, dtype=np.int64).reshape(-1)
        if idx.size and idx.min() < 0:
            raise ValueError(f"indices must be >= 0, got {int(idx.min())}")
        n = idx.shape[0]
        s, d, k = self.seed, self.latent_dim, self.counterfactuals
        shape_idx = idx // k
        classes = {}
        for name, value, stream, key in (("shape", shape, Y_SHAPE, shape_idx),
                                         ("texture", texture, Y_TEXTURE, idx),
                                         ("bg", bg, Y_BG, idx)):
            drawn = integers(s, key, stream, 1, self.n_classes)[:, 0]
            fixed = _fixed_classes(name, value, n, self.n_classes)
            if fixed is not None:
                drawn = np.where(fixed[1], fixed[0], drawn)
            classes[name] = torch.from_numpy(drawn)
        span = self.max_offset + 1
        return Draw(
            index=torch.from_numpy(idx.copy()),
            u_shape=torch.from_numpy(normal(s, shape_idx, U_SHAPE, d)),
            u_texture=torch.from_numpy(normal(s, idx, U_TEXTURE, d)),
            u_bg=torch.from_numpy(normal(s, idx, U_BG, d)),
            fg_offset=torch.from_numpy(integers(s, idx, FG_OFFSET, 2, span)),
            bg_offset=torch.from_numpy(integers(s, idx, BG_OFFSET, 2, span)),
            **classes,
        )

    def draw_n(self, n: int, start: int = 0, **classes) -> Draw:
        n = _checks.count("n", n)
        return self.draw(range(start, start + n), **classes)
