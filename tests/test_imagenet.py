"""The ImageNet CGN: published layout, mechanisms, seeded truncated noise, strict loading, export.

All models here are small with random weights (no ImageNet weights can be downloaded); the
full-size model is only built on the meta device, to check its keys against the published code.
"""
import copy
import hashlib
import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from pycgn import export as ex, reference
from pycgn.checkpoint import CheckpointError
from pycgn.models import biggan, imagenet as inet
from pycgn.models.base import MECHANISMS
from pycgn.models.imagenet import ImagenetCGN, load_imagenet_cgn, save_imagenet_cgn

# Facts of the published code (imagenet/models/{cgn,biggan,u2net}.py of the CGN repository, and
# huggingface's BigGAN-deep-256 it loads): sha256 over the sorted "key:shape" lines of the
# state dict, the number of keys and of values, all taken from the published modules.
PUBLISHED = {
    "cgn": ("cecdedae0560e89f9d539e5c866cc160cdb2a87f301217cbc131cdabfe5c7c2c", 3206, 278_331_521),
    "biggan": ("ecf5e7ab55b60855a476e1ef828c4ca1d4ec3ae585296dac75b519df48ed4cd8", 602, 58_573_185),
    "u2net": ("319a623398a2cd41205f1524e1a2cd2076fcd888b6d3707d17714962aa2f0e93", 798, 44_038_781),
}
TINY = dict(ch=4, resolution=16, u2net_div=16)


def manifest(sd) -> tuple[str, int, int]:
    lines = "\n".join(f"{k}:{tuple(v.shape)}" for k, v in sorted(sd.items()))
    return hashlib.sha256(lines.encode()).hexdigest(), len(sd), sum(v.numel() for v in sd.values())


def randomize_(model, seed=0):
    """Non-trivial statistics, gains and attention so every part of the nets matters."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, t in model.state_dict().items():
            if name.endswith(("running_vars", "running_var")):
                t.copy_(torch.rand(t.shape, generator=g) + 0.5)
            elif name.endswith(("running_means", "running_mean")) or name.endswith(("bn_s1.bias", "bn.bias")):
                t.copy_(torch.randn(t.shape, generator=g) * 0.1)
            elif name.endswith(("bn_s1.weight", "bn.weight")):
                t.copy_(torch.rand(t.shape, generator=g) + 0.5)
            elif name.endswith("gamma"):
                t.copy_(torch.randn(t.shape, generator=g))
            elif name.endswith("embeddings.weight"):
                t.copy_(torch.randn(t.shape, generator=g))
    return model.eval()


@pytest.fixture(autouse=True, scope="module")
def _plain_cpu_convs():
    # oneDNN builds a primitive per new conv shape: seconds for U^2-Net's ~120 tiny convs
    with torch.backends.mkldnn.flags(enabled=False):
        yield


@pytest.fixture(scope="module")
def tiny():
    torch.manual_seed(11)
    return randomize_(ImagenetCGN(**TINY, truncation=0.4))


def draw(n, seed=5, truncation=0.4, **kw):
    return inet.imagenet_draw(seed, range(n), truncation=truncation, **kw)


# --- the published layout ---------------------------------------------------------------------

def test_full_size_keys_and_shapes_match_published():
    with torch.device("meta"):
        model = ImagenetCGN()
    assert manifest(model.state_dict()) == PUBLISHED["cgn"]
    assert manifest(model.f_shape.state_dict()) == PUBLISHED["biggan"]
    assert manifest(model.u2net.state_dict()) == PUBLISHED["u2net"]
    sd = model.state_dict()
    for key, shape in {"biggan_GT.embeddings.weight": (128, 1000),
                       "f_shape.generator.gen_z.weight_orig": (4 * 4 * 16 * 128, 256),
                       "f_text.generator.layers.8.gamma": (1,),
                       "f_bg.generator.layers.0.bn_0.running_means": (51, 2048),
                       "f_bg.generator.layers.12.conv_3.weight_v": (64,),
                       "f_bg.generator.conv_to_rgb.weight_orig": (128, 128, 3, 3),
                       "u2net.stage1.rebnconvin.conv_s1.weight": (64, 3, 3, 3),
                       "u2net.stage5d.rebnconv3d.bn_s1.num_batches_tracked": (),
                       "u2net.outconv.weight": (1, 6, 1, 1)}.items():
        assert tuple(sd[key].shape) == shape, key
    assert list(sd)[:3] == ["biggan_GT.embeddings.weight", "biggan_GT.generator.gen_z.bias",
                            "biggan_GT.generator.gen_z.weight_orig"]


def test_without_gt_drops_only_biggan_gt():
    with torch.device("meta"):
        full, lean = ImagenetCGN(), ImagenetCGN(gt=False)
    assert set(full.state_dict()) - set(lean.state_dict()) == {
        k for k in full.state_dict() if k.startswith("biggan_GT.")}


@pytest.mark.parametrize("bad", [dict(resolution=48), dict(ch=1), dict(u2net_div=3), dict(truncation=0.0),
                                 dict(truncation=1.5)])
def test_bad_sizes(bad):
    with pytest.raises(ValueError):
        ImagenetCGN(**{**TINY, **bad})


# --- mechanisms -------------------------------------------------------------------------------

@pytest.mark.parametrize("size,n", [(dict(ch=4, resolution=16, u2net_div=16), 1),
                                    (dict(ch=3, resolution=32, u2net_div=16), 3),
                                    (dict(ch=3, resolution=64, u2net_div=8), 2)])
def test_mechanism_shapes_and_ranges(size, n):
    torch.manual_seed(n)
    model = randomize_(ImagenetCGN(**size, gt=True), seed=n)
    d = draw(n, shape="barn", texture=[3] * n)
    r = size["resolution"]
    with torch.no_grad():
        pre = model.premask(d.u_shape, d.shape)
        mask = model.shape(d.u_shape, d.shape)
        fg = model.texture(d.u_texture, d.texture)
        bg = model.background(d.u_bg, d.bg)
        gt = model.unconstrained(d.u_shape, d.shape)
    assert pre.shape == fg.shape == bg.shape == gt.shape == (n, 3, r, r)
    assert mask.shape == (n, 1, r, r)
    assert bool(((mask >= 0) & (mask <= 1)).all())
    for x in (pre, fg, bg, gt):
        assert bool(((x >= -1) & (x <= 1)).all()) and x.std() > 0
    assert torch.equal(mask, model.mask(pre))
    assert not torch.equal(fg[:, :, :, :], bg)  # separate weights


def test_ids_equal_one_hot_vectors_and_vectors_interpolate(tiny):
    d = draw(3)
    onehot = F.one_hot(d.texture, 1000).float()
    with torch.no_grad():
        a = tiny.texture(d.u_texture, d.texture)
        b = tiny.texture(d.u_texture, onehot)
        mix = 0.5 * onehot + 0.5 * F.one_hot((d.texture + 1) % 1000, 1000).float()
        c = tiny.texture(d.u_texture, mix)
    assert torch.equal(a, b)
    assert (a - c).abs().max() > 1e-4


def test_truncation_selects_batch_norm_statistics(tiny):
    d = draw(2)
    with torch.no_grad():
        outs = [tiny.background(d.u_bg, d.bg, truncation=t) for t in (0.4, 0.25, 1.0)]
    assert torch.equal(outs[0], tiny.background(d.u_bg, d.bg))  # the model's default, 0.4
    assert (outs[0] - outs[1]).abs().max() > 1e-4 and (outs[0] - outs[2]).abs().max() > 1e-4


def test_interpolated_statistics_follow_the_published_rule(tiny):
    # between rows, coef weighs the lower row: 0.25 -> rows 12 and 13 with weights 0.5 / 0.5;
    # 0.3 sits exactly on row 15 (math.modf(0.3 / 0.02) == (0.0, 15.0)).
    bn = tiny.f_bg.generator.layers[1].bn_1
    m, v = biggan._stats(bn.running_means, bn.running_vars, 0.25, 51)
    assert torch.allclose(m, 0.5 * bn.running_means[12] + 0.5 * bn.running_means[13])
    m, v = biggan._stats(bn.running_means, bn.running_vars, 0.3, 51)
    assert torch.equal(m, bn.running_means[15]) and torch.equal(v, bn.running_vars[15])
    m, _ = biggan._stats(bn.running_means, bn.running_vars, 0.31, 51)
    assert torch.allclose(m, 0.5 * bn.running_means[15] + 0.5 * bn.running_means[16], atol=1e-5)


@pytest.mark.parametrize("call,err", [
    (lambda m: m.texture(torch.randn(2, 127), torch.tensor([1, 2])), ValueError),
    (lambda m: m.texture(torch.randn(2, 128), torch.tensor([1, 1000])), ValueError),
    (lambda m: m.texture(torch.randn(2, 128), torch.tensor([1.0, 2.0])), ValueError),
    (lambda m: m.texture(torch.randn(2, 128), torch.rand(3, 1000)), ValueError),
    (lambda m: m.texture(torch.randn(2, 128), [1, 2]), TypeError),
    (lambda m: m.texture(torch.randn(2, 128), torch.tensor([1, 2]), truncation=0), ValueError),
    (lambda m: m.texture(torch.randn(2, 128), torch.tensor([1, 2]), truncation="0.5"), TypeError),
    (lambda m: m.mask(torch.rand(2, 1, 16, 16)), ValueError),
])
def test_bad_inputs_name_the_argument(tiny, call, err):
    with pytest.raises(err):
        call(tiny)


def test_mechanism_modules_match_methods(tiny):
    d = draw(2, truncation=0.7)
    mechs = tiny.mechanisms(truncation=0.7)
    with torch.no_grad():
        assert torch.equal(mechs["shape"](d.u_shape, d.shape), tiny.shape(d.u_shape, d.shape, 0.7))
        assert torch.equal(mechs["texture"](d.u_texture, d.texture), tiny.texture(d.u_texture, d.texture, 0.7))
        assert torch.equal(mechs["background"](d.u_bg, F.one_hot(d.bg, 1000).float()),
                           tiny.background(d.u_bg, d.bg, 0.7))


# --- composition ------------------------------------------------------------------------------

def test_composite_parity_with_reference(tiny):
    d = draw(3, shape=[425, None, "goldfish"], counterfactuals=1)
    with torch.no_grad():
        mask, fg, bg = tiny(d.u_shape, d.shape, d.u_texture, d.texture, d.u_bg, d.bg)
        parts = reference.generate(tiny, d, out_dtype="float32", layout="NCHW")
    m = mask.clamp(1e-4, 0.9999)  # the published CGN: clamp, broadcast, blend
    expected = m * fg + (1 - m) * bg
    got = reference.composite(mask, fg, bg, d.fg_offset, d.bg_offset)
    assert torch.allclose(got, expected, atol=1e-6, rtol=0)
    assert torch.allclose(parts["images"], expected, atol=1e-6, rtol=0)
    assert torch.equal(parts["foreground"], fg) and torch.equal(parts["background"], bg)


def test_fused_composite_at_256():
    pycgn = pytest.importorskip("pycgn")
    if not pycgn._ext.AVAILABLE:
        pytest.skip("the compiled extension is not built here; the fused kernel is absent")
    g = torch.Generator().manual_seed(3)
    mask = torch.rand(2, 1, 256, 256, generator=g)
    fg, bg = (torch.rand(2, 3, 256, 256, generator=g) * 2 - 1 for _ in range(2))
    zero = torch.zeros(2, 2, dtype=torch.int64)
    for dtype, layout in (("float32", "NCHW"), ("uint8", "NHWC")):
        want = reference.composite(mask, fg, bg, zero, zero, out_dtype=dtype, layout=layout)
        got = pycgn.composite(mask, fg, bg, zero, zero, out_dtype=dtype, layout=layout)
        if dtype == "uint8":
            assert (got.int() - want.int()).abs().max() <= 1
        else:
            assert torch.allclose(got, want, atol=1e-6, rtol=0)


# --- seeded noise and draws -------------------------------------------------------------------

def test_truncated_normal_is_bounded_counter_based_and_normal_shaped():
    idx = np.arange(0, 4000, 3)
    x = inet.truncated_normal(9, idx, inet.U_TRUNC, 128)
    assert x.dtype == np.float32 and x.shape == (idx.size, 128)
    assert np.abs(x).max() <= 2.0 and np.abs(x).max() > 1.9
    # truncnorm(-2, 2): mean 0, std 0.8796
    assert abs(x.mean()) < 0.01 and abs(x.std() - 0.8796) < 0.01
    # sample i depends only on (seed, i): a subset or another order draws the same rows
    sub = inet.truncated_normal(9, idx[[7, 2, 100]], inet.U_TRUNC, 128)
    assert np.array_equal(sub, x[[7, 2, 100]])
    assert not np.array_equal(inet.truncated_normal(10, idx[:5], inet.U_TRUNC, 128), x[:5])
    assert not np.array_equal(inet.truncated_normal(9, idx[:5], inet.U_TRUNC_BG, 128), x[:5])
    with pytest.raises(ValueError):
        inet.truncated_normal(9, idx, 3, 128)


def test_truncated_normal_rows_needing_many_tries():
    # a tight bound forces most values past the first 4 tries: the slow path must agree with itself
    idx = np.arange(50)
    x = inet.truncated_normal(1, idx, 20, 16, bound=0.05)
    assert np.abs(x).max() <= 0.05
    assert np.array_equal(x[10:20], inet.truncated_normal(1, idx[10:20], 20, 16, bound=0.05))


def test_imagenet_draw():
    d = draw(6, truncation=0.5, shape="barn", texture=[1, None, "goldfish", 4, 5, "6"], bg=None)
    assert d.shape.tolist() == [425] * 6
    assert d.texture[[0, 2, 3, 4, 5]].tolist() == [1, 1, 4, 5, 6]
    assert torch.equal(d.u_shape, d.u_texture) and torch.equal(d.u_shape, d.u_bg)  # shared, as published
    assert d.u_shape.abs().max() <= 1.0 and d.u_shape.dtype == torch.float32
    assert not bool(d.fg_offset.any()) and not bool(d.bg_offset.any())
    e = inet.imagenet_draw(5, range(2, 4), truncation=0.5, shape="barn", shared_noise=True)
    assert torch.equal(e.u_shape, d.u_shape[2:4])
    assert torch.allclose(inet.imagenet_draw(5, range(6), truncation=0.25).u_shape, d.u_shape * 0.5)
    own = inet.imagenet_draw(5, range(6), truncation=0.5, shared_noise=False, counterfactuals=3)
    assert torch.equal(own.u_shape[:3], own.u_shape[0:1].expand(3, -1))  # one shape per K samples
    assert not torch.equal(own.u_texture, own.u_bg)
    with pytest.raises(ValueError):
        draw(2, truncation=1.2)
    with pytest.raises(ValueError):
        draw(2, shape="no such class")


def test_class_names():
    names = inet.class_names()
    assert len(names) == 1000 and names[0].startswith("tench") and names[425] == "barn"
    assert inet.class_id("barn") == 425 and inet.class_id("Grey Whale") == 147 and inet.class_id(7) == 7
    with pytest.raises(ValueError, match="ambiguous"):
        inet.class_id("crane")
    with pytest.raises(ValueError):
        inet.class_id(1000)
    with pytest.raises(TypeError):
        inet.class_id(2.0)


# --- loading ----------------------------------------------------------------------------------

def test_strict_load_roundtrip(tiny, tmp_path):
    gt = randomize_(ImagenetCGN(**TINY, gt=True), seed=2)
    path = save_imagenet_cgn(gt, tmp_path / "cgn.pth")
    sd = torch.load(path, weights_only=True)
    assert list(sd) == list(gt.state_dict())
    back = load_imagenet_cgn(path, gt=True, truncation=0.4)
    assert back.config == gt.config and back.u2net_div == 16
    got = back.state_dict()
    for k, v in gt.state_dict().items():
        assert torch.equal(got[k], v), k
    lean = load_imagenet_cgn(path, truncation=0.4)  # default gt=False: biggan_GT checked and dropped
    assert not lean.has_gt and lean.info.kind == "imagenet_cgn" and lean.info.class_names[425] == "barn"
    d = draw(2)
    with torch.no_grad():
        assert torch.equal(lean.shape(d.u_shape, d.shape), gt.shape(d.u_shape, d.shape, 0.4))


def test_load_published_layout_from_base_files_and_dataparallel(tmp_path):
    src = randomize_(ImagenetCGN(**TINY, gt=True), seed=4)
    torch.save(src.f_text.state_dict(), tmp_path / "biggan.pth")
    u2 = {k: v for k, v in src.u2net.state_dict().items() if not k.endswith("num_batches_tracked")}
    torch.save(u2, tmp_path / "u2net.pth")  # old U^2-Net files have no num_batches_tracked
    base = load_imagenet_cgn(None, tmp_path / "biggan.pth", tmp_path / "u2net.pth", gt=True)
    got = base.state_dict()
    for net in ("biggan_GT", "f_shape", "f_text", "f_bg"):
        for k, v in src.f_text.state_dict().items():
            assert torch.equal(got[f"{net}.{k}"], v)
    # cgn.pth overrides the base files; DataParallel's "module." is dropped as published
    wrapped = {k.replace("f_shape.", "f_shape.module."): v for k, v in src.state_dict().items()}
    torch.save(wrapped, tmp_path / "cgn.pth")
    both = load_imagenet_cgn(tmp_path / "cgn.pth", tmp_path / "biggan.pth", tmp_path / "u2net.pth", gt=True)
    got = both.state_dict()
    for k, v in src.state_dict().items():
        assert torch.equal(got[k], v), k


def test_load_errors_are_clear(tmp_path):
    src = ImagenetCGN(**TINY, gt=True)
    sd = src.state_dict()
    with pytest.raises(FileNotFoundError, match="cgn_path"):
        load_imagenet_cgn(tmp_path / "absent.pth")
    with pytest.raises(ValueError):
        load_imagenet_cgn()
    extra = dict(sd, **{"f_bg.generator.extra.weight": torch.ones(1)})
    torch.save(extra, tmp_path / "extra.pth")
    with pytest.raises(CheckpointError, match="unexpected keys.*f_bg.generator.extra.weight"):
        load_imagenet_cgn(tmp_path / "extra.pth")
    missing = {k: v for k, v in sd.items() if k != "f_text.generator.layers.1.conv_2.weight_v"}
    torch.save(missing, tmp_path / "missing.pth")
    with pytest.raises(CheckpointError, match="missing keys.*f_text.generator.layers.1.conv_2.weight_v"):
        load_imagenet_cgn(tmp_path / "missing.pth")
    torch.save({k: v for k, v in sd.items() if not k.startswith("u2net.")}, tmp_path / "no_u2net.pth")
    with pytest.raises(CheckpointError, match="missing keys.*u2net"):
        load_imagenet_cgn(tmp_path / "no_u2net.pth")
    shaped = dict(sd, **{"f_bg.generator.bn.weight": torch.ones(5)})
    torch.save(shaped, tmp_path / "shape.pth")
    with pytest.raises(CheckpointError, match="f_bg.generator.bn.weight"):
        load_imagenet_cgn(tmp_path / "shape.pth")
    torch.save([1, 2], tmp_path / "list.pth")
    with pytest.raises(CheckpointError, match="not a state dict"):
        load_imagenet_cgn(tmp_path / "list.pth")
    (tmp_path / "junk.pth").write_bytes(b"not a torch file")
    with pytest.raises(CheckpointError):
        load_imagenet_cgn(tmp_path / "junk.pth")
    torch.save(src.u2net.state_dict(), tmp_path / "u2.pth")
    with pytest.raises(CheckpointError, match="biggan_path.*BigGAN weights lack"):
        load_imagenet_cgn(None, tmp_path / "u2.pth", tmp_path / "u2.pth")
    assert inet.looks_like_imagenet_cgn(sd) and not inet.looks_like_imagenet_cgn(["f_shape.0.weight"])


# --- export -----------------------------------------------------------------------------------

def _eager(model, d, truncation):
    with torch.no_grad():
        return {"shape": model.shape(d.u_shape, d.shape, truncation),
                "texture": model.texture(d.u_texture, d.texture, truncation),
                "background": model.background(d.u_bg, d.bg, truncation)}


def test_onnx_export_parity(tiny, tmp_path):
    ort = pytest.importorskip("onnxruntime")
    onnx = pytest.importorskip("onnx")
    out = ex.export_imagenet(tiny, tmp_path / "x", "onnx", truncation=0.7)
    side = json.loads((out / "pycgn_export.json").read_text())
    assert side["kind"] == "imagenet_cgn" and side["truncation"] == 0.7 and side["opset"] == 20
    assert side["max_offset"] == 0 and side["inputs"][1] == {"name": "y", "shape": ["batch"], "dtype": "int64"}
    draws = {n: draw(n, seed=n, truncation=0.7, shared_noise=False) for n in (1, 5)}  # exported at batch 2
    want = {n: _eager(tiny, d, 0.7) for n, d in draws.items()}
    for name in MECHANISMS:
        path = out / side["files"][name]
        onnx.checker.check_model(onnx.load(str(path)), full_check=True)
        sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        for n, d in draws.items():
            u, y = {"shape": (d.u_shape, d.shape), "texture": (d.u_texture, d.texture),
                    "background": (d.u_bg, d.bg)}[name]
            got = torch.from_numpy(sess.run(None, {"u": u.numpy(), "y": y.numpy()})[0])
            assert got.shape == want[n][name].shape
            assert (got - want[n][name]).abs().max() <= 1e-4, (name, n)


def test_torchscript_export_parity(tiny, tmp_path):
    class_input = "vector"  # ONNX covers "ids"
    out = ex.export_imagenet(tiny, tmp_path / "ts", "torchscript", class_input=class_input)
    side = json.loads((out / "pycgn_export.json").read_text())
    assert side["truncation"] == 0.4 and side["class_input"] == class_input
    d = draw(3, seed=8, shared_noise=False)
    want = _eager(tiny, d, 0.4)
    for name, u, y in (("shape", d.u_shape, d.shape), ("texture", d.u_texture, d.texture),
                       ("background", d.u_bg, d.bg)):
        net = torch.jit.load(str(out / side["files"][name]))
        with torch.no_grad():
            got = net(u, y if class_input == "ids" else F.one_hot(y, 1000).float())
        assert (got - want[name]).abs().max() <= 1e-5, name


def test_export_rejects_bad_arguments(tiny, tmp_path):
    with pytest.raises(ValueError):
        ex.export_imagenet(tiny, tmp_path, "tflite")
    with pytest.raises(ValueError):
        ex.export_imagenet(tiny, tmp_path, "onnx", class_input="names")
    with pytest.raises(TypeError):
        ex.export_imagenet(object(), tmp_path, "onnx")
    (tmp_path / "f").write_text("x")
    with pytest.raises(NotADirectoryError):
        ex.export_imagenet(tiny, tmp_path / "f", "torchscript")


def test_folded_spectral_norms_compute_the_same_function(tiny):
    """The low-precision copies fold each spectral norm into a plain layer (in float32): the same
    function as the model's, which keeps its spectral-normed layers; then converted to bfloat16."""
    before = {k: v.clone() for k, v in tiny.state_dict().items()}
    u = torch.randn(3, tiny.latent_dim) * 0.4
    y = F.one_hot(torch.tensor([0, 7, 3]), tiny.n_classes).float()
    live = tiny.mechanisms()
    folded = {k: biggan.fold_spectral_norms(copy.deepcopy(m)) for k, m in live.items()}
    with torch.no_grad():
        for k in live:
            assert not any(isinstance(x, biggan._SpectralNorm) for x in folded[k].modules())
            want, got = live[k](u, y), folded[k](u, y)
            assert want.abs().max() > 0.01
            torch.testing.assert_close(got, want, atol=1e-5, rtol=0)
        low = tiny.low_precision_mechanisms(torch.bfloat16)
        for k in live:
            got = low[k](u.bfloat16(), y)
            assert got.dtype == torch.bfloat16
            assert 0 < (got.float() - live[k](u, y)).abs().max() <= 0.05, k  # test_runtime's BF16_ATOL
    for k, v in tiny.state_dict().items():  # the model keeps its spectral norms and float32 weights
        assert v.dtype == before[k].dtype and torch.equal(v, before[k]), k
