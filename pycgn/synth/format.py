"""The shard format, shared by the writer (``pycgn synth``) and the reader (``SynthDataset``).

What a dataset folder holds and how each shard is encoded: the manifest's kind and version, the
label and input arrays, shard and sample names (``Plan``), the bytes of npz, webdataset and png
shards, and the sha256 the manifest records for each shard. Nothing here touches the folder.
"""
from __future__ import annotations

import hashlib
import io
import json
import os
import tarfile
import zipfile
from pathlib import Path

import numpy as np

FORMATS = ("npz", "webdataset", "png")
MANIFEST = "manifest.json"
KIND = "pycgn-synth"
FORMAT_VERSION = 1
LABELS = ("index", "shape", "texture", "bg")
INPUTS = ("u_shape", "u_texture", "u_bg", "fg_offset", "bg_offset")
CSV_COLUMNS = ("file", "index", "shape", "texture", "bg", "fg_offset_y", "fg_offset_x", "bg_offset_y",
               "bg_offset_x")
ARRAYS = {"images": "uint8 (N, H, W, 3)", **{name: "int64 (N,)" for name in LABELS},
          "u_shape": "float32 (N, latent)", "u_texture": "float32 (N, latent)", "u_bg": "float32 (N, latent)",
          "fg_offset": "int64 (N, 2) (dy, dx)", "bg_offset": "int64 (N, 2) (dy, dx)"}
EXTENSIONS = {"npz": ".npz", "webdataset": ".tar", "png": ""}
_ZIP_TIME = (1980, 1, 1, 0, 0, 0)  # fixed member times: same data, same bytes


def key_width(n: int) -> int:
    """Digits of a sample's key (``000000042.png``) in a dataset of ``n``: at least 9, so keys sort."""
    return max(9, len(str(max(n - 1, 0))))


def sample_key(index: int, width: int) -> str:
    return f"{index:0{width}d}"


class Plan:
    """Which sample indices go to which shard file, and the names of shards and samples."""

    def __init__(self, n: int, shard_size: int, fmt: str):
        self.n, self.shard_size, self.fmt = n, shard_size, fmt
        self.shards = -(-n // shard_size)
        self._width = max(5, len(str(max(self.shards - 1, 0))))
        self.key_width = key_width(n)

    def range(self, i: int) -> tuple[int, int]:
        start = i * self.shard_size
        return start, min(self.shard_size, self.n - start)

    def name(self, i: int) -> str:
        return f"shard-{i:0{self._width}d}{EXTENSIONS[self.fmt]}"

    def key(self, index: int) -> str:
        return sample_key(index, self.key_width)


# ---------------------------------------------------------------------------------------------
# Encoding: one shard's arrays -> {relative file name: bytes} ("" is the shard file itself)

def _npz(arrays: dict, names) -> memoryview:
    """An uncompressed npz (``np.load`` reads it, ``SynthDataset`` memory-maps it) with fixed member
    times, so the same arrays give the same bytes. Arrays are written from their own memory: the
    shard exists once more in memory, not three times."""
    f = io.BytesIO()
    with zipfile.ZipFile(f, "w", compression=zipfile.ZIP_STORED, allowZip64=True) as zf:
        for name in names:
            arr = np.ascontiguousarray(arrays[name])
            info = zipfile.ZipInfo(f"{name}.npy", date_time=_ZIP_TIME)
            info.external_attr = 0o644 << 16
            with zf.open(info, "w", force_zip64=arr.nbytes > 1 << 30) as w:
                np.lib.format.write_array_header_1_0(w, np.lib.format.header_data_from_array_1_0(arr))
                w.write(memoryview(arr).cast("B"))
    return f.getbuffer()


def _png(img: np.ndarray) -> bytes:
    from PIL import Image
    f = io.BytesIO()
    Image.fromarray(img).save(f, format="PNG", compress_level=6)
    return f.getvalue()


def _sample_json(arrays: dict, j: int) -> bytes:
    rec = {name: int(arrays[name][j]) for name in LABELS}
    for name in ("u_shape", "u_texture", "u_bg"):
        rec[name] = [float(v) for v in arrays[name][j]]  # float32 -> float64 repr: exact round trip
    for name in ("fg_offset", "bg_offset"):
        rec[name] = [int(v) for v in arrays[name][j]]
    return json.dumps(rec, separators=(",", ":")).encode()


def encode(fmt: str, arrays: dict, plan: Plan) -> dict:
    """{relative name: bytes-like}; ``""`` names the shard file itself (npz, tar)."""
    if fmt == "npz":
        return {"": _npz(arrays, ("images",) + LABELS + INPUTS)}
    index = arrays["index"]
    if fmt == "webdataset":
        f = io.BytesIO()
        with tarfile.open(fileobj=f, mode="w", format=tarfile.USTAR_FORMAT) as tf:
            for j in range(len(index)):
                key = plan.key(int(index[j]))
                for ext, data in (("png", _png(arrays["images"][j])), ("json", _sample_json(arrays, j))):
                    ti = tarfile.TarInfo(f"{key}.{ext}")
                    ti.size, ti.mtime, ti.mode = len(data), 0, 0o644
                    tf.addfile(ti, io.BytesIO(data))
        return {"": f.getbuffer()}
    files, rows = {}, [",".join(CSV_COLUMNS)]
    for j in range(len(index)):
        name = f"{plan.key(int(index[j]))}.png"
        files[name] = _png(arrays["images"][j])
        fo, bo = arrays["fg_offset"][j], arrays["bg_offset"][j]
        rows.append(",".join(map(str, (name, *(int(arrays[k][j]) for k in LABELS), *fo, *bo))))
    files["labels.csv"] = ("\n".join(rows) + "\n").encode()
    files["inputs.npz"] = _npz(arrays, ("index",) + INPUTS)
    return files


# ---------------------------------------------------------------------------------------------
# Checksums: what the manifest records for each shard

def _listing_sha256(digests) -> str:
    """sha256 of a ``sha256sum`` listing of (file digest, name) pairs, sorted by name."""
    lines = "".join(f"{digest}  {name}\n" for name, digest in sorted(digests))
    return hashlib.sha256(lines.encode()).hexdigest()


def files_sha256(files: dict) -> str:
    """sha256 of a shard: of its bytes for a file; for a folder, of its ``sha256sum`` listing."""
    if "" in files:
        return hashlib.sha256(files[""]).hexdigest()
    return _listing_sha256((k, hashlib.sha256(v).hexdigest()) for k, v in files.items())


def shard_sha256(path) -> str:
    """sha256 of a shard on disk, as recorded in the manifest (see ``files_sha256``). Links are
    not followed (``OSError``): a shard is plain files, and a link could lead out of its folder."""
    path = Path(path)
    if path.is_dir() and not path.is_symlink():
        return _listing_sha256((p.name, _file_sha256(p)) for p in path.iterdir())
    return _file_sha256(path)


def open_inside(path) -> io.BufferedReader:
    """Open a file of a dataset for reading without following a link (``OSError`` if it is one)."""
    return open(os.open(path, os.O_RDONLY | os.O_NOFOLLOW), "rb")


def _file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open_inside(path) as f:
        while chunk := f.read(1 << 22):
            h.update(chunk)
    return h.hexdigest()


def read_record(path: Path, kind: str, foreign: str) -> dict:
    """A JSON record pycgn wrote (its ``kind`` is ``kind``); a ValueError naming the file otherwise,
    ending in ``foreign`` when the file is JSON but not such a record."""
    try:
        data = json.loads(Path(path).read_text())
    except ValueError as e:
        raise ValueError(f"{path}: not valid JSON ({e})") from None
    if not isinstance(data, dict) or data.get("kind") != kind:
        raise ValueError(f"{path}: {foreign}")
    return data
