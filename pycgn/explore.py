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
import math
import shlex
import sys
import threading
import traceback
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qsl, urlencode, urlsplit

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
                return self._send(200, PAGE.encode(), "text/html; charset=utf-8")
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


# The page: plain HTML and JavaScript, nothing loaded from elsewhere (it works offline).
PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>pycgn explore</title>
<style>
body{font-family:sans-serif;margin:1em 2em;max-width:1100px}
img,canvas{image-rendering:pixelated}
#images img{width:64px;height:64px;margin:1px;cursor:pointer;border:2px solid transparent}
#images img.selected{border-color:#c22}
#parts figure{display:inline-block;margin:0 1em 0 0;text-align:center}
#parts img{width:128px;height:128px;border:1px solid #ccc}
#error{color:#b00;font-weight:bold;min-height:1.3em}
pre{background:#f3f3f3;padding:.4em;white-space:pre-wrap;word-break:break-all;font-size:12px}
label{margin-right:.8em;white-space:nowrap}
section{margin-top:1em;border-top:1px solid #ddd}
h2{font-size:1.1em}
</style></head><body>
<h1>pycgn explore</h1>
<form id="form" onsubmit="return false">
<label>model <select id="model"></select></label>
<label>shape <select id="shape" class="cls"></select></label>
<label>texture <select id="texture" class="cls"></select></label>
<label>background <select id="bg" class="cls"></select></label>
<label>seed <input id="seed" value="0" size="10"></label>
<label>n <input id="n" value="16" size="4"></label>
<label>backend <select id="backend"></select></label>
</form>
<div id="error" role="alert"></div>
<section><h2>Images <small>(click one for its parts)</small></h2>
<div id="images"></div>
<div id="parts"><figure><img id="part-mask" alt="mask"><figcaption>mask</figcaption></figure><figure><img
 id="part-foreground" alt="foreground"><figcaption>foreground</figcaption></figure><figure><img
 id="part-background" alt="background"><figcaption>background</figcaption></figure></div>
<pre id="images-python"></pre><pre id="images-cli"></pre>
<a id="download-png" download="images.png">download PNG</a> &middot;
<a id="download-npz" download="parts.npz">download npz (images and parts)</a>
</section>
<section><h2>Grid</h2>
<label>down <select id="rows"></select></label><label>across <select id="cols"></select></label>
<label>classes down <input id="row_classes" size="12" placeholder="all"></label>
<label>across <input id="col_classes" size="12" placeholder="all"></label>
<div><img id="grid" alt="grid"></div>
<pre id="grid-python"></pre><pre id="grid-cli"></pre>
<a id="download-grid" download="grid.png">download PNG</a>
</section>
<section><h2>Interpolation</h2>
<label>mechanism <select id="mechanism"></select></label>
<label>from <select id="start"></select></label><label>to <select id="end"></select></label>
<label>steps <input id="steps" value="9" size="3"></label>
<div><input type="range" id="alpha" min="0" max="8" value="0"> <span id="alpha-value"></span></div>
<canvas id="alpha-view" width="128" height="128"></canvas>
<div><img id="interpolation" alt="interpolation"></div>
<pre id="interpolation-python"></pre><pre id="interpolation-cli"></pre>
<a id="download-interpolation" download="interpolation.png">download PNG</a>
</section>
<script>
"use strict";
const $ = id => document.getElementById(id);
const MAIN = ["model", "shape", "texture", "bg", "seed", "n", "backend"];
const latest = {};  // per view, the number of its latest request: older answers are dropped
const failed = {};
let selected = 0, strip = null;

function query(extra) {
  const p = new URLSearchParams();
  for (const id of MAIN) p.set(id, $(id).value);
  for (const [k, v] of Object.entries(extra || {})) p.set(k, v);
  return p.toString();
}
function showErrors() {
  $("error").textContent = Object.values(failed).filter(Boolean).join("; ");
}
async function call(view, path, q, render) {
  const mine = latest[view] = (latest[view] || 0) + 1;
  const body = document.body.dataset;
  body.pending = +(body.pending || 0) + 1;
  let data, ok = false;
  try {
    const r = await fetch(path + "?" + q);
    data = await r.json();
    ok = r.ok;
  } catch (e) { data = {error: "the server did not answer (" + e + ")"}; }
  finally { body.pending = +body.pending - 1; }
  if (mine !== latest[view]) return;
  failed[view] = ok ? "" : data.error;
  showErrors();
  if (ok) await render(data);
}
function setImg(id, src, zoom) {
  const im = $(id); im.src = src;
  return im.decode().then(() => { if (zoom) im.style.width = zoom * im.naturalWidth + "px"; }).catch(() => {});
}
function code(view, data) { $(view + "-python").textContent = data.python; $(view + "-cli").textContent = data.cli; }

function refreshImages(started) {
  const q = query({index: selected});
  return call("images", "/api/images", q, async data => {
    const box = $("images");
    box.replaceChildren(...data.images.map((src, i) => {
      const im = document.createElement("img");
      im.src = src; im.alt = "image " + i;
      if (i === data.index) im.className = "selected";
      im.onclick = () => { selected = i; refreshImages(performance.now()); };
      return im;
    }));
    await Promise.all([...box.querySelectorAll("img")].map(im => im.decode().catch(() => {})).concat(
      ["mask", "foreground", "background"].map(k => setImg("part-" + k, data.parts[k]))));
    code("images", data);
    $("download-png").href = "/download/images.png?" + q;
    $("download-npz").href = "/download/parts.npz?" + q;
    if (started !== undefined) document.body.dataset.imagesMs = (performance.now() - started).toFixed(1);
    document.body.dataset.imagesDone = (+(document.body.dataset.imagesDone || 0) + 1).toString();
  });
}
function refreshGrid() {
  const q = query({rows: $("rows").value, cols: $("cols").value, row_classes: $("row_classes").value,
                   col_classes: $("col_classes").value});
  return call("grid", "/api/grid", q, async data => {
    await setImg("grid", data.image, 2);
    code("grid", data);
    $("download-grid").href = "/download/grid.png?" + q;
  });
}
function showAlpha() {
  const k = +$("alpha").value, steps = +$("alpha").max + 1;
  $("alpha-value").textContent = "alpha " + (k / Math.max(1, steps - 1)).toFixed(3);
  if (!strip) return;
  const c = $("alpha-view").getContext("2d");
  c.imageSmoothingEnabled = false;
  c.drawImage(strip.image, strip.pad + k * (strip.cell + strip.pad), strip.top + strip.pad, strip.cell, strip.cell, 0, 0, 128, 128);
}
function refreshInterpolation() {
  const q = query({mechanism: $("mechanism").value, start: $("start").value, end: $("end").value,
                   steps: $("steps").value});
  return call("interpolation", "/api/interpolate", q, async data => {
    await setImg("interpolation", data.image, 2);
    strip = {image: $("interpolation"), cell: data.cell, pad: data.pad, top: data.top};
    $("alpha").max = data.steps - 1;
    showAlpha();
    code("interpolation", data);
    $("download-interpolation").href = "/download/interpolation.png?" + q;
  });
}
async function refreshAll() {
  // the images first: the grid and interpolation would share the server's CPU with them
  await refreshImages(performance.now());
  await Promise.all([refreshGrid(), refreshInterpolation()]);
}
function options(select, items, keep) {
  const old = select.value;
  select.replaceChildren(...items.map(([value, text]) => new Option(text, value)));
  if (keep && items.some(([v]) => v === old)) select.value = old;
}
async function loadModel() {
  await call("model", "/api/model", query(), async data => {
    const names = data.class_names.map((name, i) => [String(i), name === String(i) ? name : i + ": " + name]);
    for (const id of ["shape", "texture", "bg"]) options($(id), [["random", "random"], ...names], true);
    options($("start"), names, true);
    options($("end"), names, true);
    if ($("start").value === $("end").value && names.length > 1) $("end").value = names[names.length - 1][0];
    options($("backend"), data.backends.map(b => [b, b]), true);
  });
  selected = 0;
  await refreshAll();
}
async function init() {
  const r = await fetch("/api/index");
  const data = await r.json();
  options($("model"), data.models.map(m => [m, m]));
  const mech = data.mechanisms.map(m => [m, m]);
  options($("rows"), mech); options($("cols"), mech); options($("mechanism"), mech);
  $("cols").value = "bg";
  $("model").onchange = loadModel;
  for (const id of ["shape", "texture", "bg", "seed", "n", "backend"]) $(id).onchange = () => { selected = 0; refreshAll(); };
  for (const id of ["rows", "cols", "row_classes", "col_classes"]) $(id).onchange = refreshGrid;
  for (const id of ["mechanism", "start", "end", "steps"]) $(id).onchange = refreshInterpolation;
  $("alpha").oninput = showAlpha;
  await loadModel();
  document.body.dataset.ready = "1";
}
init();
</script>
</body></html>
"""
