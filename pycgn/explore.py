"""``pycgn explore``: a local web page to look at counterfactuals.

Standard library only (``http.server``, a small JSON API, one HTML page with no external assets):
the server holds one Generator per model (``pycgn.api.get_generator`` caches them) and every image
it sends is the PNG of what ``pycgn.generate`` / ``pycgn.grid`` / ``pycgn.interpolate`` return for
the same arguments, with the Python call and the command line that reproduce it.

Safe by default: it binds to 127.0.0.1; the page picks a model by name from the list the command
line made (the shipped models and the paths given with ``--model``), so it cannot make the server
read any other file; bad form values come back as one-line messages, never tracebacks.
"""
from __future__ import annotations

import base64
import io
import json
import shlex
import sys
import threading
import traceback
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qsl, urlsplit

import numpy as np

from . import api
from .api import MECHANISMS
from .checkpoint import SHIPPED, resolve
from .sampler import SEED_MAX
from .sheets import grid, interpolate, tile

MAX_N = 256        # images per request: a page must not make the server generate without bound
MAX_CELLS = 256    # grid cells
MAX_STEPS = 32     # interpolation columns
LOOPBACK = ("127.0.0.1", "localhost", "::1")


# The page: plain HTML and JavaScript, nothing loaded from elsewhere (it works offline).
PAGE = (Path(__file__).parent / "explore.html").read_bytes()

class BadRequest(ValueError):
    """A form value the page sent is wrong: shown on the page in one line."""


def _png(array: np.ndarray) -> bytes:
    from PIL import Image
    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(array)).save(buf, format="PNG")
    return buf.getvalue()


def _data_url(array: np.ndarray) -> str:
    return "data:image/png;base64," + base64.b64encode(_png(array)).decode("ascii")


def _to_uint8(t) -> np.ndarray:
    """A part in [-1, 1] (textures) as uint8 HWC, mapped like the images themselves."""
    from .reference import to_uint8
    return to_uint8(t).permute(1, 2, 0).cpu().numpy()


def _mask_uint8(mask) -> np.ndarray:
    """A mask in [0, 1] as a grey uint8 HWC image."""
    return np.repeat((mask[0].cpu().numpy() * 255).round().astype(np.uint8)[..., None], 3, axis=2)


def _square_cols(n: int) -> int:
    """Columns of ``pycgn generate``'s sheet when --cols is not given (its default layout)."""
    return int(np.ceil(np.sqrt(n)))


class Form:
    """The query string of one request, read with checks that name the field."""

    def __init__(self, query: str):
        self.values = dict(parse_qsl(query, keep_blank_values=True))

    def text(self, name, default=""):
        return self.values.get(name, default).strip()

    def int(self, name, default, lo, hi):
        text = self.text(name, str(default))
        try:
            v = int(text)
        except ValueError:
            raise BadRequest(f"{name} must be an integer, got {text[:40]!r}") from None
        if not lo <= v <= hi:
            raise BadRequest(f"{name} must be in {lo}..{hi}, got {v}")
        return v

    def choice(self, name, default, choices):
        v = self.text(name, default)
        if v not in choices:
            raise BadRequest(f"{name} must be one of {', '.join(choices)}, got {v[:40]!r}")
        return v

    def cls(self, name):
        """A class: '' or 'random' -> None (random), '7' -> 7, a name stays a name."""
        v = self.text(name)
        if v.lower() in ("", "random", "none"):
            return None
        return _class(v)

    def classes(self, name):
        """A comma list of classes ('' = every class) -> a list, or None."""
        return [_class(c.strip()) for c in self.text(name).split(",") if c.strip()] or None


def _class(text: str):
    """'7' -> 7 (as the Python call will show it); a class name stays a name."""
    return int(text) if text.isascii() and text.isdigit() else text


def _python_args(**kwargs) -> str:
    return ", ".join(f"{k}={v!r}" for k, v in kwargs.items() if v is not None)


def _cli_args(**kwargs) -> list[str]:
    out = []
    for k, v in kwargs.items():
        if v is not None:
            out += [f"--{k.replace('_', '-')}", str(v)]
    return out


class Explorer:
    """The models the page may use (by name) and what each API call returns."""

    def __init__(self, models=(), device: str = "auto"):
        self.models = {name: name for name in SHIPPED}
        for m in models:
            if m not in self.models:
                self.models[m] = str(resolve(m).resolve())  # fails now, in one line, if it is not a file
        self.device = device
        self._lock = threading.Lock()

    def generator(self, form: Form, backend="torch"):
        name = form.text("model", next(iter(self.models)))
        if name not in self.models:  # the only way a model is named: nothing else is ever opened
            raise BadRequest(f"model must be one of {', '.join(self.models)}, got {name[:80]!r}")
        with self._lock:  # one load per model even when the page asks for several views at once
            return name, api.get_generator(self.models[name], backend, self.device)

    # -- the API ---------------------------------------------------------------------------------

    def index(self, form: Form) -> dict:
        from .runtime import available_backends
        return {"models": list(self.models), "backends": available_backends(), "mechanisms": list(MECHANISMS),
                "max_n": MAX_N, "max_steps": MAX_STEPS}

    def model(self, form: Form) -> dict:
        from .runtime import available_backends
        name, gen = self.generator(form)
        backends = available_backends() if gen.kind == "mnist_cgn" else ["torch"]
        return {"model": name, "class_names": list(gen.class_names), "backends": backends, "kind": gen.kind}

    def _common(self, form: Form, backend=True):
        name, gen = self.generator(form, self._backend(form) if backend else "torch")
        seed = form.int("seed", 0, 0, SEED_MAX)
        classes = {m: form.cls(m) for m in MECHANISMS}
        return name, gen, seed, classes

    def _backend(self, form: Form) -> str:
        from .runtime import available_backends
        return form.choice("backend", "torch", available_backends())

    def _device_arg(self):
        return None if self.device == "auto" else self.device

    def images(self, form: Form) -> dict:
        name, gen, seed, classes = self._common(form)
        backend = self._backend(form)
        n = form.int("n", 16, 1, MAX_N)
        index = form.int("index", 0, 0, n - 1)
        parts = gen.generate(**classes, n=n, seed=seed, return_parts=True, output="torch")
        images = parts.images.cpu().numpy()
        args = dict(**classes, n=n, model=name, seed=seed, backend=backend, device=self._device_arg())
        cli = ["pycgn", "generate", *_cli_args(model=name, **classes), "-n", str(n),
               *_cli_args(seed=seed, backend=backend, device=self._device_arg()), "--scale", "1", "-o", "images.png"]
        return {"images": [_data_url(a) for a in images],
                "parts": {"mask": _data_url(_mask_uint8(parts.mask[index])),
                          "foreground": _data_url(_to_uint8(parts.foreground[index])),
                          "background": _data_url(_to_uint8(parts.background[index]))},
                "index": index,
                "python": f"import pycgn\nimages = pycgn.generate({_python_args(**args)})\n"
                          f"parts = pycgn.generate({_python_args(**args)}, return_parts=True)",
                "cli": shlex.join(cli)}

    def sheet_png(self, form: Form) -> bytes:
        """The images as ``pycgn generate ... --scale 1`` writes them."""
        name, gen, seed, classes = self._common(form)
        images = gen.generate(**classes, n=form.int("n", 16, 1, MAX_N), seed=seed)
        return _png(tile(images, cols=_square_cols(len(images))))

    def parts_npz(self, form: Form) -> bytes:
        name, gen, seed, classes = self._common(form)
        parts = gen.generate(**classes, n=form.int("n", 16, 1, MAX_N), seed=seed, return_parts=True)
        arrays = {k: (v.cpu().numpy() if hasattr(v, "cpu") else np.asarray(v)) for k, v in vars(parts).items()
                  if k != "backend"}
        buf = io.BytesIO()
        np.savez_compressed(buf, **arrays, backend=np.array(parts.backend))
        return buf.getvalue()

    def _grid(self, form: Form):
        name, gen, seed, classes = self._common(form)
        backend = self._backend(form)
        rows = form.choice("rows", "shape", MECHANISMS)
        cols = form.choice("cols", "bg", MECHANISMS)
        if rows == cols:
            raise BadRequest(f"rows and cols must be different mechanisms, both are {rows!r}")
        k = len(gen.class_names)
        row_classes, col_classes = form.classes("row_classes"), form.classes("col_classes")
        cells = len(row_classes or range(k)) * len(col_classes or range(k))
        if cells > MAX_CELLS:
            raise BadRequest(f"the grid would have {cells} cells, at most {MAX_CELLS}: list fewer classes down "
                             "and across")
        others = {m: c for m, c in classes.items() if m not in (rows, cols)}
        kwargs = dict(rows=rows, cols=cols, row_classes=row_classes, col_classes=col_classes, **others,
                      model=name, seed=seed, backend=backend, device=self._device_arg())
        sheet = grid(**kwargs)
        listed = {k: ",".join(map(str, v)) if v else None for k, v in
                  (("row_classes", row_classes), ("col_classes", col_classes))}
        cli = ["pycgn", "grid", *_cli_args(model=name, rows=rows, cols=cols, **listed, **others, seed=seed,
                                           backend=backend, device=self._device_arg()),
               "--scale", "1", "-o", "grid.png"]
        return sheet, {"python": f"import pycgn\nsheet = pycgn.grid({_python_args(**kwargs)}, path='grid.png')",
                       "cli": shlex.join(cli)}

    def grid(self, form: Form) -> dict:
        sheet, code = self._grid(form)
        return {"image": _data_url(sheet), **code}

    def _interpolate(self, form: Form):
        name, gen, seed, classes = self._common(form, backend=False)
        mechanism = form.choice("mechanism", "shape", MECHANISMS)
        start, end = form.cls("start"), form.cls("end")
        if start is None or end is None:
            raise BadRequest("start and end must be classes, not random")
        steps = form.int("steps", 9, 2, MAX_STEPS)
        others = {m: c for m, c in classes.items() if m != mechanism}
        kwargs = dict(start=start, end=end, steps=steps, rows=1, **others, model=name, seed=seed,
                      device=self._device_arg())
        sheet = interpolate(mechanism, **kwargs)
        cli = ["pycgn", "interpolate", *_cli_args(model=name, mechanism=mechanism, start=start, end=end, steps=steps,
                                                  rows=1, **others, seed=seed, device=self._device_arg()),
               "--scale", "1", "-o", "interpolation.png"]
        code = {"python": f"import pycgn\nsheet = pycgn.interpolate({mechanism!r}, {_python_args(**kwargs)}, "
                          "path='interpolation.png')",
                "cli": shlex.join(cli)}
        return sheet, steps, code

    def interpolate(self, form: Form) -> dict:
        sheet, steps, code = self._interpolate(form)
        pad = 2  # pycgn.sheets.tile's default, which interpolate uses
        cell = (sheet.shape[1] - pad) // steps - pad
        # the page's slider shows one cell: where the cells start, below the labels (one row)
        return {"image": _data_url(sheet), "steps": steps, "cell": cell, "pad": pad,
                "top": sheet.shape[0] - cell - 2 * pad, **code}

    def download(self, what: str, form: Form) -> tuple[bytes, str]:
        if what == "images.png":
            return self.sheet_png(form), "image/png"
        if what == "parts.npz":
            return self.parts_npz(form), "application/octet-stream"
        if what == "grid.png":
            return _png(self._grid(form)[0]), "image/png"
        if what == "interpolation.png":
            return _png(self._interpolate(form)[0]), "image/png"
        raise BadRequest(f"no download named {what[:40]!r}")


class Handler(BaseHTTPRequestHandler):
    explorer: Explorer  # set on the subclass that serve() makes
    server_version = "pycgn-explore"
    timeout = 30  # s: an idle connection cannot hold a thread (or server_close) for ever
    API = ("index", "model", "images", "grid", "interpolate")

    def log_message(self, format, *args):  # quiet: errors are reported by _fail
        pass

    def _send(self, status: int, body: bytes, content_type: str, filename: str | None = None):
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.send_header("X-Content-Type-Options", "nosniff")
        if filename:
            self.send_header("Content-Disposition", f'attachment; filename="{filename}"')
        self.end_headers()
        try:
            self.wfile.write(body)
        except (BrokenPipeError, ConnectionResetError):  # the page went away or asked again: nothing to do
            pass

    def _json(self, status: int, data: dict):
        self._send(status, json.dumps(data).encode(), "application/json")

    def _local_host_header(self) -> bool:
        """On loopback, only requests addressed to loopback (a DNS-rebinding page names another host)."""
        if self.server.server_address[0] not in ("127.0.0.1", "::1"):
            return True
        host = (self.headers.get("Host") or "").rsplit(":", 1)[0].strip("[]")
        return host in LOOPBACK

    def do_GET(self):
        url = urlsplit(self.path)
        form = Form(url.query)
        try:
            if not self._local_host_header():
                raise BadRequest("this server answers only requests addressed to 127.0.0.1 or localhost")
            if url.path == "/":
                return self._send(200, PAGE, "text/html; charset=utf-8")
            if url.path.startswith("/api/") and url.path[5:] in self.API:
                return self._json(200, getattr(self.explorer, url.path[5:])(form))
            if url.path.startswith("/download/"):
                what = url.path[len("/download/"):]
                body, kind = self.explorer.download(what, form)
                return self._send(200, body, kind, filename=what)
            return self._json(404, {"error": f"no such page: {url.path[:80]}"})
        except (BadRequest, ValueError, TypeError, OSError) as e:  # what a user can cause: one line
            return self._json(400, {"error": " ".join(str(e).split()) or type(e).__name__})
        except Exception as e:  # a bug in pycgn: the traceback goes to the server's log, not the page
            traceback.print_exc(file=sys.stderr)
            return self._json(500, {"error": f"internal error ({type(e).__name__}); see the server's log"})

    def do_POST(self):
        self._json(405, {"error": "the API takes GET requests only"})

    do_PUT = do_DELETE = do_PATCH = do_POST


def make_server(models=(), host: str = "127.0.0.1", port: int = 7860, device: str = "auto") -> ThreadingHTTPServer:
    """A server ready for ``serve_forever()`` (port 0: a free port, see ``server.server_address``)."""
    if not 0 <= port <= 65535:
        raise ValueError(f"--port must be in 0..65535, got {port}")
    explorer = Explorer(models, device=device)
    handler = type("ExploreHandler", (Handler,), {"explorer": explorer})
    server_class = ThreadingHTTPServer
    if ":" in host:  # an IPv6 address
        import socket
        server_class = type("ThreadingHTTPServer6", (ThreadingHTTPServer,), {"address_family": socket.AF_INET6})
    server = server_class((host, port), handler)
    server.daemon_threads = False  # server_close() waits for requests in flight (torch must not run at exit)
    return server


def url_of(server) -> str:
    host, port = server.server_address[:2]
    return f"http://{f'[{host}]' if ':' in host else host}:{port}/"
