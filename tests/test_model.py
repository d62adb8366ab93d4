"""MnistCGN against the published checkpoints and a functional re-implementation of the spec."""
import pytest
import torch
import torch.nn.functional as F

import pycgn
from pycgn.models import MnistCGN
from conftest import VARIANTS, published


@pytest.mark.parametrize("variant", VARIANTS)
def test_published_checkpoint_loads_strictly(variant):
    sd = torch.load(published(variant), map_location="cpu", weights_only=True)
    model = MnistCGN()
    assert set(model.state_dict()) == set(sd), "state-dict keys differ from the published ones"
    model.load_state_dict(sd, strict=True)
    assert len(sd) == 57
    assert sum(p.numel() for p in model.parameters()) == 659_992
    loaded = pycgn.load(published(variant))
    assert loaded.info.variant == variant and len(loaded.info.sha256) == 64
    for k, v in sd.items():
        assert torch.equal(loaded.state_dict()[k], v), k


def _bn(x, sd, p):
    return F.batch_norm(x, sd[p + ".running_mean"], sd[p + ".running_var"], sd[p + ".weight"], sd[p + ".bias"],
                        training=False, eps=1e-5)


def _up(x):
    return x.repeat_interleave(2, dim=2).repeat_interleave(2, dim=3)  # nearest x2, written differently


def spec_shape(sd, u, y):
    """The shape net of docs/cgn-mnist.md in functional form."""
    x = torch.cat([u, sd["label_emb.weight"][y]], 1) @ sd["f_shape.0.weight"].T + sd["f_shape.0.bias"]
    x = F.instance_norm(x.view(-1, 64, 8, 8))
    x = F.conv2d(_up(x), sd["f_shape.4.weight"], padding=1)
    x = F.instance_norm(F.leaky_relu(_bn(x, sd, "f_shape.5"), 0.2))
    x = F.conv2d(_up(x), sd["f_shape.9.weight"], padding=1)
    return F.instance_norm(F.leaky_relu(_bn(x, sd, "f_shape.10"), 0.2))


def spec_texture(sd, net, u, y):
    x = torch.cat([u, sd["label_emb.weight"][y]], 1) @ sd[f"{net}.0.weight"].T + sd[f"{net}.0.bias"]
    x = F.conv2d(_up(x.view(-1, 64, 8, 8)), sd[f"{net}.3.weight"], padding=1)
    x = F.leaky_relu(_bn(x, sd, f"{net}.4"), 0.2)
    x = F.conv2d(_up(x), sd[f"{net}.7.weight"], padding=1)
    x = F.leaky_relu(_bn(x, sd, f"{net}.8"), 0.2)
    x = F.conv2d(x, sd[f"{net}.10.weight"], sd[f"{net}.10.bias"], padding=1)
    return torch.tanh(_bn(x, sd, f"{net}.11"))


def _check_against_spec(model, n=9):
    g = torch.Generator().manual_seed(7)
    sd = model.state_dict()
    u = [torch.randn(n, 32, generator=g) for _ in range(3)]
    y = [torch.randint(0, 10, (n,), generator=g) for _ in range(3)]
    with torch.no_grad():
        mask, fg, bg = model(u[0], y[0], u[1], y[1], u[2], y[2])
        assert mask.shape == (n, 1, 32, 32) and fg.shape == bg.shape == (n, 3, 32, 32)
        torch.testing.assert_close(mask, spec_shape(sd, u[0], y[0]), atol=1e-5, rtol=0)
        torch.testing.assert_close(fg, spec_texture(sd, "f_text1", u[1], y[1]), atol=1e-5, rtol=0)
        torch.testing.assert_close(bg, spec_texture(sd, "f_text2", u[2], y[2]), atol=1e-5, rtol=0)
    assert fg.std() > 0.01 and mask.std() > 0.01, "degenerate outputs would make this comparison vacuous"


def test_random_model_matches_spec(random_model):
    _check_against_spec(random_model)


@pytest.mark.parametrize("variant", VARIANTS)
def test_published_model_matches_spec(variant):
    _check_against_spec(pycgn.load(published(variant)))


def test_mechanisms_share_weights(random_model):
    mech = random_model.mechanisms()
    u, y = torch.randn(4, 32), torch.tensor([0, 3, 9, 5])
    with torch.no_grad():
        assert torch.equal(mech["shape"](u, y), random_model.shape(u, y))
        assert torch.equal(mech["texture"](u, y), random_model.texture(u, y))
        assert torch.equal(mech["background"](u, y), random_model.background(u, y))


@pytest.mark.parametrize("image_size,ngf,n,channels_last", [(32, 32, 7, True), (32, 32, 5, False),
                                                             (16, 8, 1, True), (44, 16, 3, False)])
def test_folded_mechanisms_compute_the_published_nets(image_size, ngf, n, channels_last):
    """The inference form (batch norms folded, upsample + conv as one transposed conv, the texture
    nets' linear chain as one Linear) against the published nets, on random weights and batch-norm
    statistics, odd sizes and class vectors, in the eager (NHWC) and the exported (NCHW) layout."""
    from conftest import random_mnist
    model = random_mnist(77 + image_size, ngf=ngf, image_size=image_size)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    live, folded = model.mechanisms(), model.inference_mechanisms(channels_last)
    assert sum(p.numel() for p in folded["texture"].net.parameters()) != \
        sum(p.numel() for p in live["texture"].net.parameters())  # really another form
    u, y = torch.randn(n, 32), torch.randint(0, 10, (n,))
    blend = torch.softmax(torch.randn(n, 10), dim=1)
    with torch.no_grad():
        for m in live:
            for cls in (y, blend):
                want, got = live[m](u, cls), folded[m](u, cls)
                assert got.shape == want.shape == (n, 1 if m == "shape" else 3, image_size, image_size)
                scale = want.abs().max().item()
                assert (got - want).abs().max().item() <= 1e-5 * max(scale, 1.0), m
                assert not torch.equal(want, torch.zeros_like(want))
    for k, v in model.state_dict().items():  # folding reads the model, never changes it
        assert torch.equal(v, before[k]), k


def test_folded_mechanisms_are_a_snapshot(random_model):
    folded = random_model.inference_mechanisms()
    u, y = torch.randn(3, 32), torch.tensor([1, 2, 3])
    with torch.no_grad():
        first = folded["texture"](u, y)
        random_model.f_text1[3].weight.mul_(2)
        assert torch.equal(folded["texture"](u, y), first)
        assert not torch.allclose(random_model.inference_mechanisms()["texture"](u, y), first)


def test_model_has_no_hidden_randomness(random_model):
    u, y = torch.randn(3, 32), torch.tensor([1, 2, 3])
    with torch.no_grad():
        a = random_model(u, y, u, y, u, y)
        torch.manual_seed(99)
        b = random_model(u, y, u, y, u, y)
    for x, z in zip(a, b):
        assert torch.equal(x, z)


@pytest.mark.parametrize("bad, exc, words", [
    (dict(y=torch.tensor([10])), ValueError, "y_shape has class id 10"),
    (dict(y=torch.tensor([-1])), ValueError, "y_shape has class id -1"),
    (dict(y=torch.tensor([1.0])), TypeError, "y_shape must be an integer"),
    (dict(y=torch.tensor([[1]])), ValueError, "y_shape must have shape (N,)"),
    (dict(u=torch.full((1, 32), float("nan"))), ValueError, "u_shape contains NaN"),
    (dict(u=torch.zeros(1, 31)), ValueError, "u_shape must have shape (N, 32)"),
    (dict(u=torch.zeros(1, 32, dtype=torch.int64)), TypeError, "u_shape must be a floating-point"),
    (dict(u=[[0.0] * 32]), TypeError, "u_shape must be a torch.Tensor"),
    (dict(y=torch.tensor([1, 2])), ValueError, "y_shape has batch 2, expected 1"),
])
def test_bad_inputs_name_the_argument(random_model, bad, exc, words):
    args = dict(u=torch.zeros(1, 32), y=torch.tensor([1]))
    args.update(bad)
    with pytest.raises(exc) as e:
        random_model.shape(args["u"], args["y"])
    assert words in str(e.value)


def test_texture_and_background_name_their_arguments(random_model):
    with pytest.raises(ValueError, match="y_texture"):
        random_model.texture(torch.zeros(1, 32), torch.tensor([11]))
    with pytest.raises(ValueError, match="u_bg"):
        random_model.background(torch.full((1, 32), float("inf")), torch.tensor([1]))
