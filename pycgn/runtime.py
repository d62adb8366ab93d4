"""Fast runtimes for the three mechanisms of any CGN (MNIST or ImageNet), and ``backend="auto"``,
which picks the fastest.

``make_runner(model, backend, device, precision=...)`` returns a ``Runner``: ``runner(u_shape,
y_shape, u_texture, y_texture, u_bg, y_bg) -> (mask, fg, bg)``, float32 tensors on the device,
before the mask clamp and the texture crop, exactly like ``model(...)``. What differs between
models comes from the model: its ``inference_mechanisms()``, ``low_precision_mechanisms()`` and
``export_spec()``.

Every backend runs the model's ``inference_mechanisms()``: the MNIST CGN's nets with batch norms
folded, each nearest-upsample + conv as one transposed conv and the texture nets' linear chain as
one Linear (~2.9x fewer operations, equal to the published nets up to float32 rounding); the model's
own ``forward`` stays the published computation (``pycgn.reference``). A runner holds the weights
the model had when it was made (the folded nets and the exports are snapshots): make a new one
after changing them.

Precision (``float32``, the default; ``bfloat16``; ``float16``, CUDA only) is a setting of its own:
the backends compute in it and return float32, so callers never see the difference except in the
last bits (bfloat16: a few uint8 levels, ``benchmarks/bf16.py``). In low precision the torch
backends run the model's ``low_precision_mechanisms(dtype)``: converted copies of the weights
(channels-last on CPU), the ImageNet CGN's spectral norms folded in float32 first. On CPUs with
AMX or AVX512-BF16 bfloat16 ran the MNIST nets ~2x the folded float32 ones and the ImageNet CGN
~3x eager float32 at batch 1; elsewhere it is emulated and slow, so ask for it. ``torch-bf16`` is the deprecated name of
``backend="torch", precision="bfloat16"``.

Backends:

- ``torch``: eager PyTorch (inference mode); any precision.
- ``torch.compile``: ``torch.compile`` with freezing; any precision; compiles on the first call
  of each shape class (tens of seconds on a small CPU), so ``auto`` only considers it (for
  batches of 64 and more) with ``PYCGN_AUTO_COMPILE=1``.
- ``torchscript``: the exported TorchScript files; float32 only.
- ``aoti``: AOTInductor packages (``torch.export`` + ahead-of-time inductor, freezing on), compiled
  once per weights, precision, torch version and device architecture into the cache (about a
  minute for an MNIST CGN on 2 cores, quiet), then loaded in milliseconds by every later process.
  Any precision (compiled for it). On the 2-core CPU (folded MNIST nets, batch 16-1024): float32
  1.15-1.3x eager torch, bfloat16 1.2-1.3x eager bfloat16 (``benchmarks/RESULTS.md``).
- ``onnxruntime``: the exported ONNX files, float32 only; the CPU execution provider, or CUDA (and
  TensorRT when present) with IOBinding so inputs and outputs stay on the GPU, ordered after the
  caller's current torch stream (synchronised around each call).
- ``auto``: among the backends that compute in the precision asked (float32: onnxruntime, whose
  memory arena avoids the page faults below, and eager torch; ``aoti`` when its packages are
  already cached: ``auto`` never compiles them behind a first image, ``pycgn synth`` compiles them
  for jobs large enough to repay it), the fastest per batch-size class, timed on the first call of
  that class; choices are remembered per machine, model kind and precision in the cache folder
  (delete ``auto-*.json`` there to measure again).

The torch-based runners also take class vectors (N, n_classes) float32 for ``y``: a one-hot row
is the class, a blend of two rows blends the classes (``pycgn.sheets.interpolate``).

Exports are cached per weights sha256 in ``$PYCGN_CACHE_DIR`` (default ``~/.cache/pycgn``)
under ``exports/<sha256>/<format>-v<version>`` (plus the model's fixed export options, e.g.
``-truncation0.5`` for the ImageNet CGN): the first use exports, later ones load. A cache
entry is built in a temporary folder (named with the host and pid of its exporter) and renamed into
place, so concurrent processes never see half an export; the loser of a race discards its copy.
Each entry holds the sha256 of its files (``pycgn_cache.json``): an entry damaged since (a
truncated or edited file) is exported again with a warning and replaced atomically, and every use
removes the temporary folders of exports that were killed (their process is gone, or an hour passed).

The allocator trap: with glibc's default ``malloc``, blocks above the (dynamic) mmap threshold
are mapped fresh and unmapped on free, so eager PyTorch page-faults its large activations on
every call (~200k-290k minor faults per batch of 256, 2-3x slower). When a torch-based runner
is made on CPU, pycgn calls ``mallopt`` (``M_MMAP_MAX=0``, ``M_TRIM_THRESHOLD=1 GiB``) so such
blocks come from the heap and stay mapped for the next call: the process keeps its peak heap
(like tcmalloc or onnxruntime's arena). Set ``PYCGN_MALLOC=default`` to leave malloc alone.
Large blocks allocated from threads other than the main one may still be mapped per call;
onnxruntime is immune either way.

Why one module of ~750 lines: every runner shares the ``Runner`` contract (precision included),
the parity check against eager PyTorch and the export cache, and ``auto`` times the others; they
change together.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import hashlib
import json
import os
import platform
import shutil
import socket
import tempfile
import threading
import time
import warnings
from pathlib import Path

import torch

from . import _checks
from ._status import say
from .cache import cache_dir
from .checkpoint import weights_sha256
from . import export as _export
from .export import ExportError
from .models import MnistCGN
from .models.base import MECHANISMS

BACKENDS = _checks.BACKENDS
PRECISIONS = _checks.PRECISIONS
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
PARITY_ATOL = 1e-4


# ---------------------------------------------------------------------------------------------
# Process-level settings

_malloc_tuned = None


def tune_malloc() -> bool:
    """Keep large glibc allocations on the heap between calls (see the module doc); idempotent.

    Returns True if the settings are in effect. A no-op where malloc is not glibc's, or with
    ``PYCGN_MALLOC=default``.
    """
    global _malloc_tuned
    if _malloc_tuned is not None:
        return _malloc_tuned
    _malloc_tuned = False
    if os.environ.get("PYCGN_MALLOC", "").lower() == "default" or platform.system() != "Linux":
        return False
    if platform.libc_ver()[0] != "glibc" or "tcmalloc" in os.environ.get("LD_PRELOAD", "") \
            or "jemalloc" in os.environ.get("LD_PRELOAD", ""):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    M_TRIM_THRESHOLD, M_MMAP_MAX = -1, -4  # <malloc.h>
    _malloc_tuned = bool(mallopt(M_MMAP_MAX, 0)) and bool(mallopt(M_TRIM_THRESHOLD, 1 << 30))
    return _malloc_tuned


def _have_onnxruntime() -> bool:
    try:
        import onnxruntime  # noqa: F401
        return True
    except ImportError:
        return False


def _have_compile() -> bool:
    # Inductor's CPU code needs a C++ compiler; Triton comes with CUDA builds.
    return hasattr(torch, "compile") and (shutil.which(os.environ.get("CXX", "g++")) is not None
                                          or torch.cuda.is_available())


def available_backends() -> list[str]:
    """Backends usable in this environment, ``auto`` last (deprecated names left out)."""
    out = ["torch"]
    if _have_compile():
        out.append("torch.compile")
    out.append("torchscript")
    if _have_onnxruntime():
        out.append("onnxruntime")
    if _have_compile():  # AOTInductor compiles C++ (or Triton for CUDA) like torch.compile
        out.append("aoti")
    return out + ["auto"]


def backends_for(precision: str, device="cpu") -> list[str]:
    """The usable backends that compute in ``precision`` on ``device`` (``auto`` last)."""
    device = torch.device(device)
    try:
        _checks.precision(precision, device)
    except ValueError:
        return []
    fixed = {"torchscript": TorchScriptRunner, "onnxruntime": OrtRunner}
    return [b for b in available_backends() if b not in fixed or precision in fixed[b].precisions]


# ---------------------------------------------------------------------------------------------
# Export cache

MANIFEST = "pycgn_cache.json"  # sha256 of every file of a cache entry, written before it is renamed in
STALE_S = 3600                 # a temporary folder older than this is an abandoned export
_HOST = socket.gethostname().replace("~", "-")
_warned: set[Path] = set()


def _tmp_prefix(entry: str) -> str:
    # ".<entry>~<host>~<pid>~": whoever finds it later can tell whether its exporter still lives
    return f".{entry}~{_HOST}~{os.getpid()}~"


def _pid_alive(pid: int) -> bool:
    if os.name != "posix":  # os.kill(pid, 0) would end the process elsewhere: only age tells there
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError, ValueError):  # another user's process, or not a pid
        return pid > 0
    return True


def _stale(tmp: Path, now: float) -> bool:
    parts = tmp.name.split("~")
    if len(parts) == 4 and parts[1] == _HOST and parts[2].isdigit() and not _pid_alive(int(parts[2])):
        return True  # its exporter died on this machine
    try:
        return now - tmp.lstat().st_mtime > STALE_S
    except OSError:
        return False


def _clean_stale(exports: Path) -> None:
    """Remove the temporary folders of exports killed mid-way (``exports/<sha>/.<entry>~...``)."""
    now = time.time()
    try:
        tmps = [t for root in exports.iterdir() if root.is_dir() for t in root.iterdir()
                if t.name.startswith(".") and t.is_dir() and not t.is_symlink()]
    except OSError:
        return
    for t in tmps:
        if _stale(t, now):
            shutil.rmtree(t, ignore_errors=True)


def _file_hashes(folder: Path) -> dict[str, str]:
    out = {}
    for f in sorted(folder.iterdir()):
        if f.name != MANIFEST and f.is_file():
            h = hashlib.sha256()
            with open(f, "rb") as fh:
                for block in iter(lambda: fh.read(1 << 20), b""):
                    h.update(block)
            out[f.name] = h.hexdigest()
    return out


def _entry_problem(entry: Path, fmt: str, sha: str, kind: str, expect: dict | None = None) -> str | None:
    """Why a cache entry cannot be used as is (None if it can): a bad sidecar, one whose model
    fields differ from ``expect`` (what this pycgn writes for the model: an older pycgn's entry,
    e.g. without the ``cpu_chunk`` the C++ pipeline computes in), or any file changed since it was
    exported (the manifest covers every byte, so a truncated or edited file shows)."""
    try:
        side = _export.read_sidecar(entry, fmt, sha, kind=kind)
        for key, want in (expect or {}).items():
            if side.get(key) != want:
                return (f"its sidecar's {key!r} is {str(side.get(key))[:40]}, this pycgn writes "
                        f"{str(want)[:40]} (an export of an older pycgn)")
        manifest = json.loads((entry / MANIFEST).read_text())
        if not isinstance(manifest, dict) or manifest.get("files") != _file_hashes(entry):
            return "its files changed since they were exported"
    except FileNotFoundError:
        return f"{MANIFEST} is missing"
    except (ExportError, OSError, ValueError, RecursionError) as e:
        return " ".join(str(e).split())[:300]
    return None


def _fresh_export(model, fmt: str, root: Path, entry: str, **target) -> Path:
    """Export into a temporary folder of ``root`` and seal it with its manifest."""
    tmp = Path(tempfile.mkdtemp(prefix=_tmp_prefix(entry), dir=root))
    try:
        _export.export(model, tmp, format=fmt, **target)
        manifest = {"files": _file_hashes(tmp)}
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=1) + "\n")
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return tmp


def _spec_fields(model) -> tuple[dict, dict]:
    """What a model fixes in its exported files besides its weights (the ImageNet truncation)
    and the fields this pycgn writes into its sidecar (``ExportSpec.sidecar``, as JSON reads them
    back), from one ``export_spec()`` (which folds the nets: ~0.1 s for an MNIST CGN)."""
    spec = model.export_spec()
    return dict(spec.file_meta), json.loads(json.dumps(spec.sidecar))


def _fixed_options(model) -> dict:
    """The first half of ``_spec_fields``, for callers that need only it."""
    return _spec_fields(model)[0]


def entry_name(model, fmt: str, precision: str = "float32", device="cpu", fixed: dict | None = None) -> str:
    """The cache entry's folder name: the format, plus the model's fixed export options (e.g.
    ``-truncation0.5``; ``fixed``, when the caller has them). ``aoti`` packages are native code:
    one entry per precision, torch version and device architecture (CPU vector ISA or GPU arch),
    so a machine, a torch upgrade or a precision never picks up another's package."""
    fixed = _fixed_options(model) if fixed is None else fixed
    tag = "".join(f"-{k}{v}" for k, v in sorted(fixed.items()))
    if fmt != "aoti":
        return f"{fmt}-v{_export.FORMAT_VERSION}{tag}"
    device = torch.device(device)
    return (f"aoti-{precision}-{device.type}-{_export.device_arch(device)}-torch{torch.__version__}"
            f"-v{_export.FORMAT_VERSION}{tag}")


def _entry(model, fmt: str, sha: str, precision: str, device, fixed: dict) -> Path:
    return cache_dir() / "exports" / sha / entry_name(model, fmt, precision, device, fixed)


def cached_entry(model, fmt: str, sha: str | None = None, precision: str = "float32", device="cpu"):
    """The cache entry of ``model`` in ``fmt`` if it is there and sound, else None; never exports."""
    sha = sha or weights_sha256(model.state_dict())
    fixed, expect = _spec_fields(model)
    final = _entry(model, fmt, sha, precision, device, fixed)
    ok = final.is_dir() and _entry_problem(final, fmt, sha, model.kind, expect) is None
    return final if ok else None


def is_cached(model, fmt: str, sha: str | None = None) -> bool:
    """Whether ``model``'s ``fmt`` export is in the cache and passes its check (nothing is exported)."""
    return cached_entry(model, fmt, sha) is not None


def cached_export(model, fmt: str, sha: str | None = None, precision: str = "float32",
                  device="cpu") -> Path:
    """The export folder of ``model`` in ``fmt`` from the cache, exporting it on first use.

    ``precision`` and ``device`` (the compile target) apply to ``aoti`` only. An entry that fails
    its check (a file truncated or edited since export, a bad sidecar) is exported again, with a
    warning naming it, and replaced atomically; temporary folders left by exports that were killed
    are removed.
    """
    sha = sha or weights_sha256(model.state_dict())
    fixed, expect = _spec_fields(model)
    final = _entry(model, fmt, sha, precision, device, fixed)
    root, exports, kind = final.parent, final.parent.parent, model.kind
    target = {"precision": precision, "device": str(device)} if fmt == "aoti" else {}
    _clean_stale(exports)  # a listing per use: cheap, and nothing abandoned stays for long
    if final.is_dir():
        problem = _entry_problem(final, fmt, sha, kind, expect)
        if problem is None:
            return final
        if final not in _warned:
            _warned.add(final)
            warnings.warn(f"pycgn: the cached export {final} failed its check ({problem}); exporting it "
                          f"again", RuntimeWarning, stacklevel=3)
    # said before the work: a full-size ImageNet CGN takes minutes to export, any model to compile
    if fmt == "aoti":
        dev = torch.device(device)
        say(f"backend aoti: compiling the model's nets with AOTInductor, {precision} on {dev.type} "
            f"({_export.device_arch(dev)}), once per weights, precision, torch version and device "
            f"(cached in {root.parent}): "
            f"{_export.aoti_compile_estimate(model)}")
    else:
        say(f"exporting the model's nets to {fmt} (once per model: cached in {root.parent}; "
            f"{'minutes' if not model.auto_exports else 'seconds'})")
    try:
        root.mkdir(parents=True, exist_ok=True)
        tmp = _fresh_export(model, fmt, root, final.name, **target)
    except OSError as e:  # a read-only home: export for this process only
        warnings.warn(f"pycgn: cannot write the export cache {root} ({e}); exporting to a temporary "
                      f"folder (set PYCGN_CACHE_DIR to a writable folder to keep exports)", RuntimeWarning,
                      stacklevel=3)
        final = Path(tempfile.mkdtemp(prefix="pycgn-export-"))
        return _export.export(model, final, format=fmt, **target)
    try:
        for _ in range(3):
            try:
                os.rename(tmp, final)  # atomic; fails if the folder exists (another process won, or bad)
                return final
            except OSError:
                if not (final.exists() or final.is_symlink()):
                    continue  # it went away meanwhile: try again
            if final.is_dir() and _entry_problem(final, fmt, sha, kind, expect) is None:
                return final  # another process put a good one in place
            # move the bad entry aside (atomic), then ours in; a racing process may win either step
            old = Path(tempfile.mkdtemp(prefix=_tmp_prefix(final.name), dir=root))
            try:
                os.rename(final, old / "bad")
            except OSError:
                pass
            shutil.rmtree(old, ignore_errors=True)
        raise ExportError(f"{final}: cannot replace this cache entry (remove the folder by hand)")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _parity(name: str, run, model: MnistCGN, device, where, atol: float = 1e-3) -> None:
    """A loaded export must reproduce the model: catches silently corrupted or foreign files."""
    g = torch.Generator().manual_seed(99)
    n = 3 if model.image_size <= 64 else 1  # a full-size ImageNet CGN takes ~2 s per image
    u = torch.randn(n, model.latent_dim, generator=g).to(device)
    y = torch.randint(0, model.n_classes, (n,), generator=g).to(device)
    with torch.inference_mode():
        want = (model.shape(u, y), model.texture(u, y), model.background(u, y))
        got = run(u, y, u, y, u, y)
    for m, a, b in zip(MECHANISMS, got, want):
        err = (a.float() - b.float()).abs().max().item() if a.shape == b.shape else float("inf")
        if not err <= atol:
            raise ExportError(f"{where[m]}: {name} output of the {m} generator differs from the model "
                              f"by {err:.3g}: the file does not hold these weights (corrupt?)")


# ---------------------------------------------------------------------------------------------
# Runners

class Runner:
    """Runs the three mechanisms: ``runner(u_shape, y_shape, u_texture, y_texture, u_bg, y_bg)``."""

    name = "?"
    precisions = PRECISIONS  # what this backend can compute in
    class_vectors = False    # whether y may be class vectors (N, n_classes) as well as ids

    def __init__(self, model: MnistCGN, device, precision: str = "float32"):
        self.model = model
        self.device = torch.device(device)
        self.precision = _checks.precision(precision, self.device)
        if self.precision not in self.precisions:
            raise ValueError(f"backend {self.name!r} computes in {' or '.join(self.precisions)} only, "
                             f"precision {precision!r} was asked for; use backend 'torch' or 'auto' for it")
        self.providers: list[str] = []

    def __repr__(self) -> str:
        return f"<pycgn runner {self.name} ({self.precision}) on {self.device}, providers {self.providers}>"

    def _export(self, fmt: str, export_dir=None, sha=None) -> dict:
        """The checked sidecar of the ``fmt`` export to run: ``export_dir`` or the cache's."""
        sha = sha or weights_sha256(self.model.state_dict())
        d = Path(export_dir) if export_dir is not None else cached_export(self.model, fmt, sha)
        side = _export.read_sidecar(d, fmt, sha, kind=self.model.kind)
        for k, v in _fixed_options(self.model).items():  # e.g. an ImageNet export at another truncation
            # (an export older than a field, e.g. MNIST nets before "folded", runs the same
            # function: the parity check at load is what stands behind it)
            if k in side and side[k] != v:
                raise ExportError(f"{d / _export.SIDECAR}: exported with {k} {side.get(k)!r}, the model runs "
                                  f"with {v!r}")
        if side.get("class_input", "ids") != "ids":
            raise ExportError(f"{d / _export.SIDECAR}: takes class vectors; the runtime feeds class ids "
                              f"(export with class_input='ids')")
        self.paths = side["paths"]
        return side

    def _inputs(self, u_shape, y_shape, u_texture, y_texture, u_bg, y_bg):
        m = self.model
        n = u_shape.shape[0] if isinstance(u_shape, torch.Tensor) and u_shape.dim() == 2 else None
        out = []
        for which, u, y in (("shape", u_shape, y_shape), ("texture", u_texture, y_texture),
                            ("bg", u_bg, y_bg)):
            _checks.latent(f"u_{which}", u, m.latent_dim, n)
            if self.class_vectors and isinstance(y, torch.Tensor) and y.is_floating_point() and y.dim() == 2:
                _checks.class_vectors(f"y_{which}", y, m.n_classes, u.shape[0])
                y = y.to(self.device, torch.float32).contiguous()
            else:
                _checks.class_ids(f"y_{which}", y, m.n_classes, u.shape[0])
                y = y.to(self.device, torch.int64).contiguous()
            out += [u.to(self.device, torch.float32).contiguous(), y]
        return out

    def __call__(self, u_shape, y_shape, u_texture, y_texture, u_bg, y_bg):
        args = self._inputs(u_shape, y_shape, u_texture, y_texture, u_bg, y_bg)
        if args[0].shape[0] == 0:
            s = self.model.image_size
            return (torch.empty(0, 1, s, s, device=self.device), torch.empty(0, 3, s, s, device=self.device),
                    torch.empty(0, 3, s, s, device=self.device))
        with torch.inference_mode():
            if not self.chunk:
                return self._run(*args)
            return _in_chunks(self._run, args, self.chunk)

    @property
    def chunk(self) -> int | None:
        """The batch every call is computed in (``_in_chunks``), or None: as it comes."""
        return getattr(self.model, "cpu_chunk", None) if self.device.type == "cpu" else None

    def _run(self, u_shape, y_shape, u_texture, y_texture, u_bg, y_bg):
        raise NotImplementedError


def _in_chunks(run, args: list, step: int) -> tuple:
    """``run(*args)`` computed ``step`` samples at a time, the last chunk padded (with copies of
    its first sample) to ``step``: every sample is computed in a batch of exactly ``step``, so its
    bits never depend on how many came with it. (oneDNN splits a batch over threads by its size: a
    transposed conv of an odd batch below ~40 differed in the last bit from the same samples in a
    larger batch on 2 threads.)"""
    n, outs = args[0].shape[0], []
    for a in range(0, n, step):
        part = [t[a:a + step] for t in args]
        short = step - part[0].shape[0]
        if short:
            part = [torch.cat([t, t[:1].expand(short, *t.shape[1:])]) for t in part]
        outs.append([o[:step - short] for o in run(*part)])
    return tuple(torch.cat(o) if len(o) > 1 else o[0] for o in zip(*outs))


class _NetsRunner(Runner):
    """A runner whose ``nets`` are three torch callables ``(u, y) -> image``: eager, compiled or loaded."""

    nets: list

    def _run(self, u_shape, y_shape, u_texture, y_texture, u_bg, y_bg):
        s, t, b = self.nets
        return s(u_shape, y_shape), t(u_texture, y_texture), b(u_bg, y_bg)


class _LowNet(torch.nn.Module):
    """A mechanism whose weights compute in a low precision, with float32 in and out, so callers
    see the usual contract."""

    def __init__(self, mech: torch.nn.Module, dtype: torch.dtype):
        super().__init__()
        self.mech, self.dtype = mech, dtype

    def forward(self, u: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        out = self.mech(u.to(self.dtype), y)
        return out.to(torch.float32, memory_format=torch.contiguous_format)


def precision_nets(model, device: torch.device, precision: str) -> list:
    """The model's three ``inference_mechanisms()`` computing in ``precision``. The caller's model
    is never converted: the low-precision nets are copies when weights change."""
    if precision == "float32":
        return list(model.inference_mechanisms().values())
    dtype = DTYPES[precision]
    low = model.low_precision_mechanisms(dtype).values()
    if device.type == "cpu":
        # oneDNN's bf16 convolutions want NHWC: 2-2.5x faster than NCHW here (MNIST and ImageNet)
        low = [m.to(memory_format=torch.channels_last) for m in low]
    return [_LowNet(m, dtype) for m in low]


class TorchRunner(_NetsRunner):
    name = "torch"
    class_vectors = True

    def __init__(self, model, device, precision: str = "float32"):
        super().__init__(model, device, precision)
        self.model = model.to(self.device).eval()
        low = "" if self.precision == "float32" else f"-{self.precision}"
        self.providers = [f"torch-{self.device.type}{low}"]
        self.nets = precision_nets(self.model, self.device, self.precision)  # inputs are checked in __call__
        if self.device.type == "cpu":
            tune_malloc()


class CompileRunner(TorchRunner):
    name = "torch.compile"

    def __init__(self, model, device, precision: str = "float32"):
        super().__init__(model, device, precision)
        self.providers = [f"inductor-{self.device.type}" + self.providers[0][len(f"torch-{self.device.type}"):]]
        # dynamic=True: one graph for every batch size (and one for batch 1), not one per size.
        self.nets = [torch.compile(mech, dynamic=True, options={"freezing": True}) for mech in self.nets]
        say("torch.compile: the first call compiles the nets (tens of seconds on a small CPU, in every process)")


class TorchScriptRunner(_NetsRunner):
    name = "torchscript"
    precisions = ("float32",)  # the traced files hold float32 weights

    def __init__(self, model, device, export_dir=None, sha=None, precision: str = "float32"):
        super().__init__(model, device, precision)
        side = self._export("torchscript", export_dir, sha)
        self.nets = [_export.load_torchscript_file(side["paths"][m], m, side, self.device) for m in MECHANISMS]
        self.providers = [f"torchscript-{self.device.type}"]
        if self.device.type == "cpu":
            tune_malloc()
        _parity(self.name, self._run, model.to(self.device), self.device, self.paths)


# How far a loaded package may stray from eager float32 in the parity check at load (which catches
# foreign or corrupt files: other weights differ by ~1). bfloat16 keeps 8 bits of mantissa: the MNIST
# mask's logits moved by up to 0.11 on random nets (its instance norms amplify rounding; eager
# bfloat16 alike, tests/test_runtime.py's BF16_ATOL), the textures by ~0.01; float16 (10 bits) ~4x less.
AOTI_PARITY_ATOL = {"float32": 1e-3, "bfloat16": 0.25, "float16": 0.06}


class AotiRunner(_NetsRunner):
    """AOTInductor packages (``pycgn.export`` format ``aoti``) from the cache, compiled on first use
    for this (weights, precision, torch version, device architecture); later processes load them in
    milliseconds. ``precision``: ``float32``, ``bfloat16``, or ``float16`` on CUDA; inputs and
    outputs stay float32."""

    name = "aoti"

    def __init__(self, model, device, precision: str = "float32", export_dir=None, sha=None):
        super().__init__(model, device, precision)
        sha = sha or weights_sha256(model.state_dict())
        d = Path(export_dir) if export_dir is not None else \
            cached_export(model, "aoti", sha, precision=precision, device=self.device)
        side = _export.read_sidecar(d, "aoti", sha, kind=model.kind)
        if side["precision"] != precision:
            raise ExportError(f"{d / _export.SIDECAR}: holds {side['precision']} packages, {precision} was "
                              f"asked for")
        self.paths = side["paths"]
        self.nets = [_export.load_aoti_file(side["paths"][m], m, side, self.device) for m in MECHANISMS]
        self.providers = [f"aoti-{self.device.type}-{precision}"]
        if self.device.type == "cpu":
            tune_malloc()
        _parity(self.name, self._run, model.to(self.device), self.device, self.paths,
                atol=AOTI_PARITY_ATOL[precision])


def aoti_cached(model, precision: str = "float32", device="cpu", sha: str | None = None) -> bool:
    """Whether ``model``'s aoti packages for ``precision`` on ``device`` are in the cache (so a
    runner loads them in milliseconds instead of compiling for minutes)."""
    return cached_entry(model, "aoti", sha, precision, device) is not None


def _ort_providers(device: torch.device, cache: Path, latent_dim: int) -> list:
    import onnxruntime as ort
    have = ort.get_available_providers()
    if device.type != "cuda":
        return ["CPUExecutionProvider"]
    index = device.index if device.index is not None else torch.cuda.current_device()
    # No user_compute_stream: it is fixed when the session is made, but torch's current stream
    # is the caller's at each call. ORT keeps its own stream; OrtRunner._one orders the two.
    cuda_opts = {"device_id": index, "arena_extend_strategy": "kSameAsRequested"}
    out = []
    if "TensorrtExecutionProvider" in have and os.environ.get("PYCGN_TENSORRT", "1") != "0":
        trt_cache = cache / "tensorrt"
        trt_cache.mkdir(parents=True, exist_ok=True)
        trt = {"device_id": index, "trt_engine_cache_enable": "True", "trt_engine_cache_path": str(trt_cache),
               "trt_profile_min_shapes": f"u:1x{latent_dim},y:1",
               "trt_profile_opt_shapes": f"u:256x{latent_dim},y:256",
               "trt_profile_max_shapes": f"u:{OrtRunner.MAX_TRT_BATCH}x{latent_dim},y:{OrtRunner.MAX_TRT_BATCH}"}
        out.append(("TensorrtExecutionProvider", trt))
    if "CUDAExecutionProvider" in have:
        out.append(("CUDAExecutionProvider", cuda_opts))
    return out + ["CPUExecutionProvider"]


class OrtRunner(Runner):
    name = "onnxruntime"
    precisions = ("float32",)  # the ONNX files hold float32 graphs
    MAX_TRT_BATCH = 4096  # TensorRT's optimisation profile; larger batches are run in chunks

    def __init__(self, model, device, export_dir=None, sha=None, precision: str = "float32"):
        import onnxruntime as ort
        super().__init__(model, device, precision)
        side = self._export("onnx", export_dir, sha)
        wanted = _ort_providers(self.device, cache_dir(), model.latent_dim)
        so = ort.SessionOptions()
        # ORT_ENABLE_ALL includes the layout transformer to the blocked (NCHWc) AVX-512 kernels.
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        so.intra_op_num_threads = max(1, torch.get_num_threads())
        so.log_severity_level = 3  # the CUDA-EP fallback is detected and reported below
        # Do not spin between calls: torch's composite runs right after on the same cores.
        so.add_session_config_entry("session.intra_op.allow_spinning", "0")
        self.sessions = []
        for m in MECHANISMS:
            p = side["paths"][m]
            _export.check_onnx_file(p, m, side)
            try:  # from the path: TensorRT's engine cache keys on it
                self.sessions.append(ort.InferenceSession(str(p), so, providers=wanted))
            except Exception as e:  # onnxruntime raises its own exception types (Fail, InvalidGraph...)
                raise ExportError(f"{p}: onnxruntime cannot load it: {' '.join(str(e).split())}") from e
        self.providers = list(self.sessions[0].get_providers())
        asked = [w if isinstance(w, str) else w[0] for w in wanted]
        self.on_gpu = self.device.type == "cuda" and "CUDAExecutionProvider" in self.providers
        if self.device.type == "cuda" and not self.on_gpu:
            warnings.warn(f"pycgn: onnxruntime runs on {self.providers} although {asked} were asked for "
                          f"(onnxruntime-gpu missing, or its CUDA libraries do not load); outputs are copied "
                          f"to {self.device}", RuntimeWarning, stacklevel=3)
        self._out_names = [s.get_outputs()[0].name for s in self.sessions]
        _parity(self.name, self._run, model.to(self.device), self.device, self.paths)

    def _one(self, i: int, u: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        sess = self.sessions[i]
        if not self.on_gpu:
            feed = {"u": u.detach().cpu().numpy(), "y": y.detach().cpu().numpy()}
            out = torch.from_numpy(sess.run(self._out_names[i : i + 1], feed)[0])
            return out.to(self.device) if self.device.type != "cpu" else out
        if "TensorrtExecutionProvider" in self.providers and u.shape[0] > self.MAX_TRT_BATCH:
            k = self.MAX_TRT_BATCH
            return torch.cat([self._one(i, u[j : j + k], y[j : j + k]) for j in range(0, u.shape[0], k)])
        n, s = u.shape[0], self.model.image_size
        c = 1 if i == 0 else 3
        u, y = u.detach().contiguous(), y.detach().contiguous()  # bound by raw pointer: dense
        out = torch.empty(n, c, s, s, device=self.device)  # torch's caching allocator: no cudaMalloc
        io = sess.io_binding()
        idx = self.device.index if self.device.index is not None else torch.cuda.current_device()
        io.bind_input("u", "cuda", idx, _np_float32(), tuple(u.shape), u.data_ptr())
        io.bind_input("y", "cuda", idx, _np_int64(), tuple(y.shape), y.data_ptr())
        io.bind_output(self._out_names[i], "cuda", idx, _np_float32(), tuple(out.shape), out.data_ptr())
        # ORT runs on its own stream, which knows nothing of torch's. Before: everything queued
        # on the caller's current stream (taken now, not at construction) has finished, so u
        # and y are written and out's memory is no longer in use by earlier work. After: ORT's
        # work has finished, so torch may read out on any stream.
        torch.cuda.current_stream(self.device).synchronize()
        io.synchronize_inputs()
        sess.run_with_iobinding(io)
        io.synchronize_outputs()
        return out

    def _run(self, u_shape, y_shape, u_texture, y_texture, u_bg, y_bg):
        return self._one(0, u_shape, y_shape), self._one(1, u_texture, y_texture), self._one(2, u_bg, y_bg)


def _np_float32():
    import numpy as np
    return np.float32


def _np_int64():
    import numpy as np
    return np.int64


# ---------------------------------------------------------------------------------------------
# auto

def _bucket(n: int) -> int:
    """Batch-size class: the next power of two."""
    return 1 << max(0, (n - 1).bit_length())


# Part of the key of auto's remembered choices: bump it when a backend's relative speed changes, so
# old choices are measured again (2: the folded MNIST nets made eager torch ~2.4x faster).
AUTO_REVISION = 2


def _machine_key() -> str:
    cpu = ""
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next((ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name")), "")
    except OSError:
        pass
    import onnxruntime as ort
    # the allocator changes which backend wins (eager torch loses 2-3x to page faults)
    preload = " ".join(sorted(os.path.basename(p) for p in os.environ.get("LD_PRELOAD", "").split()))
    parts = [cpu or platform.processor(), str(os.cpu_count()), str(torch.get_num_threads()), torch.__version__,
             ort.__version__, str(tune_malloc()), preload, str(AUTO_REVISION)]
    return hashlib.sha256("|".join(parts).encode()).hexdigest()[:16]


class AutoRunner(Runner):
    """Per batch-size class, the fastest of onnxruntime and eager torch, timed on first use.

    The first call of each class runs every candidate (warm-up, then interleaved timed runs, see
    ``_measure``) and returns the winner's outputs; the choice is stored in
    ``<cache>/auto-<device>-<machine>.json`` and reused by later processes on the same machine
    (the key covers CPU, threads, versions and allocator). With ``PYCGN_AUTO_COMPILE=1``,
    ``torch.compile`` is a candidate too for batches of ``COMPILE_MIN_BATCH`` and more.
    """

    COMPILE_MIN_BATCH = 64
    MIN_REPS, MAX_REPS, MEASURE_S = 2, 25, 0.2
    MARGIN = 1.05  # another backend must be 5% faster than onnxruntime to be chosen

    def __init__(self, model, device, candidates: dict[str, Runner], precision: str = "float32"):
        super().__init__(model, device, precision)
        self.candidates = candidates
        self.last = None  # the backend that ran the latest call
        self.choice: dict[int, str] = {}
        self._lock = threading.Lock()
        # choices made among other candidates do not count: a newly cached aoti gets measured
        key = _machine_key() + "".join(v for k, v in (("aoti", "-aoti"), ("torch.compile", "-compile"))
                                       if k in candidates)
        # the winner depends on the nets (kind) and the precision as much as on the machine
        self._file = cache_dir() / f"auto-{self.device.type}-{model.kind}-{self.precision}-{key}.json"
        if self._file.is_file():
            try:
                saved = json.loads(self._file.read_text())
                self.choice = {int(k): v for k, v in saved.items() if v in candidates}
            except (OSError, ValueError, AttributeError):
                self.choice = {}  # a bad choices file only costs a re-measurement

    @property
    def name(self) -> str:
        """The backend that ran the latest call (``auto`` before the first call)."""
        return self.last or "auto"

    @property
    def providers(self) -> list[str]:
        if self.last:
            return list(self.candidates[self.last].providers)
        return sorted({p for r in self.candidates.values() for p in r.providers})

    @providers.setter
    def providers(self, value) -> None:  # Runner.__init__ assigns it; derived here
        pass

    def backend_for(self, n: int) -> str:
        """The backend that runs a batch of ``n`` (measured on first use of its class)."""
        return self.choice.get(_bucket(self.chunk or n), "")

    def _measure(self, args) -> tuple[str, tuple]:
        """Best (least) time of interleaved runs: at least MIN_REPS each, and more (up to
        MAX_REPS) until each candidate has run MEASURE_S seconds, so cheap small batches get
        many tries: on a busy machine any single run may have been descheduled."""
        cands = {k: r for k, r in self.candidates.items()
                 if k != "torch.compile" or args[0].shape[0] >= self.COMPILE_MIN_BATCH}
        outs = {name: r._run(*args) for name, r in cands.items()}  # warm-up; the winner's is returned
        best = {name: float("inf") for name in cands}
        spent = {name: 0.0 for name in cands}
        for rep in range(self.MAX_REPS):
            for name, r in cands.items():
                t0 = time.perf_counter()
                r._run(*args)
                if self.device.type == "cuda":
                    torch.cuda.synchronize(self.device)
                dt = time.perf_counter() - t0
                best[name] = min(best[name], dt)
                spent[name] += dt
            if rep + 1 >= self.MIN_REPS and min(spent.values()) >= self.MEASURE_S:
                break
        # onnxruntime is the default unless beaten clearly: its arena keeps it immune to the
        # allocator, and a close call on a busy machine is noise
        win = min(best, key=best.get)
        if "onnxruntime" in best and best[win] > best["onnxruntime"] / self.MARGIN:
            win = "onnxruntime"
        return win, outs[win]

    def _run(self, *args):
        b = _bucket(args[0].shape[0])
        name = self.choice.get(b)
        if name is None:
            with self._lock:
                say(f"backend auto: timing {', '.join(self.candidates)} on a batch of {args[0].shape[0]} (once per "
                    f"batch-size class on this machine; `pycgn cache` shows the choices)")
                best, out = self._measure(args)
                self.choice[b] = best
                self._save()
            self.last = best
            return out
        self.last = name
        return self.candidates[name]._run(*args)

    def _save(self) -> None:
        try:
            self._file.parent.mkdir(parents=True, exist_ok=True)
            from ._io import atomic_write_bytes
            atomic_write_bytes(self._file, json.dumps({str(k): v for k, v in sorted(self.choice.items())}).encode())
        except OSError:
            pass  # a read-only cache only costs re-measuring next time


# ---------------------------------------------------------------------------------------------

def make_runner(model, backend: str = "auto", device="cpu", export_dir=None, precision: str = "float32") -> Runner:
    """A runner for the three mechanisms of ``model`` (an ``MnistCGN`` or ``ImagenetCGN``) on ``device``.

    ``backend``: one of ``available_backends()``. ``precision``: ``float32`` (default),
    ``bfloat16`` or ``float16`` (CUDA only); the backends that cannot compute in it refuse it
    (``backends_for(precision)`` lists those that can; ``aoti`` is compiled for it).
    ``export_dir``: for ``torchscript``, ``onnxruntime`` and ``aoti``, an existing export (from
    ``pycgn.export.export``) to load instead of the cache. Raises ``ExportError`` naming the file
    when an export is missing, corrupt or incompatible (format, opset, input names, weights,
    truncation, torch version, precision).
    """
    if not isinstance(model, _export.MODELS):
        raise TypeError(f"model must be an MnistCGN or ImagenetCGN, got {type(model).__name__}")
    if not isinstance(backend, str) or backend not in BACKENDS + ("auto",):
        raise ValueError(f"backend must be one of {', '.join(BACKENDS + ('auto',))}, got {backend!r}")
    if backend in _checks.DEPRECATED_BACKENDS:
        old = backend
        backend, precision = _checks.backend_alias(backend, precision)
        warnings.warn(f"pycgn: {_checks.deprecation(old)}", DeprecationWarning, stacklevel=2)
    device = torch.device(device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {device} asked for, but torch sees no CUDA device")
    precision = _checks.precision(precision, device)
    if export_dir is not None and backend not in ("torchscript", "onnxruntime", "aoti"):
        raise ValueError(f"export_dir only applies to the torchscript, onnxruntime and aoti backends, "
                         f"not {backend!r}")
    model.eval()
    if backend not in available_backends():
        raise ValueError(f"backend {backend!r} is not available here (available: "
                         f"{', '.join(available_backends())})")
    sha = weights_sha256(model.state_dict())
    if backend == "torch":
        return TorchRunner(model, device, precision)
    if backend == "torch.compile":
        return CompileRunner(model, device, precision)
    if backend == "torchscript":
        return TorchScriptRunner(model, device, export_dir, sha, precision)
    if backend == "onnxruntime":
        return OrtRunner(model, device, export_dir, sha, precision)
    if backend == "aoti":
        return AotiRunner(model, device, precision, export_dir, sha)
    # auto: the candidates that compute in this precision
    candidates: dict[str, Runner] = {}
    # a model that takes minutes to export (the ImageNet CGN) is run by onnxruntime only once its
    # export is cached (`--backend onnxruntime` once): never minutes of silence before a first image
    if _have_onnxruntime() and precision in OrtRunner.precisions and (
            model.auto_exports or is_cached(model, "onnx", sha)):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            ort_runner = OrtRunner(model, device, None, sha)
        if device.type == "cpu" or ort_runner.on_gpu:
            candidates["onnxruntime"] = ort_runner
        # on a GPU whose CUDA EP does not run, onnxruntime would copy through the host: skip it
        del caught
    candidates["torch"] = TorchRunner(model, device, precision)
    if "aoti" in available_backends() and aoti_cached(model, precision, device, sha):
        candidates["aoti"] = AotiRunner(model, device, precision, None, sha)  # loads in milliseconds
    if os.environ.get("PYCGN_AUTO_COMPILE") == "1" and _have_compile():
        candidates["torch.compile"] = CompileRunner(model, device, precision)
    if len(candidates) == 1:
        return candidates["torch"]
    return AutoRunner(model, device, candidates, precision)
