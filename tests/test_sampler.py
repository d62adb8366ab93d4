import numpy as np
import pytest
import torch

from pycgn.sampler import Sampler, _mix


FIELDS = ("index", "shape", "texture", "bg", "u_shape", "u_texture", "u_bg", "fg_offset", "bg_offset")


def _equal(a, b):
    return all(torch.equal(getattr(a, f), getattr(b, f)) for f in FIELDS)


def test_same_seed_same_draws_and_other_seed_differs():
    a, b, c = Sampler(3).draw_n(50), Sampler(3).draw_n(50), Sampler(4).draw_n(50)
    assert _equal(a, b)
    assert not torch.equal(a.u_shape, c.u_shape) and not torch.equal(a.shape, c.shape)


@pytest.mark.parametrize("batch", [1, 7, 1000])
def test_sample_depends_only_on_seed_and_index(batch):
    s = Sampler(11)
    whole = s.draw(range(0, 1000))
    for start in range(0, 1000, batch)[:40]:
        part = s.draw(range(start, min(start + batch, 1000)))
        sl = slice(start, start + len(part))
        for f in FIELDS:
            assert torch.equal(getattr(part, f), getattr(whole, f)[sl]), (f, start)
    picked = s.draw([999, 3, 500])
    assert torch.equal(picked.u_bg, whole.u_bg[[999, 3, 500]])


def test_distributions():
    d = Sampler(0).draw_n(20000)
    u = d.u_shape.numpy()
    assert abs(u.mean()) < 0.01 and abs(u.std() - 1) < 0.01
    assert abs(np.corrcoef(u[:, 0], u[:, 1])[0, 1]) < 0.03
    assert not torch.equal(d.u_shape, d.u_texture) and not torch.equal(d.u_texture, d.u_bg)
    for cls in (d.shape, d.texture, d.bg):
        counts = np.bincount(cls.numpy(), minlength=10)
        assert counts.min() > 1800 and counts.max() < 2200
    for off in (d.fg_offset, d.bg_offset):
        assert off.dtype == torch.int64 and off.shape == (20000, 2)
        assert int(off.min()) == 0 and int(off.max()) == 32
        assert len(np.unique(off.numpy())) == 33


def test_fixed_classes_broadcast_and_leave_random_draws_alone():
    s = Sampler(5)
    free = s.draw_n(6)
    fixed = s.draw_n(6, shape=3, texture=[1, None, 2, None, 4, 5], bg=[7])
    assert fixed.shape.tolist() == [3] * 6
    assert fixed.texture.tolist()[::2] == [1, 2, 4] and fixed.texture[1] == free.texture[1]
    assert fixed.bg.tolist() == [7] * 6
    assert torch.equal(fixed.u_shape, free.u_shape) and torch.equal(fixed.fg_offset, free.fg_offset)


def test_counterfactuals_share_shape_inputs():
    s = Sampler(9, counterfactuals=3)
    d = s.draw(range(0, 9))
    for g in range(3):
        rows = slice(3 * g, 3 * g + 3)
        assert (d.u_shape[rows] == d.u_shape[3 * g]).all() and (d.shape[rows] == d.shape[3 * g]).all()
    assert not torch.equal(d.u_texture[0], d.u_texture[1])
    assert torch.equal(d.u_shape[3], Sampler(9).draw([1]).u_shape[0])


def test_mix_is_splitmix64():
    # Published SplitMix64 test vector: seed 1234567 gives 6457827717110365317 first.
    x = np.array([1234567], dtype=np.uint64)
    assert int(_mix(x)[0]) == 6457827717110365317


@pytest.mark.parametrize("kwargs, exc, words", [
    (dict(seed=-1), ValueError, "seed must be in"),
    (dict(seed=2**64), ValueError, "seed must be in"),
    (dict(seed=1.5), TypeError, "seed must be an int"),
    (dict(seed=0, counterfactuals=0), ValueError, "counterfactuals must be >= 1"),
])
def test_bad_sampler_arguments(kwargs, exc, words):
    with pytest.raises(exc, match=words):
        Sampler(**kwargs)


@pytest.mark.parametrize("call, exc, words", [
    (lambda s: s.draw_n(-1), ValueError, "n must be >= 0"),
    (lambda s: s.draw_n(2.0), TypeError, "n must be an int"),
    (lambda s: s.draw_n(3, shape=10), ValueError, "shape has class id 10"),
    (lambda s: s.draw_n(3, bg=[1, 2]), ValueError, "bg has 2 entries, expected 1 or n=3"),
    (lambda s: s.draw_n(2, texture=["a", 1]), TypeError, "texture entries must be class ids"),
    (lambda s: s.draw([-2, 1]), ValueError, "indices must be >= 0"),
])
def test_bad_draw_arguments(call, exc, words):
    with pytest.raises(exc, match=words):
        call(Sampler(0))


def test_zero_samples():
    d = Sampler(0).draw_n(0)
    assert len(d) == 0 and d.u_shape.shape == (0, 32) and d.fg_offset.shape == (0, 2)
