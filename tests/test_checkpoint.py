import pytest
import torch

import pycgn
from pycgn import CheckpointError
from pycgn.checkpoint import weights_sha256
from conftest import published


def test_save_and_load_roundtrip(tmp_path, random_model):
    p = pycgn.save(random_model, tmp_path / "m.pt", variant="colored_mnist", extra={"note": "test"})
    m = pycgn.load(p)
    assert m.info.variant == "colored_mnist" and m.info.image_size == 32
    assert m.info.class_names == tuple(str(i) for i in range(10))
    assert m.info.sha256 == weights_sha256(random_model.state_dict())
    assert m.info.extra == {"note": "test"} and m.info.pycgn_version == pycgn.__version__
    for k, v in random_model.state_dict().items():
        assert torch.equal(m.state_dict()[k], v)
    assert not list(tmp_path.glob(".*tmp")), "temporary file left behind"


def test_sha256_depends_on_every_weight(random_model):
    sd = random_model.state_dict()
    before = weights_sha256(sd)
    sd["f_text2.10.bias"][1] += 1e-6
    assert weights_sha256(sd) != before


def test_missing_file():
    with pytest.raises(FileNotFoundError, match="nope.pt"):
        pycgn.load("/tmp/definitely/nope.pt")


def test_unknown_name():
    with pytest.raises(ValueError, match="model must be one of colored_mnist"):
        pycgn.load("imaginary_mnist")


def test_directory_is_not_a_checkpoint(tmp_path):
    with pytest.raises(CheckpointError, match="is not a file"):
        pycgn.load(tmp_path)


def test_non_checkpoint_file(tmp_path):
    p = tmp_path / "notes.pt"
    p.write_text("hello, I am text")
    with pytest.raises(CheckpointError, match="notes.pt: not a readable checkpoint"):
        pycgn.load(p)


def test_tensor_dict_of_another_model(tmp_path):
    p = tmp_path / "other.pt"
    torch.save({"fc.weight": torch.zeros(2, 2)}, p)
    with pytest.raises(CheckpointError) as e:
        pycgn.load(p)
    msg = str(e.value)
    assert "other.pt" in msg and "missing" in msg and "label_emb.weight" in msg and "fc.weight" in msg


def test_not_a_state_dict(tmp_path):
    p = tmp_path / "list.pt"
    torch.save([1, 2, 3], p)
    with pytest.raises(CheckpointError, match="list.pt: not a CGN checkpoint"):
        pycgn.load(p)


def test_wrong_shapes_are_reported(tmp_path, random_model):
    sd = random_model.state_dict()
    sd["label_emb.weight"] = torch.zeros(10, 11)
    p = tmp_path / "bad_shape.pt"
    torch.save(sd, p)
    with pytest.raises(CheckpointError, match="bad_shape.pt.*label_emb.weight"):
        pycgn.load(p)


def test_truncated_and_corrupt_files(tmp_path, random_model):
    good = pycgn.save(random_model, tmp_path / "good.pt")
    data = good.read_bytes()
    (tmp_path / "trunc.pt").write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="trunc.pt"):
        pycgn.load(tmp_path / "trunc.pt")
    # flip bytes inside the stored weights: the recorded sha256 no longer matches
    corrupt = bytearray(data)
    pos = len(corrupt) // 2
    for i in range(pos, pos + 64):
        corrupt[i] ^= 0xFF
    (tmp_path / "corrupt.pt").write_bytes(bytes(corrupt))
    with pytest.raises(CheckpointError, match="corrupt.pt"):
        pycgn.load(tmp_path / "corrupt.pt")


def test_pickled_code_is_refused(tmp_path):
    import pickle

    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    p = tmp_path / "evil.pt"
    with open(p, "wb") as f:
        pickle.dump({"x": Evil()}, f)
    with pytest.raises(CheckpointError, match="evil.pt"):
        pycgn.load(p)


def test_published_checkpoint_by_path():
    m = pycgn.load(published("colored_mnist"))
    assert m.info.variant == "colored_mnist" and m.info.pycgn_version == "published"
    assert not m.training


def test_saved_files_get_the_usual_mode(tmp_path, random_model):
    from pycgn import _io
    p = pycgn.save(random_model, tmp_path / "mode.pt")
    assert p.stat().st_mode & 0o777 == 0o666 & ~_io._UMASK


@pytest.mark.parametrize("variant", ["colored_mnist", "double_colored_mnist", "wildlife_mnist"])
def test_model_card_names_the_shipped_weights(variant):
    """The model card's sha256 column is the shipped file's: retraining means updating the card."""
    import re
    from pathlib import Path
    card = (Path(pycgn.__file__).parent / "weights" / "MODEL_CARD.md").read_text()
    cells = [line.split("|")[-2].strip() for line in card.splitlines() if line.startswith(f"| {variant} |")]
    assert [c for c in cells if re.fullmatch("[0-9a-f]{64}", c)] == [pycgn.load(variant).info.sha256]
