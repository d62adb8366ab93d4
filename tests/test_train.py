"""pycgn.train: a few steps of the CPU trainer, exact resume, the pieces of the loss."""
import math

import pytest
import torch

import pycgn
from pycgn import train
from pycgn.cli import main as cli


def _data(n=48, seed=0):
    """Random stand-in training data: digit-like blobs with class colours, in [-1, 1]."""
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(n) % 10
    m = (torch.rand(n, 1, 32, 32, generator=g) > 0.7).float()
    colour = torch.rand(10, 3, 1, 1, generator=g)[y]
    return (m * colour * 2 - 1).contiguous(), y


@pytest.fixture(autouse=True)
def _one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.mark.parametrize("variant", train.VARIANTS)
def test_steps_give_finite_losses_and_change_weights(variant):
    t = train.Trainer(train.config(variant, batch_size=8, recipe="composite"), data=_data())
    before = {k: v.clone() for k, v in t.cgn.state_dict().items()}
    for _ in range(2):
        losses = t.step()
        assert set(losses) == {"adv", "mask", "style", "mean", "d_real", "d_fake"}
        assert all(math.isfinite(v) for v in losses.values()), losses
        assert losses["style"] > 0 and losses["mask"] > 0
    after = t.cgn.state_dict()
    assert not torch.equal(before["f_shape.0.weight"], after["f_shape.0.weight"])
    bg_conv = "f_text2.3.weight" if t.cgn.bg_net == "dense" else "f_text2.body.1.weight"  # the first 3x3 conv
    assert not torch.equal(before[bg_conv], after[bg_conv])
    assert t.step_count == 2


def _parts(n=48, seed=0):
    """Random stand-in components: masks in [0, 1], class-coloured fg and bg in [-1, 1]."""
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(n) % 10
    m = (torch.rand(n, 1, 32, 32, generator=g) > 0.7).float()
    fg = (torch.rand(10, 3, 1, 1, generator=g)[y] * 2 - 1).expand(n, 3, 32, 32).contiguous()
    bg = torch.rand(n, 3, 32, 32, generator=g) * 2 - 1
    return m, fg, bg, y


@pytest.mark.parametrize("variant", train.VARIANTS)
def test_component_steps(variant):
    cfg = train.config(variant, batch_size=8, texture_batch=5)
    t = train.trainer_class(cfg)(cfg, data=_parts())
    assert isinstance(t, train.ComponentTrainer)
    before = t.cgn.f_text1[3].weight.clone()
    for _ in range(2):
        losses = t.step()
        patch_gan = {"d_texture"} if cfg.texture_adv else set()
        masks = {"tv"} if cfg.mask_tv else set()
        masks |= {"speckle"} if cfg.mask_speckle else set()
        assert set(losses) == {"adv", "mask", "fg", "bg", "d_real", "d_fake"} | patch_gan | masks
        assert all(math.isfinite(v) for v in losses.values()), losses
    assert not torch.equal(before, t.cgn.f_text1[3].weight)
    assert (t.tex_disc is not None) == bool(cfg.texture_adv)


def test_grouped_texture_batch_holds_k_real_parts_of_each_class():
    cfg = train.config("double_colored_mnist", batch_size=8, texture_batch=8, texture_groups=4, seed=3)
    parts = _parts()
    t = train.ComponentTrainer(cfg, data=parts)
    _, fg_all, bg_all, y_all = t.batch(0)
    torch.manual_seed(0)
    classes, fg, bg = t._texture_batch(y_all)
    assert classes.tolist() == y_all[:2].repeat_interleave(4).tolist()
    # each real part is one of that class's own (the stand-in fg colour is unique per class)
    colour = parts[1][:10, :, 0, 0]
    assert torch.equal(fg[:, :, 0, 0], colour[classes])
    for b, c in zip(bg, classes):
        assert any(torch.equal(b, x) for x in parts[2][parts[3] == c])


def test_sorted_l1_matches_distributions_not_pairs():
    g = torch.Generator().manual_seed(1)
    real = torch.randn(8, 3, generator=g)
    shuffled = real[torch.tensor([3, 0, 2, 1, 7, 4, 6, 5])]  # reordered within groups of 4
    assert train.sorted_l1(shuffled, real, 4) == 0
    assert torch.nn.functional.l1_loss(shuffled, real) > 0.3  # the paired loss punishes it
    collapsed = real.reshape(2, 4, 3).median(1, keepdim=True)[0].expand(2, 4, 3).reshape(8, 3)
    assert train.sorted_l1(collapsed, real, 4) > 0.2
    # grouped, not pooled: the same rows in other groups do not match
    assert train.sorted_l1(real[torch.tensor([4, 5, 6, 7, 0, 1, 2, 3])], real, 4) > 0.2


def test_speckle_loss_pushes_isolated_pixels_only():
    m = torch.zeros(1, 1, 12, 12)
    m[0, 0, 2:9, 3:5] = 1.0   # a stroke two pixels wide: every pixel has >= 3 neighbours on
    assert train.speckle_loss(m) == 0
    m[0, 0, 10, 10] = 0.9     # a speckle
    x = m.clone().requires_grad_()
    train.speckle_loss(x).backward()
    assert x.grad[0, 0, 10, 10] > 0                      # pushed off
    assert x.grad[0, 0, 2:9, 3:5].abs().sum() == 0       # the stroke untouched
    assert (x.grad[0, 0, 9:12, 9:12] >= 0).all()          # no neighbour pushed on


def test_spread_hinge_is_bounded():
    g = torch.Generator().manual_seed(2)
    same = torch.randn(1, 3, 4, 4, generator=g).expand(8, 3, 4, 4)
    spread = torch.randn(8, 3, 4, 4, generator=g)  # pairwise RMS distance about 1.4
    target = torch.tensor([0.5, 0.5])
    assert train.spread_hinge(same, 4, target) == pytest.approx(0.5)
    assert train.spread_hinge(spread, 4, target) == 0
    assert train.spread_hinge(spread, 4, torch.tensor([10.0, 10.0])) > 8
    x = same.clone().requires_grad_()
    train.spread_hinge(x + 0.01 * torch.randn(8, 3, 4, 4, generator=g), 4, target).backward()
    assert x.grad.abs().sum() > 0


def test_texture_loss_adds_the_hinge_for_nets_that_ignore_their_latent():
    """At initialisation two latents of a class give nearly the same texture (pairwise 0.03
    against a real spread of ~1.15 for the random stand-in backgrounds): the grouped loss
    pays the hinge, target x spread - 0.03, on top of the same terms."""
    def loss(diversity):
        cfg = train.config("wildlife_mnist", batch_size=8, texture_batch=8, seed=5, texture_groups=4,
                           texture_diversity=diversity, diversity_target=0.5)
        t = train.ComponentTrainer(cfg, data=_parts())
        spread = t._real_spread()[1]
        torch.manual_seed(0)
        yt, _, bg = t._texture_batch(t.batch(0)[-1])
        torch.manual_seed(1)
        value, _ = t._texture_loss(t.cgn.f_text2, bg, yt, yt + 10, spread)
        return value.item(), 0.5 * spread[yt[::4]].mean().item()
    (with_hinge, target), (without, _) = loss(1.0), loss(0.0)
    assert target > 0.4
    assert with_hinge - without == pytest.approx(target, abs=0.06)


def test_texture_patch_gan_trains_its_judge_and_changes_the_texture_nets():
    kw = dict(batch_size=8, texture_batch=5, seed=4)
    with_gan = train.config("wildlife_mnist", **kw)
    without = train.config("wildlife_mnist", texture_adv=0.0, **kw)
    assert with_gan.texture_adv > 0 and with_gan.texture_spectrum > 0
    a = train.ComponentTrainer(with_gan, data=_parts())
    b = train.ComponentTrainer(without, data=_parts())
    judge = {k: v.clone() for k, v in a.tex_disc.state_dict().items()}
    for _ in range(2):
        a.step()
        b.step()
    assert any(not torch.equal(v, a.tex_disc.state_dict()[k]) for k, v in judge.items())
    assert not torch.equal(a.cgn.f_text1[3].weight, b.cgn.f_text1[3].weight)
    # the shape net never sees the texture judge
    assert torch.equal(a.cgn.f_shape[0].weight, b.cgn.f_shape[0].weight)


def test_patch_disc_scores_each_crop():
    d = train.PatchDisc(20)
    x = torch.randn(6, 3, 32, 32)
    y = torch.tensor([0, 5, 9, 10, 15, 19])
    out = d(x, y)
    assert out.shape == (6,)
    assert not torch.equal(out, d(x, (y + 1) % 20))  # the class matters


def test_amplitude_spectrum_ignores_circular_shifts_and_finds_stripes():
    g = torch.Generator().manual_seed(0)
    x = torch.rand(2, 3, 32, 24, generator=g)
    shifted = torch.roll(x, shifts=(5, -7), dims=(2, 3))
    assert torch.allclose(train.amplitude_spectrum(x), train.amplitude_spectrum(shifted), atol=1e-5)
    # vertical stripes, 4 periods across 32 px: all the energy at horizontal wave number 4
    cols = torch.arange(32.0)
    stripes = torch.sin(2 * math.pi * 4 * cols / 32).expand(1, 3, 32, 32)
    a = train.amplitude_spectrum(stripes)
    assert a.shape == (1, 3, 32, 17)
    assert a[0, 0].argmax().item() == 4  # row 0, column 4 of the flattened (32, 17) map
    assert a[0, 0, 0, 4] > 0.99 * a[0, 0].sum()
    # the same stripes turned horizontal: wave number 4 along the rows instead
    b = train.amplitude_spectrum(stripes.transpose(2, 3).contiguous())
    assert b[0, 0].argmax().item() == 4 * 17


def test_resume_without_texture_judge_is_refused(tmp_path):
    old = train.config("wildlife_mnist", batch_size=8, texture_batch=4, texture_adv=0.0)
    t = train.ComponentTrainer(old, data=_parts())
    t.step()
    state = t.state_dict()
    new = train.ComponentTrainer(train.config("wildlife_mnist", batch_size=8, texture_batch=4), data=_parts())
    with pytest.raises(ValueError, match="texture discriminator"):
        new.load_state_dict(state)


def test_component_resume_exact(tmp_path):
    cfg = train.config("wildlife_mnist", batch_size=8, texture_batch=4, seed=2)
    a = train.ComponentTrainer(cfg, data=_parts())
    b = train.ComponentTrainer(cfg, data=_parts())
    for _ in range(3):
        a.step()
    b.step()
    b.save_state(tmp_path / "s.pt")
    c = train.Trainer.resume(tmp_path / "s.pt", data=_parts())
    assert isinstance(c, train.ComponentTrainer)
    c.step()
    c.step()
    for k, v in a.cgn.state_dict().items():
        assert torch.equal(v, c.cgn.state_dict()[k]), k
    for k, v in a.tex_disc.state_dict().items():
        assert torch.equal(v, c.tex_disc.state_dict()[k]), k


def test_grouped_recipe_resumes_exactly(tmp_path):
    cfg = train.config("double_colored_mnist", batch_size=8, texture_batch=8, seed=6)
    assert cfg.texture_groups and cfg.texture_diversity and cfg.mask_speckle  # the shipped recipe
    a = train.ComponentTrainer(cfg, data=_parts())
    b = train.ComponentTrainer(cfg, data=_parts())
    for _ in range(8):  # 8 steps of batch 8 over 48 samples: crosses an epoch
        a.step()
    for _ in range(5):
        b.step()
    b.save_state(tmp_path / "s.pt")
    c = train.Trainer.resume(tmp_path / "s.pt", data=_parts())
    for _ in range(3):
        c.step()
    for k, v in a.cgn.state_dict().items():
        assert torch.equal(v, c.cgn.state_dict()[k]), k


def test_resume_continues_exactly(tmp_path):
    cfg = train.config("colored_mnist", batch_size=8, seed=5, recipe="composite")
    a = train.Trainer(cfg, data=_data())
    for _ in range(4):
        a.step()
    b = train.Trainer(cfg, data=_data())
    for _ in range(2):
        b.step()
    b.save_state(tmp_path / "state.pt")
    c = train.Trainer.resume(tmp_path / "state.pt", data=_data())
    assert c.step_count == 2
    for _ in range(2):
        c.step()
    for k, v in a.cgn.state_dict().items():
        assert torch.equal(v, c.cgn.state_dict()[k]), k
    for k, v in a.disc.state_dict().items():
        assert torch.equal(v, c.disc.state_dict()[k]), k


def test_train_writes_loadable_checkpoint_and_resumes(tmp_path):
    cfg = train.config("double_colored_mnist", batch_size=8, epochs=1, recipe="composite")
    path = train.train(cfg, tmp_path, progress=False, save_every=3, data=_data(24))
    assert path == tmp_path / "double_colored_mnist.pt"
    model = pycgn.load(path)
    assert model.info.variant == "double_colored_mnist"
    assert model.info.extra["steps"] == 3
    assert (tmp_path / "samples.png").stat().st_size > 1000
    assert (tmp_path / "samples" / "step_000003.png").is_file()
    assert not list(tmp_path.glob(".*.tmp"))  # atomic writes left no temporaries
    # a second run with more epochs picks up at step 3
    cfg2 = train.config("double_colored_mnist", batch_size=8, epochs=2, recipe="composite")
    train.train(cfg2, tmp_path, progress=False, resume=True, data=_data(24))
    assert pycgn.load(path).info.extra["steps"] == 6


def test_mask_entropy_is_largest_at_one_half():
    t = train.Trainer(train.config("colored_mnist", batch_size=4), data=_data(8))
    m = torch.tensor([1e-4, 0.1, 0.5, 0.9])
    h = -(m * m.log() + (1 - m) * (1 - m).log())
    assert h.argmax() == 2 and h[0] < 0.01
    assert t.cfg.mask_weight == 0.1


def test_random_features_fixed_and_gram_symmetric():
    f1, f2 = train.RandomFeatures(), train.RandomFeatures()
    x = torch.randn(3, 3, 32, 32)
    for a, b in zip(f1(x), f2(x)):
        assert torch.equal(a, b)
    feats = f1(x)
    assert [f.shape[1] for f in feats] == list(train.RandomFeatures.widths)
    g = train.gram(feats[1])
    assert g.shape == (3, 64, 64) and torch.allclose(g, g.transpose(1, 2))
    assert not any(p.requires_grad for p in f1.parameters())


@pytest.mark.parametrize("shape", [(7, 5), (16, 9), (3, 3, 3, 3)])
def test_orthogonal_init(shape):
    lin = torch.nn.Linear(shape[1], shape[0]) if len(shape) == 2 else torch.nn.Conv2d(3, 3, 3)
    train.init_weights(lin, "orthogonal", 0.1, seed=3)
    w = lin.weight.reshape(lin.weight.shape[0], -1)
    small = w @ w.T if w.shape[0] <= w.shape[1] else w.T @ w
    assert torch.allclose(small, 0.01 * torch.eye(small.shape[0]), atol=1e-6)
    with pytest.raises(ValueError, match="init"):
        train.init_weights(lin, "xavier", 0.1, seed=3)


def test_config_errors():
    with pytest.raises(ValueError, match="variant"):
        train.config("mnist")
    assert train.config("wildlife_mnist").disc == "conv"
    assert train.config("colored_mnist", lr=1e-3).lr == 1e-3
    with pytest.raises(ValueError, match="recipe"):
        train.trainer_class(train.config("colored_mnist", recipe="vgg"))
    with pytest.raises(ValueError, match="texture_groups"):
        train.ComponentTrainer(train.config("colored_mnist", texture_groups=1), data=_parts())
    with pytest.raises(ValueError, match="texture_groups"):
        train.ComponentTrainer(train.config("colored_mnist", texture_groups=0, texture_diversity=1.0), data=_parts())
    for name, bad in (("mask_tv", -0.1), ("mask_speckle", float("nan")), ("diversity_target", float("inf")),
                      ("texture_diversity", "1")):
        with pytest.raises(ValueError, match=f"{name} must be a finite number >= 0"):
            train.ComponentTrainer(train.config("colored_mnist", **{name: bad}), data=_parts())


def test_cli_bad_arguments(tmp_path, capsys):
    assert cli(["train", "--variant", "colored_mnist", "--out", str(tmp_path), "--epochs", "0"]) == 2
    err = capsys.readouterr().err
    assert "--epochs" in err and len(err.strip().splitlines()) == 1
    assert cli(["train", "--variant", "colored_mnist", "--out", str(tmp_path), "--minutes", "-1"]) == 2
    with pytest.raises(SystemExit):
        cli(["train", "--variant", "svhn", "--out", str(tmp_path)])


def test_cli_ends_with_a_summary_and_how_to_resume(tmp_path, capsys):
    assert cli(["train", "--variant", "colored_mnist", "--out", str(tmp_path), "--minutes", "0.01",
                "--save-every", "1000", "--threads", "1"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("trained colored_mnist: step ") and " of 7500 (" in out[0], out
    assert out[1] == f"to continue: pycgn train --variant colored_mnist --out {tmp_path} --resume", out
    assert out[-1] == str(tmp_path / "colored_mnist.pt")


def test_cli_bg_net_option(tmp_path, capsys):
    """--bg-net picks the background net, the checkpoint says which, and pycgn.load builds it."""
    assert cli(["train", "--variant", "colored_mnist", "--bg-net", "spatial", "--out", str(tmp_path),
                "--minutes", "0.01", "--save-every", "1000", "--threads", "1", "--quiet"]) == 0
    model = pycgn.load(tmp_path / "colored_mnist.pt")
    assert model.bg_net == "spatial" and model.info.extra["config"]["bg_net"] == "spatial"
    assert train.config("wildlife_mnist").bg_net == "periodic" and train.config("colored_mnist").bg_net == "dense"
    with pytest.raises(SystemExit):
        cli(["train", "--variant", "colored_mnist", "--bg-net", "conv", "--out", str(tmp_path)])
    assert "invalid choice: 'conv'" in capsys.readouterr().err
