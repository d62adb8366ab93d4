"""Procedural textures for Wildlife MNIST: 20 distinct, tileable RGB patterns.

The paper's Wildlife MNIST uses photo textures (striped objects, veined backgrounds) that
cannot be shipped or fetched, so pycgn draws its own: stripes, veins, dots, waves, checks,
rings, zigzags and grids in distinct colour pairs. Every pattern is periodic over its
``size`` (integer wave numbers), so a circular crop at any offset is seamless, like the
texture crops the CGN itself makes. Textures 0-9 are the object (digit) textures of
classes 0-9, textures 10-19 the background textures.
"""
from __future__ import annotations

import numpy as np

N_TEXTURES = 20
SIZE = 64

# (family, parameters, colour a, colour b); colours in [0, 1]. Object textures are bold
# two-colour patterns, background textures darker, noisier ones, so the 20 differ both in
# structure and in colour statistics.
_SPECS = (
    ("stripes", dict(k=(0, 4)), (0.95, 0.85, 0.10), (0.10, 0.10, 0.10)),
    ("stripes", dict(k=(5, 5)), (0.95, 0.30, 0.05), (0.95, 0.95, 0.95)),
    ("dots", dict(n=6, r=0.30), (0.10, 0.80, 0.95), (0.05, 0.15, 0.45)),
    ("checks", dict(k=(4, 4)), (0.90, 0.10, 0.20), (0.95, 0.80, 0.80)),
    ("waves", dict(k=6, amp=1.5, ky=2), (0.30, 0.95, 0.30), (0.05, 0.35, 0.05)),
    ("zigzag", dict(k=5, ky=4), (0.60, 0.20, 0.85), (0.95, 0.90, 0.30)),
    ("rings", dict(n=2, k=3.0), (0.95, 0.55, 0.75), (0.30, 0.05, 0.20)),
    ("stripes", dict(k=(7, 0)), (0.20, 0.40, 0.95), (0.85, 0.95, 1.00)),
    ("grid", dict(n=8, w=0.18), (1.00, 1.00, 1.00), (0.55, 0.25, 0.05)),
    ("dots", dict(n=4, r=0.22), (0.95, 0.95, 0.20), (0.75, 0.10, 0.45)),
    ("veins", dict(seed=11, width=0.10), (0.85, 0.80, 0.70), (0.35, 0.30, 0.25)),
    ("veins", dict(seed=12, width=0.06), (0.20, 0.30, 0.20), (0.60, 0.75, 0.45)),
    ("noise", dict(seed=13, octaves=3), (0.45, 0.30, 0.15), (0.75, 0.55, 0.30)),
    ("waves", dict(k=3, amp=2.5, ky=1), (0.15, 0.25, 0.40), (0.40, 0.55, 0.70)),
    ("veins", dict(seed=14, width=0.14), (0.55, 0.10, 0.10), (0.95, 0.70, 0.60)),
    ("checks", dict(k=(8, 8)), (0.35, 0.35, 0.35), (0.65, 0.65, 0.65)),
    ("noise", dict(seed=15, octaves=5), (0.05, 0.20, 0.30), (0.25, 0.65, 0.60)),
    ("stripes", dict(k=(2, -6)), (0.50, 0.45, 0.10), (0.25, 0.20, 0.05)),
    ("veins", dict(seed=16, width=0.08), (0.05, 0.05, 0.15), (0.55, 0.45, 0.85)),
    ("dots", dict(n=10, r=0.35), (0.90, 0.60, 0.20), (0.40, 0.20, 0.05)),
)
FAMILIES = tuple(sorted({s[0] for s in _SPECS}))


def _periodic_noise(size: int, seed: int, octaves: int) -> np.ndarray:
    """Smooth tileable noise in about [-1, 1]: random Fourier modes with integer wave numbers."""
    rng = np.random.default_rng(seed)
    t = np.arange(size) / size * 2 * np.pi
    yy, xx = np.meshgrid(t, t, indexing="ij")
    out = np.zeros((size, size))
    for o in range(octaves):
        for _ in range(4):
            ky, kx = rng.integers(-(2 ** o) - 1, 2 ** o + 2, size=2)
            out += np.cos(ky * yy + kx * xx + rng.uniform(0, 2 * np.pi)) / (o + 1)
    return out / np.abs(out).max()


def _pattern(family: str, p: dict, size: int) -> np.ndarray:
    """(size, size) float in [0, 1]: 1 where colour a is, 0 where colour b is."""
    t = np.arange(size) / size  # one period across the tile
    yy, xx = np.meshgrid(t, t, indexing="ij")
    two_pi = 2 * np.pi
    if family == "stripes":
        ky, kx = p["k"]
        return (np.sin(two_pi * (ky * yy + kx * xx)) > 0).astype(np.float64)
    if family == "checks":
        ky, kx = p["k"]
        return (np.sin(two_pi * ky * yy) * np.sin(two_pi * kx * xx) > 0).astype(np.float64)
    if family == "waves":
        phase = two_pi * p["k"] * xx + p["amp"] * np.sin(two_pi * p["ky"] * yy)
        return 0.5 + 0.5 * np.sin(phase)
    if family == "zigzag":
        tri = np.abs(((p["ky"] * yy) % 1.0) - 0.5)  # triangle wave along y
        return (np.sin(two_pi * p["k"] * (xx + tri)) > 0).astype(np.float64)
    if family == "dots":
        n = p["n"]
        dy = (yy * n) % 1.0 - 0.5
        dx = (xx * n) % 1.0 - 0.5
        return (np.hypot(dy, dx) < p["r"]).astype(np.float64)
    if family == "rings":
        n = p["n"]
        r = np.hypot((yy * n) % 1.0 - 0.5, (xx * n) % 1.0 - 0.5)
        return (np.sin(two_pi * p["k"] * r * 2) > 0).astype(np.float64)
    if family == "grid":
        n, w = p["n"], p["w"]
        on = (((yy * n) % 1.0) < w) | (((xx * n) % 1.0) < w)
        return on.astype(np.float64)
    if family == "veins":
        # thin bright lines along the zero set of smooth noise: marble-like veins
        v = np.abs(_periodic_noise(size, p["seed"], 3))
        return np.clip(1.0 - v / p["width"], 0.0, 1.0)
    if family == "noise":
        return 0.5 + 0.5 * _periodic_noise(size, p["seed"], p["octaves"])
    raise ValueError(f"unknown texture family {family!r}")


def texture(index: int, size: int = SIZE) -> np.ndarray:
    """Texture ``index`` (0..19) as float32 (3, size, size) in [0, 1]; deterministic."""
    if isinstance(index, bool) or not isinstance(index, (int, np.integer)):
        raise TypeError(f"index must be an int, got {type(index).__name__}")
    if not 0 <= index < N_TEXTURES:
        raise ValueError(f"index must be in 0..{N_TEXTURES - 1}, got {index}")
    if isinstance(size, bool) or not isinstance(size, (int, np.integer)) or size < 8:
        raise ValueError(f"size must be an int >= 8, got {size!r}")
    family, params, a, b = _SPECS[index]
    w = _pattern(family, params, int(size))[None]
    a = np.asarray(a)[:, None, None]
    b = np.asarray(b)[:, None, None]
    return (w * a + (1.0 - w) * b).astype(np.float32)


def textures(size: int = SIZE) -> np.ndarray:
    """All 20 textures, float32 (20, 3, size, size) in [0, 1]."""
    return np.stack([texture(i, size) for i in range(N_TEXTURES)])


def name(index: int) -> str:
    """A short name such as ``'03_checks'``."""
    return f"{index:02d}_{_SPECS[index][0]}"
