"""Export the three CGN mechanisms of any model to ONNX, TorchScript or AOTInductor packages, and
read such exports back.

An export is a folder holding one file per mechanism and the sidecar ``pycgn_export.json``::

    shape.onnx       texture.onnx       background.onnx          (format="onnx", opset 20)
    shape.torchscript.pt  texture.torchscript.pt  background.torchscript.pt  (format="torchscript")
    shape.pt2        texture.pt2        background.pt2           (format="aoti")

An ``aoti`` package is ``torch.export`` + AOTInductor (freezing on): native code for one device
(the CPU's vector ISA, or one GPU architecture), in one precision, that only the torch version which
compiled it can load. The sidecar records ``precision``, ``torch_version``, ``device`` and ``arch``;
each package records the same in its metadata (``pycgn.*`` keys), read from the archive before the
package is loaded. A ``bfloat16`` or ``float16`` package computes in that type inside and takes and
returns float32 like every other file.

Each file maps ``u`` float32 (batch, latent) and ``y`` (int64 (batch,) class ids, or for the
ImageNet CGN optionally float32 class vectors) to one image (batch, C, H, W) with a dynamic
batch. Sampling, the texture crop and compositing stay in pycgn (random ops do not export). The
sidecar is written last, so a folder with a sidecar is complete; every file is written under a
temporary name and renamed.

What differs between models (their mechanisms, example inputs, class input and extra sidecar
fields such as the ImageNet truncation) comes from the model's ``export_spec()``; everything
else is written here, once, for every model.

Each model file also records the weights sha256 and its mechanism (ONNX ``metadata_props``,
TorchScript extra file ``pycgn.json``, AOTInductor metadata), so a file moved into the wrong folder
is caught.

Why one module of ~650 lines: the three formats share the sidecar (written and read here), the
per-file record check and the error conventions of the readers; a format's writer and reader sit
side by side so that they change together.
"""
from __future__ import annotations

import contextlib
import copy
import io
import json
import logging
import math
import os
import warnings
import zipfile
from pathlib import Path

import torch

from . import _checks
from ._checks import PRECISIONS
from ._io import atomic_write_bytes
from ._version import __version__
from .models import ImagenetCGN, MnistCGN
from .models.base import MECHANISMS, CheckpointError, ExportSpec, weights_sha256

FORMAT = "pycgn-export"
FORMAT_VERSION = 1
SIDECAR = "pycgn_export.json"
OPSET = 20  # the torch.export-based exporter; the legacy one cannot keep the batch dynamic
CLAMP = [0.0001, 0.9999]
FORMATS = ("onnx", "torchscript", "aoti")
OUTPUT_NAMES = {"shape": "mask", "texture": "foreground", "background": "background"}
SUFFIX = {"onnx": ".onnx", "torchscript": ".torchscript.pt", "aoti": ".pt2"}
EXTRA_FILE = "pycgn.json"  # TorchScript extra file with the weights hash and the mechanism
INPUT_NAMES = ("u", "y")
MODELS = (MnistCGN, ImagenetCGN)
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
AOTI_META = "pycgn."  # prefix of pycgn's keys in an AOTInductor package's metadata
# CPU vector ISAs as torch.backends.cpu.get_cpu_capability() names them, weakest first: a package
# compiled for one runs on a CPU with it or a later one (an AVX-512 package would crash on AVX2)
CPU_ISAS = ("DEFAULT", "AVX2", "AVX512")


class ExportError(CheckpointError):
    """An exported file that is missing, corrupt or incompatible; the message names the file."""


def file_name(mechanism: str, fmt: str) -> str:
    return mechanism + SUFFIX[fmt]


def _check_format(fmt) -> str:
    if fmt not in FORMATS:
        raise ValueError(f"format must be one of {', '.join(FORMATS)}, got {fmt!r}")
    return fmt


def _as_model(model):
    if isinstance(model, MODELS):
        return model
    if isinstance(model, (str, os.PathLike)):
        from .checkpoint import load
        return load(model)
    raise TypeError(f"model must be an MnistCGN or ImagenetCGN, a shipped model's name or a checkpoint "
                    f"path, got {type(model).__name__}")


def _cpu_float32(model):
    """The model as the exporters need it: CPU, float32, eval. Files are device-neutral, and the
    caller's model is left untouched (copied only when it is elsewhere: an ImageNet CGN is ~1 GB)."""
    p = next(model.parameters())
    if model.training or p.device.type != "cpu" or p.dtype != torch.float32:
        cpu = copy.deepcopy(model).cpu().float()
        if hasattr(model, "info"):
            cpu.info = model.info
        model = cpu
    return model.eval()


def device_arch(device="cpu") -> str:
    """What an ``aoti`` package compiled on ``device`` is specific to: the CPU's vector ISA
    (``"AVX512"``, ``"AVX2"``, ...) or the GPU's architecture (``"sm_90"``)."""
    device = torch.device(device)
    if device.type == "cuda":
        major, minor = torch.cuda.get_device_capability(device)
        return f"sm_{major}{minor}"
    return torch.backends.cpu.get_cpu_capability()


def _arch_runs_here(arch: str, device: torch.device) -> bool:
    here = device_arch(device)
    if device.type == "cuda" or arch not in CPU_ISAS or here not in CPU_ISAS:
        return arch == here
    return CPU_ISAS.index(arch) <= CPU_ISAS.index(here)


def sidecar_for(model, fmt: str, sha256: str | None = None, spec: ExportSpec | None = None,
                aoti: dict | None = None, **options) -> dict:
    """The sidecar of an export of ``model`` (key order is part of the format, for humans)."""
    spec = spec or model.export_spec(**options)
    info = getattr(model, "info", None)
    size = model.image_size
    side = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "runtime": fmt,
        "kind": model.kind,
        "variant": getattr(info, "variant", "custom"),
        "weights_sha256": sha256 or weights_sha256(model.state_dict()),
        "pycgn_version": __version__,
        "image_size": size,
        "latent_dim": model.latent_dim,
        "n_classes": model.n_classes,
        **spec.sidecar,
        "clamp": list(CLAMP),
    }
    if fmt == "onnx":
        side["opset"] = OPSET
    if fmt == "aoti":
        side.update(aoti)  # precision, torch_version, device, arch
    side["files"] = {m: file_name(m, fmt) for m in MECHANISMS}
    side["inputs"] = [{"name": "u", "shape": ["batch", model.latent_dim], "dtype": "float32"}, spec.y_input]
    side["outputs"] = {m: {"name": OUTPUT_NAMES[m], "shape": ["batch", 1 if m == "shape" else 3, size, size],
                           "dtype": "float32"} for m in MECHANISMS}
    return side


@contextlib.contextmanager
def _quiet():
    """The exporters print progress and warn about torchvision; keep a library call silent."""
    loggers = [logging.getLogger(n) for n in ("torch.onnx", "torch.export", "torch._export",
                                              "torch.fx.experimental.symbolic_shapes", "onnxscript")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore")
            yield
    finally:
        for lg, lv in zip(loggers, levels):
            lg.setLevel(lv)


def _onnx_bytes(mech: torch.nn.Module, example, output: str, meta: dict) -> bytes:
    import onnx
    batch = torch.export.Dim("batch", min=1)
    with _quiet():
        program = torch.onnx.export(mech, example, dynamo=True, opset_version=OPSET, verbose=False,
                                    input_names=list(INPUT_NAMES), output_names=[output],
                                    dynamic_shapes={"u": {0: batch}, "y": {0: batch}},
                                    external_data=False)
    proto = program.model_proto
    for k, v in meta.items():
        proto.metadata_props.add(key=f"pycgn_{k}", value=str(v))
    proto.producer_name, proto.producer_version = "pycgn", __version__
    onnx.checker.check_model(proto, full_check=True)
    return proto.SerializeToString()


def _torchscript_bytes(mech: torch.nn.Module, example, meta: dict) -> bytes:
    # Tracing keeps the batch dynamic: x.shape[0] in the reshape is recorded as aten::size.
    # Scripting cannot compile the reshape's star-unpacking. Not frozen: a plain traced
    # module loads in any libtorch and keeps the eager numerics bit for bit.
    with _quiet(), torch.no_grad():
        traced = torch.jit.trace(mech, example, check_trace=False)
    buf = io.BytesIO()
    with _quiet():
        torch.jit.save(traced, buf, _extra_files={EXTRA_FILE: json.dumps(meta)})
    return buf.getvalue()


class _Cast(torch.nn.Module):
    """A mechanism computing in a lower precision, float32 in and out, so every caller (Python or
    C++) sees the same contract whatever the package's precision."""

    def __init__(self, mech: torch.nn.Module, dtype: torch.dtype):
        super().__init__()
        self.mech, self.dtype = mech, dtype

    def forward(self, u: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        y = y.to(self.dtype) if y.is_floating_point() else y  # ImageNet's class vectors
        return self.mech(u.to(self.dtype), y).to(torch.float32)


def _aoti_package(mech: torch.nn.Module, example, meta: dict, path: Path) -> None:
    """Compile one mechanism into the AOTInductor package ``path`` (written under a temporary
    name: AOTInductor insists on a ``.pt2`` suffix, so ``atomic_path``'s ``.tmp`` will not do)."""
    batch = torch.export.Dim("batch", min=1)
    tmp = path.with_name(f".{path.stem}.{os.getpid()}.tmp.pt2")
    try:
        with _quiet(), torch.no_grad():
            program = torch.export.export(mech, example, dynamic_shapes={"u": {0: batch}, "y": {0: batch}})
            torch._inductor.aoti_compile_and_package(
                program, package_path=str(tmp),
                inductor_configs={"freezing": True,
                                  "aot_inductor.metadata": {AOTI_META + k: str(v) for k, v in meta.items()}})
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


# Compile time per mechanism, measured on the project's 2-core machine while busy (torch 2.13):
# about 40 s for an MNIST net (14 leaf modules); the graph's size, not its width, sets it. The
# first compile on a machine also builds AOTInductor's precompiled headers (~2 min, kept in
# torch's inductor cache, e.g. /tmp/torchinductor_<user>).
COMPILE_S_BASE, COMPILE_S_PER_LEAF = 12.0, 2.0


def aoti_compile_estimate(model) -> str:
    """Roughly how long compiling ``model``'s three packages takes, in words, for status lines."""
    leaves = sum(1 for m in model.modules() if not any(True for _ in m.children()))
    s = 3 * COMPILE_S_BASE + COMPILE_S_PER_LEAF * leaves
    return (f"roughly {max(1, round(s / 60))} min on 2 cores (+2 min for the first compile on a machine), "
            f"less on more")


def aoti_fields(precision, device) -> dict:
    """The sidecar fields of an ``aoti`` export, checked: the package is compiled for ``device``."""
    device = torch.device(device)
    if device.type not in ("cpu", "cuda"):
        raise ValueError(f"device must be 'cpu' or 'cuda' for an aoti export, got {str(device)!r}")
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {device}: torch sees no CUDA device; a CUDA package is compiled on a "
                         f"machine with the GPU it will run on")
    _checks.precision(precision, device)
    return {"precision": precision, "torch_version": torch.__version__, "device": device.type,
            "arch": device_arch(device)}


def _aoti_mechanisms(spec: ExportSpec, precision: str, device: torch.device):
    """The mechanisms to compile and their example inputs, in ``precision`` on ``device``."""
    dtype = DTYPES[precision]
    if dtype == torch.float32 and device.type == "cpu":
        mechs = spec.mechanisms
    else:
        # copies: the float32 model stays
        mechs = {k: _Cast(copy.deepcopy(m).to(device=device, dtype=dtype).eval(), dtype)
                 for k, m in spec.mechanisms.items()}
    u, y = spec.example
    return mechs, (u.to(device, torch.float32), y.to(device))


def prepare_out_dir(out_dir) -> Path:
    """The export folder as a Path, created if needed; a clear error for a non-path or a file."""
    if not isinstance(out_dir, (str, os.PathLike)):
        raise TypeError(f"out_dir must be a path, got {type(out_dir).__name__}")
    out = Path(out_dir).expanduser()
    if out.exists() and not out.is_dir():
        raise NotADirectoryError(f"out_dir {out}: exists and is not a folder")
    out.mkdir(parents=True, exist_ok=True)
    return out


def export(model, out_dir, format: str = "onnx", precision: str = "float32", device="cpu", **options) -> Path:
    """Write the shape, texture and background generators of ``model`` to ``out_dir``.

    ``model``: an ``MnistCGN`` or ``ImagenetCGN`` (any device), or a shipped model's name /
    checkpoint path. ``format``: ``"onnx"`` (opset 20, checked with
    ``onnx.checker(full_check=True)``), ``"torchscript"`` (traced) or ``"aoti"`` (AOTInductor
    packages, about 1-3 minutes of compiling per mechanism of an MNIST CGN on 2 cores).
    ``precision`` (``"float32"``, ``"bfloat16"``, or ``"float16"`` on CUDA) and ``device`` (the
    compile target, ``"cpu"`` or ``"cuda"``) apply to ``"aoti"`` only. ``options`` go to the model's
    ``export_spec``: for the ImageNet CGN ``truncation`` (default: the model's; fixed in the files,
    it selects the batch-norm statistics) and ``class_input`` (``"ids"`` int64 (N,), or
    ``"vector"`` float32 (N, n_classes) for interpolations). Returns ``out_dir`` as a Path; its
    ``pycgn_export.json`` describes it.
    """
    fmt = _check_format(format)
    if fmt != "aoti" and (precision != "float32" or str(device) != "cpu"):
        raise ValueError(f"precision and device apply to the aoti format only; {fmt} files are float32 "
                         f"and device-neutral (got precision={precision!r}, device={str(device)!r})")
    aoti = aoti_fields(precision, device) if fmt == "aoti" else None
    model = _cpu_float32(_as_model(model))
    spec = model.export_spec(**options)  # checks the options before anything is written
    out = prepare_out_dir(out_dir)
    side = sidecar_for(model, fmt, spec=spec, aoti=aoti)
    if fmt == "aoti":
        mechs, example = _aoti_mechanisms(spec, precision, torch.device(device))
    stale = out / SIDECAR  # the folder is incomplete until the new sidecar lands
    if stale.exists():
        stale.unlink()
    for name, mech in spec.mechanisms.items():
        meta = {"weights_sha256": side["weights_sha256"], "mechanism": name,
                "format_version": FORMAT_VERSION, **spec.file_meta}
        if fmt == "aoti":
            meta.update(aoti)
            _aoti_package(mechs[name].eval(), example, meta, out / side["files"][name])
            continue
        if fmt == "onnx":
            data = _onnx_bytes(mech.eval(), spec.example, OUTPUT_NAMES[name], meta)
        else:
            data = _torchscript_bytes(mech.eval(), spec.example, meta)
        atomic_write_bytes(out / side["files"][name], data)
    atomic_write_bytes(out / SIDECAR, (json.dumps(side, indent=2) + "\n").encode())
    return out


def export_imagenet(model: ImagenetCGN, out_dir, format: str = "onnx", truncation: float | None = None,
                    class_input: str = "ids") -> Path:
    """``export`` for an ``ImagenetCGN`` only (kept for callers of pycgn 0.1)."""
    if not isinstance(model, ImagenetCGN):
        raise TypeError(f"model must be an ImagenetCGN, got {type(model).__name__}")
    return export(model, out_dir, format, truncation=truncation, class_input=class_input)


# ---------------------------------------------------------------------------------------------
# Reading an export back: every check names the offending file.

MAX_SIDECAR_BYTES = 1 << 20  # ~30 kB with ImageNet's 1000 class names: anything near 1 MB is not ours


def _field(path: Path, side: dict, name: str, kinds, required: bool = True):
    """``side[name]`` if it is of ``kinds`` (bool never counts as a number); else ExportError naming it."""
    if name not in side:
        if required:
            raise ExportError(f"{path}: field {name!r} is missing")
        return None
    v = side[name]
    if not isinstance(v, kinds) or (isinstance(v, bool) and bool not in (kinds if isinstance(kinds, tuple)
                                                                         else (kinds,))):
        want = " or ".join(k.__name__ for k in (kinds if isinstance(kinds, tuple) else (kinds,)))
        raise ExportError(f"{path}: field {name!r} must be {want}, found {type(v).__name__}")
    return v


def _check_fields(path: Path, side: dict) -> None:
    """Types and sizes of every field pycgn writes, so that no reader meets a surprise later."""
    for name in ("variant", "pycgn_version", "class_input"):
        _field(path, side, name, str, required=False)
    for name in ("image_size", "latent_dim", "n_classes"):
        v = _field(path, side, name, int, required=False)
        if v is not None and v < 1:
            raise ExportError(f"{path}: field {name!r} must be positive, found {v}")
    off = _field(path, side, "max_offset", int, required=False)
    if off is not None and off < 0:
        raise ExportError(f"{path}: field 'max_offset' must be >= 0, found {off}")
    chunk = _field(path, side, "cpu_chunk", int, required=False)
    if chunk is not None and not 1 <= chunk <= 1 << 16:
        raise ExportError(f"{path}: field 'cpu_chunk' must be 1..65536, found {chunk}")
    for name in ("truncation", "truncation_bound"):
        v = _field(path, side, name, (int, float), required=False)
        if v is not None and not (math.isfinite(v) and v > 0):
            raise ExportError(f"{path}: field {name!r} must be a positive number, found {v}")
    names = _field(path, side, "class_names", list, required=False)
    if names is not None and not all(isinstance(n, str) for n in names):
        raise ExportError(f"{path}: field 'class_names' must be a list of strings")
    clamp = _field(path, side, "clamp", list, required=False)
    if clamp is not None and not (len(clamp) == 2 and all(isinstance(c, (int, float)) and not isinstance(c, bool)
                                                          and math.isfinite(c) for c in clamp)):
        raise ExportError(f"{path}: field 'clamp' must be two numbers, found {clamp!r}")


def read_sidecar(export_dir, runtime: str | None = None, weights_sha256: str | None = None,
                 kind: str = MnistCGN.kind) -> dict:
    """The validated sidecar of ``export_dir`` with ``paths`` (mechanism -> absolute Path) added.

    ``runtime``: the format required (``"onnx"``/``"torchscript"``); ``weights_sha256``: the
    weights the export must come from; ``kind``: the model kind the caller can run. Raises
    ``ExportError`` naming the file at fault (and the field, for a malformed sidecar).
    """
    d = Path(export_dir)
    path = d / SIDECAR
    if not path.is_file():
        raise ExportError(f"{path}: missing; {d} is not a complete pycgn export "
                          f"(write one with `pycgn export`)")
    try:
        if path.stat().st_size > MAX_SIDECAR_BYTES:
            raise ExportError(f"{path}: {path.stat().st_size} bytes, too large for a pycgn export sidecar")
        side = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, RecursionError) as e:
        why = "nested too deeply" if isinstance(e, RecursionError) else e
        raise ExportError(f"{path}: not a readable pycgn export sidecar: {why}") from e
    if not isinstance(side, dict) or side.get("format") != FORMAT:
        raise ExportError(f"{path}: not a pycgn export sidecar (format {FORMAT!r} expected)")
    version = side.get("format_version")
    if version != FORMAT_VERSION or isinstance(version, bool):
        raise ExportError(f"{path}: format_version {version!r}, this pycgn reads {FORMAT_VERSION}")
    rt = side.get("runtime")
    if rt not in FORMATS:
        raise ExportError(f"{path}: runtime {rt!r}, expected one of {', '.join(FORMATS)}")
    if runtime is not None and rt != runtime:
        raise ExportError(f"{path}: holds a {rt} export, a {runtime} export was asked for")
    if rt == "onnx" and (side.get("opset") != OPSET or isinstance(side.get("opset"), bool)):
        raise ExportError(f"{path}: ONNX opset {side.get('opset')!r}, this pycgn reads opset {OPSET}")
    if rt == "aoti":
        for name, allowed in (("precision", PRECISIONS), ("device", ("cpu", "cuda"))):
            if side.get(name) not in allowed:
                raise ExportError(f"{path}: field {name!r} is {side.get(name)!r:.80}, expected one of "
                                  f"{', '.join(allowed)}")
        for name in ("torch_version", "arch"):
            _field(path, side, name, str)
    if side.get("kind") != kind:
        raise ExportError(f"{path}: model kind {side.get('kind')!r}, expected {kind!r}")
    _check_fields(path, side)
    inputs = _field(path, side, "inputs", list)
    if not all(isinstance(i, dict) for i in inputs):
        raise ExportError(f"{path}: field 'inputs' must be a list of objects")
    names = [i.get("name") for i in inputs]
    if names != list(INPUT_NAMES):
        raise ExportError(f"{path}: inputs {names!r:.200}, expected {list(INPUT_NAMES)}")
    outs = _field(path, side, "outputs", dict)
    for m in MECHANISMS:
        got = outs.get(m, {}).get("name") if isinstance(outs.get(m), dict) else None
        if got != OUTPUT_NAMES[m]:
            raise ExportError(f"{path}: output of {m} named {got!r:.200}, expected {OUTPUT_NAMES[m]!r}")
    sha = _field(path, side, "weights_sha256", str)
    if len(sha) != 64 or any(c not in "0123456789abcdef" for c in sha):
        raise ExportError(f"{path}: field 'weights_sha256' must be 64 hex digits, found {sha!r:.80}")
    if weights_sha256 is not None and sha != weights_sha256:
        raise ExportError(f"{path}: exported from weights {sha[:12]}..., not from the model's "
                          f"weights {weights_sha256[:12]}...")
    files = _field(path, side, "files", dict)
    paths = {}
    for m in MECHANISMS:
        f = files.get(m)
        if not isinstance(f, str) or Path(f).name != f or f in ("", ".", "..") or "\\" in f or "\0" in f:
            raise ExportError(f"{path}: files.{m} must be a file name in the folder, got {f!r:.200}")
        p = d / f
        if not p.is_file():
            raise ExportError(f"{p}: missing ({m} generator of the export {path})")
        paths[m] = p
    side["paths"] = paths
    return side


def _check_meta(p: Path, meta, mechanism: str, sha: str) -> None:
    if not isinstance(meta, dict):
        raise ExportError(f"{p}: its pycgn record must be a JSON object, found {type(meta).__name__}")
    if meta.get("mechanism") != mechanism:
        raise ExportError(f"{p}: holds the {meta.get('mechanism')!r:.80} generator, expected {mechanism!r}")
    if meta.get("weights_sha256") != sha:
        raise ExportError(f"{p}: exported from weights {str(meta.get('weights_sha256'))[:12]}..., but "
                          f"the sidecar says {sha[:12]}...")


def _tensors(graph):
    """Every TensorProto of an ONNX graph and its subgraphs (initializers and node attributes)."""
    for t in graph.initializer:
        yield t
    for st in graph.sparse_initializer:
        yield from (st.values, st.indices)
    yield from _node_tensors(graph.node)


def _node_tensors(nodes):
    for node in nodes:
        for a in node.attribute:
            if a.HasField("t"):
                yield a.t
            yield from a.tensors
            for sp in ([a.sparse_tensor] if a.HasField("sparse_tensor") else []) + list(a.sparse_tensors):
                yield from (sp.values, sp.indices)
            for g in ([a.g] if a.HasField("g") else []) + list(a.graphs):
                yield from _tensors(g)


def _check_external_data(p: Path, proto) -> bool:
    """Refuse tensors whose external data lies outside the export folder (an absolute path, ``..``
    or a link out): onnx and onnxruntime would read any file they name. True if any is external."""
    folder = p.parent.resolve()
    external = False
    tensors = [*_tensors(proto.graph), *(t for fn in proto.functions for t in _node_tensors(fn.node))]
    for t in tensors:
        if not len(t.external_data):
            continue
        external = True
        loc = next((e.value for e in t.external_data if e.key == "location"), None)
        try:
            inside = folder in (folder / loc).resolve().parents if loc and "\0" not in loc else False
        except (OSError, RuntimeError):  # a link loop
            inside = False
        if not inside or os.path.isabs(loc) or ".." in Path(loc.replace("\\", "/")).parts:
            raise ExportError(f"{p}: tensor {t.name!r:.80} keeps its data at {loc!r:.200}, outside the "
                              f"export folder {folder}: refused")
    return external


def check_onnx_file(p: Path, mechanism: str, side: dict):
    """Load and check one ONNX file of an export; returns the ``onnx.ModelProto``."""
    import onnx
    from google.protobuf.message import DecodeError
    try:
        # external data is read only after its locations are checked
        proto = onnx.load(str(p), load_external_data=False)
    except (DecodeError, OSError, ValueError, RuntimeError, RecursionError) as e:
        raise ExportError(f"{p}: not a readable ONNX model (truncated or corrupt): {e}") from e
    if _check_external_data(p, proto):
        try:
            onnx.load_external_data_for_model(proto, str(p.parent))
        except (OSError, ValueError, RuntimeError) as e:
            raise ExportError(f"{p}: its external data cannot be read: {e}") from e
    meta = {k.key[len("pycgn_"):]: k.value for k in proto.metadata_props if k.key.startswith("pycgn_")}
    _check_meta(p, meta, mechanism, side["weights_sha256"])
    opset = {o.domain: o.version for o in proto.opset_import}.get("", None)
    if opset != side["opset"]:
        raise ExportError(f"{p}: ONNX opset {opset}, the sidecar says {side['opset']}")
    ins = [(i.name, i.type.tensor_type.elem_type) for i in proto.graph.input]
    want = [("u", onnx.TensorProto.FLOAT), ("y", onnx.TensorProto.INT64)]
    if ins != want:
        raise ExportError(f"{p}: inputs {[(n, _dtype_name(onnx, t)) for n, t in ins]!r:.300}, "
                          f"expected u FLOAT and y INT64")
    outs = [o.name for o in proto.graph.output]
    if outs != [OUTPUT_NAMES[mechanism]]:
        raise ExportError(f"{p}: outputs {outs!r:.300}, expected [{OUTPUT_NAMES[mechanism]!r}]")
    return proto


def _dtype_name(onnx, t: int) -> str:
    try:
        return onnx.TensorProto.DataType.Name(t)
    except ValueError:  # a number no ONNX version defines
        return str(t)


def load_torchscript_file(p: Path, mechanism: str, side: dict, device="cpu") -> torch.jit.ScriptModule:
    """``torch.jit.load`` one TorchScript file of an export, checking its recorded metadata."""
    extra = {EXTRA_FILE: ""}
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)  # torch.jit is deprecated, still loads
            module = torch.jit.load(str(p), map_location=device, _extra_files=extra)
    except (RuntimeError, OSError, ValueError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ExportError(f"{p}: not a loadable TorchScript file (truncated or corrupt): {first}") from e
    try:
        meta = json.loads(extra[EXTRA_FILE] or "{}")
    except (json.JSONDecodeError, UnicodeDecodeError, RecursionError) as e:
        raise ExportError(f"{p}: its {EXTRA_FILE} record is corrupt: {type(e).__name__}") from e
    _check_meta(p, meta, mechanism, side["weights_sha256"])
    try:
        args = [a.name for a in module.forward.schema.arguments][1:]
    except (AttributeError, RuntimeError) as e:
        raise ExportError(f"{p}: has no usable forward method") from e
    if args != list(INPUT_NAMES):
        raise ExportError(f"{p}: forward takes {args}, expected {list(INPUT_NAMES)}")
    return module.eval()


MAX_AOTI_META_BYTES = 1 << 16  # a few hundred bytes in practice


def aoti_metadata(p: Path) -> dict[str, str]:
    """The metadata of the AOTInductor package ``p``, read from the archive without loading its
    native code (which only the compiling torch can load safely). Checks every member's CRC, so a
    truncated or corrupt package is refused here."""
    try:
        with zipfile.ZipFile(p) as z:
            bad = z.testzip()
            if bad is not None:
                raise ExportError(f"{p}: member {bad!r:.200} is corrupt (CRC mismatch)")
            found = [i for i in z.infolist() if i.filename.endswith("wrapper_metadata.json")
                     and "/data/aotinductor/" in i.filename]
            if len(found) != 1:
                raise ExportError(f"{p}: not an AOTInductor package of one model "
                                  f"({len(found)} wrapper metadata records)")
            if found[0].file_size > MAX_AOTI_META_BYTES:
                raise ExportError(f"{p}: its metadata record is {found[0].file_size} bytes, too large")
            meta = json.loads(z.read(found[0]).decode("utf-8"))
    except ExportError:
        raise
    except (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, EOFError, ValueError, RecursionError,
            NotImplementedError) as e:  # ValueError covers JSON and UTF-8 errors
        raise ExportError(f"{p}: not a readable AOTInductor package (truncated or corrupt): "
                          f"{type(e).__name__}: {e}") from e
    if not isinstance(meta, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in meta.items()):
        raise ExportError(f"{p}: its metadata must map strings to strings")
    return meta


def load_aoti_file(p: Path, mechanism: str, side: dict, device="cpu"):
    """Load one AOTInductor package of an export after checking, from the sidecar and the package's
    own metadata, that it is the ``mechanism`` of these weights, in the sidecar's precision, from
    this torch version, for this device and a CPU ISA / GPU architecture this machine has.
    Returns a callable ``(u, y) -> image``. Raises ``ExportError`` naming the file."""
    p, device = Path(p), torch.device(device)
    meta = aoti_metadata(p)
    pycgn = {k[len(AOTI_META):]: v for k, v in meta.items() if k.startswith(AOTI_META)}
    _check_meta(p, pycgn, mechanism, side["weights_sha256"])
    for name in ("precision", "torch_version", "device", "arch"):
        if pycgn.get(name) != side.get(name):
            raise ExportError(f"{p}: {name} {pycgn.get(name)!r:.80} in the package, but the sidecar "
                              f"says {side.get(name)!r:.80}")
    if pycgn["torch_version"] != torch.__version__:
        raise ExportError(f"{p}: compiled by torch {pycgn['torch_version']:.80}, this is torch "
                          f"{torch.__version__}; an AOTInductor package runs only with the torch that "
                          f"compiled it (export it again)")
    if pycgn["device"] != device.type:
        raise ExportError(f"{p}: compiled for {pycgn['device']}, cannot run on {device}")
    if not _arch_runs_here(pycgn["arch"], device):
        raise ExportError(f"{p}: compiled for {pycgn['arch']}, this {device.type} is {device_arch(device)} "
                          f"(export it again on this machine)")
    index = (device.index if device.index is not None else torch.cuda.current_device()) \
        if device.type == "cuda" else -1
    try:
        # The C++ loader directly: torch._inductor.aoti_load_package first probes the CPU's vector
        # ISAs by compiling test programs with g++ (~10 s per process); the ISA check above is ours.
        loader = torch._C._aoti.AOTIModelPackageLoader(str(p), "model", False, 1, index)
        net = _AotiNet(loader)
    except Exception as e:  # the loader raises RuntimeError; anything else is as fatal for this file
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ExportError(f"{p}: AOTInductor cannot load it: {first:.300}") from e
    # the metadata compiled into the native code must be the archive's record read above
    if {k: v for k, v in net.metadata.items() if k.startswith(AOTI_META)} != \
            {k: v for k, v in meta.items() if k.startswith(AOTI_META)}:
        raise ExportError(f"{p}: its metadata record differs from the one compiled into its code (edited?)")
    return net


class _AotiNet:
    """A loaded package as ``(u, y) -> image``, called through the loader directly: Python's
    wrapper (``AOTICompiledModel``) adds a pytree round trip per call."""

    def __init__(self, loader):
        self.loader = loader
        self.metadata = loader.get_metadata()

    def __call__(self, u: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return self.loader.boxed_run([u, y])[0]
