"""``SynthDataset``: a torch Dataset over a folder written by ``pycgn synth`` (any format).

The manifest is checked when the dataset is opened: the run must be complete, its shards must
cover samples 0..n-1 exactly, and (``verify=True``) each shard's sha256 must match. Samples are
read lazily: npz images through a memory map of the (uncompressed) member, tar members by their
offsets, PNG files by name, so opening a dataset of millions of images costs little memory.
"""
from __future__ import annotations

import bisect
import csv
import errno
import io
import json
import struct
import tarfile
import zipfile
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from .format import KIND, LABELS, MANIFEST, key_width, open_inside, read_record, sample_key, shard_sha256


class SynthDataset(Dataset):
    """Samples of a ``pycgn synth`` folder: ``(image, labels)``.

    ``image``: uint8 tensor (3, H, W) (or ``transform(image)``); ``labels``: a dict of ints
    ``shape``, ``texture``, ``bg`` and ``index`` (the sample number, which with the manifest's
    seed regenerates the sample). ``verify``: check every shard's sha256 against the manifest
    (reads the whole dataset once).
    """

    def __init__(self, root, verify: bool = True, transform=None):
        self.root = Path(root)
        path = self.root / MANIFEST
        if not path.is_file():
            raise FileNotFoundError(f"{self.root}: no {MANIFEST}; not a pycgn synth folder")
        m = read_record(path, KIND, "not a pycgn synth manifest")
        if not m.get("complete"):
            raise ValueError(f"{self.root}: the synth run is not complete; rerun its command to finish it "
                             f"({m.get('command', '?')})")
        self.manifest = m
        self.format = m["format"]
        self.transform = transform
        entries = m.get("shards")
        if not isinstance(entries, list) or not all(
                isinstance(s, dict) and type(s.get("start")) is int and type(s.get("count")) is int
                and isinstance(s.get("sha256"), str) for s in entries):
            raise ValueError(f"{path}: 'shards' must be a list of {{name, start, count, sha256}} records")
        shards = sorted(entries, key=lambda s: s["start"])
        at = 0
        for s in shards:
            if s["start"] != at or s["count"] < 1:
                raise ValueError(f"{path}: shards do not cover samples 0..{m['n'] - 1} (gap or overlap at {at})")
            at += s["count"]
        if at != m["n"]:
            raise ValueError(f"{path}: shards hold {at} samples, the manifest says n={m['n']}")
        self._paths = [self._shard_path(s["name"]) for s in shards]
        for s, p in zip(shards, self._paths):
            if not p.exists():
                raise FileNotFoundError(f"{self.root}: shard {s['name']} is missing")
            if verify and _no_links(shard_sha256, p) != s["sha256"]:
                raise ValueError(f"{self.root}: shard {s['name']} does not match its sha256 in the manifest "
                                 f"(corrupt or changed); rerun the synth command to remake it")
        self.shards = shards
        self._starts = [s["start"] for s in shards]
        self._key_width = key_width(m["n"])
        self._cache: dict[int, object] = {}  # per-shard readers, made on first use (per process)
        self._labels = None
        if self.format in ("npz", "png"):
            self._labels = self._read_labels()

    def _shard_path(self, name) -> Path:
        """Where the manifest's shard ``name`` is; only a file or folder directly in the dataset
        folder is read (no ``..``, no absolute path, no link leading elsewhere)."""
        if not isinstance(name, str) or not name:
            raise ValueError(f"{self.root / MANIFEST}: a shard name must be a file name, got {name!r}")
        real = (self.root / name).resolve()
        if real.parent != self.root.resolve():
            raise ValueError(f"{self.root}: shard {name!r} is outside the dataset folder; refusing to read it")
        return real

    def __len__(self) -> int:
        return int(self.manifest["n"])

    def _locate(self, i: int) -> tuple[int, int]:
        n = len(self)
        if isinstance(i, bool) or not isinstance(i, (int, np.integer)):
            raise TypeError(f"index must be an int, got {type(i).__name__}")
        i = int(i)
        if i < 0:
            i += n
        if not 0 <= i < n:
            raise IndexError(f"index {i} out of range for a dataset of {n}")
        s = bisect.bisect_right(self._starts, i) - 1
        return s, i - self._starts[s]

    def _read_labels(self) -> np.ndarray:
        """(n, 4) int64 columns ``LABELS``, read once (small next to the images)."""
        out = np.empty((len(self), len(LABELS)), dtype=np.int64)
        for s, p in zip(self.shards, self._paths):
            rows = slice(s["start"], s["start"] + s["count"])
            if self.format == "npz":
                with np.load(p, allow_pickle=False) as z:
                    for c, name in enumerate(LABELS):
                        out[rows, c] = z[name]
            else:
                text = _no_links(_read_bytes, p / "labels.csv").decode()
                table = list(csv.DictReader(io.StringIO(text, newline="")))
                if len(table) != s["count"]:
                    raise ValueError(f"{p / 'labels.csv'}: {len(table)} rows, expected {s['count']}")
                for c, name in enumerate(LABELS):
                    out[rows, c] = [int(r[name]) for r in table]
        return out

    def _npz_images(self, s: int) -> np.ndarray:
        images = self._cache.get(s)
        if images is None:
            images = _npz_member_memmap(self._paths[s], "images.npy")
            self._cache[s] = images
        return images

    def _tar_index(self, s: int) -> dict:
        index = self._cache.get(s)
        if index is None:
            with tarfile.open(self._paths[s]) as tf:
                index = {m.name: (m.offset_data, m.size) for m in tf.getmembers()}
            self._cache[s] = index
        return index

    def _tar_read(self, s: int, name: str) -> bytes:
        offset, size = self._tar_index(s)[name]
        with open(self._paths[s], "rb") as f:
            f.seek(offset)
            return f.read(size)

    def __getitem__(self, i):
        s, j = self._locate(i)
        index = self._starts[s] + j
        if self.format == "npz":
            image = np.array(self._npz_images(s)[j])
            labels = {name: int(v) for name, v in zip(LABELS, self._labels[index])}
        elif self.format == "webdataset":
            key = sample_key(index, self._key_width)
            image = _decode_png(self._tar_read(s, f"{key}.png"))
            rec = json.loads(self._tar_read(s, f"{key}.json"))
            labels = {name: int(rec[name]) for name in LABELS}
        else:
            key = sample_key(index, self._key_width)
            image = _decode_png(_no_links(_read_bytes, self._paths[s] / f"{key}.png"))
            labels = {name: int(v) for name, v in zip(LABELS, self._labels[index])}
        image = torch.from_numpy(image).permute(2, 0, 1)
        if self.transform is not None:
            image = self.transform(image)
        return image, labels

    def __getstate__(self):
        # memory maps and indexes are rebuilt in each DataLoader worker
        state = self.__dict__.copy()
        state["_cache"] = {}
        return state


def _read_bytes(path: Path) -> bytes:
    with open_inside(path) as f:
        return f.read()


def _no_links(read, path: Path):
    """``read(path)``, where a link (never followed) is refused: it could lead out of the folder."""
    try:
        return read(path)
    except OSError as e:
        if e.errno != errno.ELOOP:
            raise
        raise ValueError(f"{path} is a link, which could lead outside the dataset folder; refusing to "
                         f"read it") from None


def _decode_png(data: bytes) -> np.ndarray:
    from PIL import Image
    with Image.open(io.BytesIO(data)) as im:
        return np.array(im.convert("RGB"))


def _npz_member_memmap(path: Path, member: str) -> np.ndarray:
    """A read-only memory map of an uncompressed npz member; a plain load if it is compressed."""
    with zipfile.ZipFile(path) as zf:
        info = zf.getinfo(member)
    if info.compress_type != zipfile.ZIP_STORED:
        with np.load(path, allow_pickle=False) as z:
            return z[member[:-4]]
    with open(path, "rb") as f:
        f.seek(info.header_offset)
        header = f.read(30)
        if header[:4] != b"PK\x03\x04":
            raise ValueError(f"{path}: bad zip entry {member}")
        name_len, extra_len = struct.unpack("<HH", header[26:30])
        f.seek(info.header_offset + 30 + name_len + extra_len)
        version = np.lib.format.read_magic(f)
        if version == (1, 0):
            shape, fortran, dtype = np.lib.format.read_array_header_1_0(f)
        else:
            shape, fortran, dtype = np.lib.format.read_array_header_2_0(f)
        offset = f.tell()
    if fortran or dtype.hasobject:
        with np.load(path, allow_pickle=False) as z:
            return z[member[:-4]]
    return np.memmap(path, dtype=dtype, mode="r", offset=offset, shape=shape)
