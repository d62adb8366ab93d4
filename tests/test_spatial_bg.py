"""The background nets without position-dependent weights (``bg_net="spatial"`` / ``"periodic"``):
their inference form, their stationarity, checkpoints, exports, backends, the C++ pipeline, training."""
import copy

import pytest
import torch

import pycgn
import importlib

from conftest import random_mnist
from pycgn.checkpoint import CheckpointError
from pycgn.models.mnist import BG_NETS, MnistCGN, SpatialTexture

ex = importlib.import_module("pycgn.export")
SPATIAL = ("spatial", "periodic")


@pytest.fixture(scope="module")
def periodic():
    return random_mnist(31, bg_net="periodic")


def _classes(n, seed):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 32, generator=g) * 1.3, torch.randint(0, 10, (n,), generator=g)


@pytest.mark.parametrize("bg_net", SPATIAL)
@pytest.mark.parametrize("image_size,ngf,n", [(32, 32, 7), (16, 8, 1), (44, 16, 3), (28, 4, 2)])
def test_folded_spatial_net_computes_the_raw_net(bg_net, image_size, ngf, n):
    """The inference form (one Linear for the affine part, the waves through their slice of the first
    conv, upsample + circular conv as a cropped transposed conv, batch norms folded) against the raw
    net, on random weights and statistics, odd sizes, class ids and class blends."""
    model = random_mnist(5 + image_size, bg_net=bg_net, ngf=ngf, image_size=image_size)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    live, folded = model.mechanisms()["background"], model.inference_mechanisms()["background"]
    assert isinstance(live.net, SpatialTexture) and not isinstance(folded.net, SpatialTexture)
    u, y = _classes(n, image_size)
    blend = torch.softmax(torch.randn(n, 10), dim=1)
    with torch.no_grad():
        for cls in (y, blend):
            want, got = live(u, cls), folded(u, cls)
            assert got.shape == want.shape == (n, 3, image_size, image_size)
            assert want.std() > 0.01 or n == 1
            assert (got - want).abs().max().item() <= 1e-5, bg_net
    for k, v in model.state_dict().items():  # folding reads the model, never changes it
        assert torch.equal(v, before[k]), k


@pytest.mark.parametrize("bg_net", SPATIAL)
def test_body_is_translation_equivariant(bg_net):
    """No weight depends on the position: shifting the half-size map shifts the texture (wrapping).
    Zero padding or a position-dependent layer anywhere in the body fails this."""
    net = random_mnist(8, bg_net=bg_net).f_text2
    h = torch.randn(2, net.body[1].in_channels, 16, 16)
    with torch.no_grad():
        out = net.body(h)
        for dy, dx in ((1, 0), (0, 3), (5, -2)):
            shifted = net.body(torch.roll(h, (dy, dx), dims=(2, 3)))
            torch.testing.assert_close(shifted, torch.roll(out, (2 * dy, 2 * dx), dims=(2, 3)), atol=1e-6, rtol=0)


def _position_spread(model, cls, n=1024):
    """How much the mean background over ``n`` latents varies across positions, relative to how much
    a pixel varies across latents: ~1/sqrt(n) for a stationary net, large when a class has a fixed
    mark. Two nearest x2 upsamplings make a 4 px period in any net; positions are compared with the
    others of their 4x4 phase."""
    u = torch.randn(n, 32, generator=torch.Generator().manual_seed(cls))
    with torch.no_grad():
        bg = model.inference_mechanisms()["background"](u, torch.full((n,), cls))
    c, h, w = bg.shape[1:]
    mean = bg.mean(0).reshape(c, h // 4, 4, w // 4, 4)
    resid = mean - mean.mean(dim=(1, 3), keepdim=True)
    return (resid.std(dim=(1, 2, 3, 4)) / bg.std(0).mean(dim=(1, 2))).max().item()


def _with_built_projections(model):
    """``random_mnist`` randomises buffers too; put back the fixed projections the net is built with."""
    fresh = MnistCGN(bg_net=model.bg_net).f_text2
    with torch.no_grad():
        model.f_text2.field.proj.copy_(fresh.field.proj)
        if fresh.waves is not None:
            model.f_text2.waves.phase.copy_(fresh.waves.phase)
    return model


def test_spatial_backgrounds_have_no_fixed_marks():
    """The field is stationary (same variance and covariances everywhere), so the mean background of
    a class is flat up to sampling noise (~1/sqrt(1024) = 0.03). A plain random projection gave
    ~0.08 here, the published architecture ~0.35."""
    for bg_net in SPATIAL:
        model = _with_built_projections(random_mnist(9, bg_net=bg_net))
        assert max(_position_spread(model, c) for c in (0, 9)) < 0.05, bg_net
    plain = _with_built_projections(random_mnist(9, bg_net="spatial"))
    with torch.no_grad():  # unit rows, but random: each position's covariances its own
        p = torch.randn(plain.f_text2.field.proj.shape, generator=torch.Generator().manual_seed(0))
        plain.f_text2.field.proj.copy_(p / p.norm(dim=1, keepdim=True))
    assert _position_spread(plain, 0) > 0.065
    assert _position_spread(random_mnist(9), 0) > 0.2


def test_field_covariance_depends_only_on_the_offset():
    proj = MnistCGN(bg_net="spatial").f_text2.field.proj.double().reshape(8, 8, 8, 32)  # (channel, y, x, latent)
    assert torch.allclose(proj.square().sum(-1), torch.ones(8, 8, 8, dtype=torch.float64), atol=1e-6)
    for dy, dx in ((0, 1), (3, -2)):
        moved = torch.roll(proj, (dy, dx), dims=(1, 2))
        cov = torch.einsum("ayxl,byxl->abyx", proj, moved)  # channel a here with channel b at the offset
        assert torch.allclose(cov, cov[..., :1, :1].expand_as(cov), atol=1e-6)
        assert cov.abs().max() > 0.05  # not trivially zero


def test_waves_are_seamless_and_their_phases_follow_the_latent(periodic):
    w = periodic.f_text2.waves
    u = torch.randn(6, 32)
    emb = periodic.label_emb(torch.arange(6))
    with torch.no_grad():
        a, b = w(u, emb), w(u + 0.05 * torch.randn(6, 32), emb)
    assert a.shape == (6, 8, 16, 16) and a.std() > 0.01
    assert not torch.allclose(a, b, atol=1e-3)  # the latent moves the phases
    # integer wave numbers: one more sample past the edge (index 16) equals the first one
    ab = torch.tensor([(x, y) for x in range(8) for y in range(-7, 8) if x > 0 or y > 0], dtype=torch.float64)
    assert len(ab) == w.n
    theta = ab[:, 0, None] * (16 * 2 * torch.pi / 16)
    torch.testing.assert_close(theta.sin(), torch.zeros_like(theta), atol=1e-12, rtol=0)
    assert torch.equal(w.basis.float(), w.basis)
    assert "waves.basis" not in periodic.f_text2.state_dict()  # pure math, rebuilt on construction


def test_bad_bg_net_names_the_argument():
    with pytest.raises(ValueError, match="bg_net must be one of dense, spatial, periodic"):
        MnistCGN(bg_net="conv")


@pytest.mark.parametrize("bg_net", BG_NETS)
def test_checkpoint_round_trip_keeps_the_net(bg_net, tmp_path):
    model = random_mnist(12, bg_net=bg_net)
    path = pycgn.save(model, tmp_path / "m.pt")
    loaded = pycgn.load(path)
    assert loaded.bg_net == bg_net and type(loaded.f_text2) is type(model.f_text2)
    u, y = _classes(5, 1)
    with torch.no_grad():
        assert torch.equal(loaded.background(u, y), model.background(u, y))
    meta = torch.load(path, weights_only=True)["meta"]
    assert meta.get("bg_net", "dense") == bg_net and ("bg_net" in meta) == (bg_net != "dense")


@pytest.mark.parametrize("value, words", [("conv", "meta.bg_net 'conv'"), (3, "meta.bg_net 3"),
                                          (["spatial"], "meta.bg_net ['spatial']"),
                                          ("dense", "keys do not match"), ("spatial", "keys do not match")])
def test_hostile_bg_net_meta(tmp_path, value, words):
    path = pycgn.save(random_mnist(3, bg_net="periodic"), tmp_path / "m.pt")
    obj = torch.load(path, weights_only=True)
    obj["meta"]["bg_net"] = value
    bad = tmp_path / "bad.pt"
    torch.save(obj, bad)
    with pytest.raises(CheckpointError, match="bad.pt") as e:
        pycgn.load(bad)
    assert words in str(e.value)


def test_onnx_and_torchscript_exports_match_eager(periodic, tmp_path):
    ort = pytest.importorskip("onnxruntime")
    onnx_dir = ex.export(periodic, tmp_path / "onnx", format="onnx")
    ts_dir = ex.export(periodic, tmp_path / "ts", format="torchscript")
    mech = periodic.mechanisms()["background"]
    for n in (1, 7, 64):
        u, y = _classes(n, n)
        with torch.no_grad():
            want = mech(u, y)
        sess = ort.InferenceSession(str(onnx_dir / "background.onnx"), providers=["CPUExecutionProvider"])
        (got,) = sess.run(None, {"u": u.numpy(), "y": y.numpy()})
        torch.testing.assert_close(torch.from_numpy(got), want, atol=1e-4, rtol=0)
        ts = torch.jit.load(str(ts_dir / "background.torchscript.pt"))
        torch.testing.assert_close(ts(u, y), want, atol=1e-4, rtol=0)
    assert want.std() > 0.01


@pytest.mark.parametrize("backend, precision, atol", [("torchscript", "float32", 1e-4),
                                                      ("onnxruntime", "float32", 1e-4),
                                                      ("torch", "bfloat16", 0.05)])
def test_backends_run_the_periodic_net(periodic, backend, precision, atol):
    from pycgn import runtime as rt
    if backend not in rt.available_backends():
        pytest.skip(f"backend {backend} is not available in this environment")
    runner = rt.make_runner(periodic, backend=backend, device="cpu", precision=precision)
    args = [t for _ in range(3) for t in _classes(7, 4)]
    got = runner(*args)
    with torch.no_grad():
        want = periodic(*args)
    err = (got[2] - want[2]).abs().max().item()
    assert err <= atol and want[2].std() > 0.01
    assert (err > 1e-4) == (precision != "float32")


def test_cpp_pipeline_draws_the_python_images(periodic, tmp_path):
    from pycgn import pipeline
    if not pipeline.available():
        pytest.skip("pycgn._pipeline (the C++ bindings) is not built")
    from test_cpp_pipeline import python_images
    out = ex.export(periodic, tmp_path / "ts", format="torchscript")
    got = pipeline.Pipeline(out, device="cpu").generate(bg=[4, 9, 4, 9, 1, 0], n=6, seed=2)
    want = python_images(periodic, out, 2, 6, bg=[4, 9, 4, 9, 1, 0])
    assert torch.equal(got, want) and int(want.max()) - int(want.min()) > 50


@pytest.mark.parametrize("bg_net", SPATIAL)
def test_training_moves_every_background_weight_and_no_buffer(bg_net):
    from pycgn import train
    from test_train import _parts
    cfg = train.config("wildlife_mnist", batch_size=8, texture_batch=4, bg_net=bg_net)
    t = train.trainer_class(cfg)(cfg, data=_parts())
    assert t.cgn.bg_net == bg_net
    params = dict(t.cgn.f_text2.named_parameters())
    before = copy.deepcopy(t.cgn.f_text2.state_dict())
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as pycgn.train runs (and fast on a shared machine)
    try:
        t.step()
    finally:
        torch.set_num_threads(threads)
    after = t.cgn.f_text2.state_dict()
    for k, v in before.items():
        if k in params:
            assert not torch.equal(v, after[k]), f"{k} did not train"
        elif k.endswith(("proj", "phase")):
            assert torch.equal(v, after[k]), f"{k} is fixed but changed"
    assert {"field.proj", "field.mix.weight"} <= set(before) and ("waves.amp.weight" in params) == (bg_net == "periodic")
