"""``pycgn explore``: the JSON API and downloads against pycgn.generate / grid / interpolate, the code it
shows, bad and hostile input, and the page itself in a real browser (Chromium driven by Selenium)."""
import base64
import io
import json
import os
import shlex
import statistics
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from urllib.parse import urlencode

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

import pycgn
from pycgn import explore
from pycgn.cli import main
from pycgn.sheets import tile

MODEL = "colored_mnist"  # shipped: what a user sees first
CHROMIUM, CHROMEDRIVER = Path("/usr/bin/chromium"), Path("/usr/bin/chromedriver")


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    from conftest import random_mnist
    return str(pycgn.save(random_mnist(7), tmp_path_factory.mktemp("explore") / "listed.pt"))


@pytest.fixture(scope="module")
def server(checkpoint):
    srv = explore.make_server([checkpoint], host="127.0.0.1", port=0, device="cpu")
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    try:
        yield srv
    finally:
        srv.shutdown()
        srv.server_close()
        thread.join(10)


def get(server, path, headers=None, method="GET"):
    """(status, body bytes) of one request to the server."""
    req = urllib.request.Request(explore.url_of(server) + path.lstrip("/"), headers=headers or {}, method=method)
    try:
        with urllib.request.urlopen(req, timeout=120) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def api(server, view, **params):
    status, body = get(server, f"/api/{view}?{urlencode(params)}")
    return status, json.loads(body)


def decode(data_url: str) -> np.ndarray:
    head, b64 = data_url.split(",", 1)
    assert head == "data:image/png;base64"
    return np.asarray(Image.open(io.BytesIO(base64.b64decode(b64))))


def run_cli(command: str, cwd: Path) -> np.ndarray:
    """Runs the page's command line (``pycgn ...``) in ``cwd`` and returns the PNG it wrote."""
    argv = shlex.split(command)
    assert argv[0] == "pycgn" and argv[-2] == "-o"
    out = cwd / argv[-1]
    assert main([*argv[1:-1], str(out)]) == 0
    return np.asarray(Image.open(out))


def run_python(code: str, cwd: Path, monkeypatch):
    """Runs the page's Python code in ``cwd``; returns its variables."""
    monkeypatch.chdir(cwd)
    scope = {}
    exec(code, scope)
    return scope


# -- the API ---------------------------------------------------------------------------------------

def test_images_and_parts_are_pycgn_generate(server, tmp_path, monkeypatch):
    args = dict(shape=3, texture=7, bg=None, n=6, seed=5)
    status, data = api(server, "images", model=MODEL, shape=3, texture=7, bg="random", n=6, seed=5,
                       backend="torch", index=2)
    assert status == 200, data
    want = pycgn.generate(**args, model=MODEL, backend="torch", device="cpu", return_parts=True, output="torch")
    got = np.stack([decode(u) for u in data["images"]])
    assert got.dtype == np.uint8 and np.array_equal(got, want.images.numpy())
    assert data["index"] == 2
    mask = decode(data["parts"]["mask"])
    assert mask.shape == (32, 32, 3)
    assert np.array_equal(mask[..., 0], (want.mask[2, 0].numpy() * 255).round().astype(np.uint8))
    fg = decode(data["parts"]["foreground"]).astype(int)
    assert np.abs(fg - ((want.foreground[2].permute(1, 2, 0).numpy() + 1) * 127.5)).max() <= 0.5 + 1e-3
    assert not np.array_equal(decode(data["parts"]["foreground"]), decode(data["parts"]["background"]))
    # the code on the page makes the same images
    assert np.array_equal(run_python(data["python"], tmp_path, monkeypatch)["images"], want.images)
    assert np.array_equal(run_cli(data["cli"], tmp_path), tile(want.images, cols=3))


def test_downloads_png_and_npz(server, tmp_path):
    q = "model=colored_mnist&shape=1&texture=2&bg=3&n=5&seed=9&backend=torch"
    status, png = get(server, f"/download/images.png?{q}")
    assert status == 200 and png.startswith(b"\x89PNG\r\n\x1a\n")
    images = pycgn.generate(shape=1, texture=2, bg=3, n=5, seed=9, model=MODEL, backend="torch", device="cpu")
    assert np.array_equal(np.asarray(Image.open(io.BytesIO(png))), tile(images, cols=3))
    status, npz = get(server, f"/download/parts.npz?{q}")
    assert status == 200
    with np.load(io.BytesIO(npz)) as z:
        assert np.array_equal(z["images"], images)
        assert z["mask"].shape == (5, 1, 32, 32) and z["foreground"].shape == (5, 3, 32, 32)
        assert z["shape"].tolist() == [1] * 5 and int(z["seed"]) == 9


def test_grid_and_interpolation_match_their_code(server, tmp_path, monkeypatch):
    status, data = api(server, "grid", model=MODEL, rows="texture", cols="bg", shape=4, seed=3, backend="torch",
                       row_classes="2, 5,7", col_classes="")
    assert status == 200, data
    sheet = decode(data["image"])
    plain = pycgn.grid(rows="texture", cols="bg", row_classes=[2, 5, 7], shape=4, seed=3, model=MODEL,
                       backend="torch", device="cpu", labels=False)
    assert sheet.shape[0] > plain.shape[0] and sheet.shape[1] > plain.shape[1], "no labels on the axes"
    run_python(data["python"], tmp_path, monkeypatch)
    assert np.array_equal(np.asarray(Image.open(tmp_path / "grid.png")), sheet)
    assert np.array_equal(run_cli(data["cli"], tmp_path), sheet)

    status, data = api(server, "interpolate", model=MODEL, mechanism="texture", start=1, end=8, steps=5, shape=3,
                       seed=2)
    assert status == 200, data
    sheet = decode(data["image"])
    plain = pycgn.interpolate("texture", start=1, end=8, steps=5, rows=1, shape=3, seed=2, model=MODEL, device="cpu",
                              labels=False)
    assert (data["steps"], data["cell"], data["pad"]) == (5, 32, 2) and data["top"] > 0
    assert np.array_equal(sheet[data["top"]:], plain), "the slider's cells are not where the page looks"
    run_python(data["python"], tmp_path, monkeypatch)
    assert np.array_equal(np.asarray(Image.open(tmp_path / "interpolation.png")), decode(data["image"]))
    assert np.array_equal(run_cli(data["cli"], tmp_path), decode(data["image"]))


def test_model_lists_class_names_and_listed_checkpoints(server, checkpoint):
    status, data = api(server, "index")
    assert status == 200 and data["models"] == [*pycgn.checkpoint.SHIPPED, checkpoint]
    status, data = api(server, "model", model=checkpoint)
    assert status == 200 and data["class_names"] == [str(i) for i in range(10)] and "torch" in data["backends"]


@pytest.mark.parametrize("view, params, words", [
    ("images", {"n": "abc"}, "n must be an integer"),
    ("images", {"n": "100000"}, f"n must be in 1..{explore.MAX_N}"),
    ("images", {"n": "0"}, "n must be in 1.."),
    ("images", {"seed": "-1"}, "seed must be in 0.."),
    ("images", {"shape": "purple"}, "unknown class 'purple'"),
    ("images", {"texture": "12"}, "class id 12"),
    ("images", {"backend": "nope"}, "backend must be one of"),
    ("images", {"n": "4", "index": "4"}, "index must be in 0..3"),
    ("grid", {"rows": "bg", "cols": "bg"}, "rows and cols must be different"),
    ("grid", {"rows": "nope"}, "rows must be one of"),
    ("grid", {"row_classes": ",".join(["1"] * 30)}, "the grid would have 300 cells"),
    ("grid", {"row_classes": "1,x"}, "unknown class 'x'"),
    ("interpolate", {"start": "random", "end": "3"}, "start and end must be classes"),
    ("interpolate", {"start": "1", "end": "3", "steps": "1"}, "steps must be in 2.."),
])
def test_bad_values_get_one_line(server, view, params, words):
    status, data = api(server, view, model=MODEL, **params)
    assert status == 400 and words in data["error"], data
    assert "\n" not in data["error"] and "Traceback" not in data["error"]


_opened = []
_watching = threading.Event()


def _audit(event, args):
    if _watching.is_set() and event == "open" and args and isinstance(args[0], (str, bytes, os.PathLike)):
        _opened.append(os.fsdecode(args[0]))


sys.addaudithook(_audit)  # hooks cannot be removed: this one records only while _watching is set


def test_hostile_requests_read_nothing(server, tmp_path, checkpoint):
    unlisted = str(pycgn.save(pycgn.MnistCGN(), tmp_path / "unlisted.pt"))
    hostile = ["../../etc/passwd", "/etc/passwd", unlisted, "pycgn/weights/colored_mnist.pt",
               checkpoint + "/../listed.pt", "", " ", "colored_mnist\x00"]
    _opened.clear()
    _watching.set()
    try:
        for value in hostile:
            for view in ("model", "images", "grid", "interpolate"):
                status, data = api(server, view, model=value, start=0, end=1)
                assert status == 400 and "model must be one of" in data["error"], (value, data)
            status, body = get(server, f"/download/images.png?{urlencode({'model': value})}")
            assert status == 400, (value, body)
        for path in ("/../../etc/passwd", "/download/../../etc/passwd", "/api/../../../etc/passwd", "/etc/passwd",
                     "/%2e%2e/%2e%2e/etc/passwd", "/download/%2e%2e%2fetc%2fpasswd"):
            status, body = get(server, path)
            assert status in (400, 404) and b"root:" not in body, (path, body)
        status, body = get(server, "/api/images?model=colored_mnist", method="POST")
        assert status == 405
        status, body = get(server, "/api/index", headers={"Host": "attacker.example:7860"})  # DNS rebinding
        assert status == 400 and b"addressed to 127.0.0.1" in body
    finally:
        _watching.clear()
    assert not [p for p in _opened if "passwd" in p or "unlisted" in p], _opened


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.dictionaries(st.sampled_from(["model", "shape", "texture", "bg", "seed", "n", "backend", "index", "rows",
                                        "cols", "mechanism", "start", "end", "steps", "row_classes", "col_classes"]),
                       st.one_of(st.text(max_size=12), st.integers(-3, 300).map(str),
                                 st.sampled_from(["random", "colored_mnist", "torch", "shape", "bg", "3", "9"])),
                       max_size=8),
       st.sampled_from(["model", "images", "grid", "interpolate"]))
def test_fuzzed_forms_answer_or_refuse_in_one_line(form, view):
    ex = explore.Explorer(device="cpu")
    try:
        out = getattr(ex, view)(explore.Form(urlencode(form)))
    except (ValueError, TypeError) as e:  # what the server turns into a 400 with this message
        assert str(e).strip(), type(e)
    else:
        assert isinstance(out, dict) and json.dumps(out)


def test_cli_refuses_a_missing_model_and_warns_off_loopback(tmp_path, capsys, monkeypatch):
    assert main(["explore", "--model", str(tmp_path / "none.pt"), "--port", "0"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "no such file" in err[0]
    served = []
    monkeypatch.setattr(explore.ThreadingHTTPServer, "serve_forever", lambda self: served.append(self))
    assert main(["explore", "--host", "0.0.0.0", "--port", "0"]) == 0
    out, err = capsys.readouterr()
    assert served and "warning: serving on 0.0.0.0" in err and "serving on http://0.0.0.0:" in out
    assert main(["explore", "--port", "0"]) == 0
    out, err = capsys.readouterr()
    assert "warning" not in err and "serving on http://127.0.0.1:" in out


# -- the page in a real browser --------------------------------------------------------------------

@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    if not (CHROMIUM.is_file() and CHROMEDRIVER.is_file()):
        pytest.skip(f"{CHROMIUM} or {CHROMEDRIVER} is absent (Debian: apt-get install chromium chromium-driver; "
                    ".ci/run installs them)")
    webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is in the test extra")
    from selenium.webdriver.chrome.service import Service
    downloads = tmp_path_factory.mktemp("downloads")
    opts = webdriver.ChromeOptions()
    opts.binary_location = str(CHROMIUM)
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--disable-dev-shm-usage", "--window-size=1200,2000",
                 f"--user-data-dir={tmp_path_factory.mktemp('chromium-profile')}"):
        opts.add_argument(flag)
    opts.add_experimental_option("prefs", {"download.default_directory": str(downloads),
                                           "download.prompt_for_download": False})
    # an explicit driver: Selenium Manager (which may download one) never runs
    driver = webdriver.Chrome(service=Service(executable_path=str(CHROMEDRIVER)), options=opts)
    try:
        driver.execute_cdp_cmd("Browser.setDownloadBehavior", {"behavior": "allow", "downloadPath": str(downloads)})
        driver.downloads = downloads
        yield driver
    finally:
        driver.quit()


def wait_for(driver, condition, what, timeout=120):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        value = condition()
        if value:
            return value
        time.sleep(0.02)
    raise AssertionError(f"timed out waiting for {what}; page error: {driver.find_element('id', 'error').text!r}")


def page_images(driver):
    return np.stack([decode(im.get_attribute("src")) for im in driver.find_elements("css selector", "#images img")])


def done(driver) -> int:
    return int(driver.execute_script("return document.body.dataset.imagesDone || 0"))


def idle(driver):
    wait_for(driver, lambda: driver.execute_script("return document.body.dataset.pending") == "0", "idle page")


def change(driver, element_id, value):
    """Sets a form field as a user would and waits for the images it shows next; returns the seconds taken."""
    from selenium.webdriver.support.ui import Select
    idle(driver)  # what is measured is one change, not a queue of them
    before = done(driver)
    el = driver.find_element("id", element_id)
    start = time.perf_counter()
    if el.tag_name == "select":
        Select(el).select_by_value(str(value))
    else:
        el.clear()
        el.send_keys(str(value))
        driver.execute_script("arguments[0].dispatchEvent(new Event('change'))", el)
    wait_for(driver, lambda: done(driver) > before, f"images after {element_id}={value}")
    return time.perf_counter() - start


def test_page_in_a_browser(server, browser):
    from selenium.webdriver.support.ui import Select
    d = browser
    d.get(explore.url_of(server))
    wait_for(d, lambda: d.execute_script("return document.body.dataset.ready"), "the page")
    assert d.title == "pycgn explore"
    texture = Select(d.find_element("id", "texture"))
    assert [o.text for o in texture.options][:3] == ["random", "0", "1"]  # names, with "random"
    Select(d.find_element("id", "backend")).select_by_value("torch")
    wait_for(d, lambda: len(d.find_elements("css selector", "#images img")) == 16, "16 images")

    # the page's images are pycgn.generate's, and a texture class changes them
    change(d, "n", 8)
    change(d, "seed", 11)
    before = page_images(d)
    assert np.array_equal(before, pycgn.generate(n=8, seed=11, model=MODEL, backend="torch", device="cpu"))
    change(d, "texture", 7)
    after = page_images(d)
    assert not np.array_equal(before, after)
    assert np.array_equal(after, pycgn.generate(texture=7, n=8, seed=11, model=MODEL, backend="torch", device="cpu"))

    # how live it feels: class or seed changed -> new images decoded on the page (reported, not asserted)
    change(d, "n", 16)
    walls, pages = [], []
    for element_id, value in [("texture", 3), ("seed", 12), ("shape", 5), ("seed", 13), ("bg", 2), ("texture", 9)]:
        walls.append(change(d, element_id, value))
        pages.append(float(d.execute_script("return document.body.dataset.imagesMs")))
    print(f"\nexplore latency, change of class/seed -> new images shown (n=16, {MODEL}, torch): "
          f"page {statistics.median(pages):.0f} ms median (max {max(pages):.0f}), "
          f"WebDriver round trip {1000 * statistics.median(walls):.0f} ms median")

    # the parts of a clicked image: three panels, the clicked image's own
    images = d.find_elements("css selector", "#images img")
    before = done(d)
    images[3].click()
    wait_for(d, lambda: done(d) > before, "the parts of image 3")
    panels = d.find_elements("css selector", "#parts img")
    assert len(panels) == 3 and all(p.get_attribute("naturalWidth") == "32" for p in panels)
    parts = pycgn.generate(shape=5, texture=9, bg=2, n=16, seed=13, model=MODEL, backend="torch", device="cpu",
                           return_parts=True, output="torch")
    mask = decode(d.find_element("id", "part-mask").get_attribute("src"))[..., 0]
    assert np.array_equal(mask, (parts.mask[3, 0].numpy() * 255).round().astype(np.uint8))
    assert "selected" in d.find_elements("css selector", "#images img")[3].get_attribute("class")
    assert "pycgn.generate(shape=5, texture=9, bg=2, n=16, model='colored_mnist', seed=13, backend='torch'" in \
        d.find_element("id", "images-python").text
    assert d.find_element("id", "images-cli").text.startswith("pycgn generate --model colored_mnist --shape 5")

    # the grid carries labels, the interpolation strip a slider
    grid = d.find_element("id", "grid")
    wait_for(d, lambda: int(grid.get_attribute("naturalWidth") or 0) > 10 * 34, "the grid")
    slider = d.find_element("id", "alpha")
    assert slider.get_attribute("max") == "8"
    d.execute_script("arguments[0].value = 8; arguments[0].dispatchEvent(new Event('input'))", slider)
    assert d.find_element("id", "alpha-value").text == "alpha 1.000"

    # a bad value: a message on the page, no traceback, and the next good value clears it
    before = d.find_element("id", "images").get_attribute("innerHTML")
    el = d.find_element("id", "n")
    el.clear()
    el.send_keys("abc")
    d.execute_script("arguments[0].dispatchEvent(new Event('change'))", el)
    msg = wait_for(d, lambda: d.find_element("id", "error").text, "an error message")
    assert "n must be an integer" in msg and "Traceback" not in msg
    assert d.find_element("id", "images").get_attribute("innerHTML") == before
    Select(d.find_element("id", "rows")).select_by_value("bg")
    wait_for(d, lambda: "rows and cols must be different" in d.find_element("id", "error").text, "the grid's error")
    Select(d.find_element("id", "rows")).select_by_value("shape")
    change(d, "n", 8)
    wait_for(d, lambda: d.find_element("id", "error").text == "", "the message to clear")

    # the download is the PNG that `pycgn generate ... --scale 1` writes
    d.find_element("id", "download-png").click()
    png = d.downloads / "images.png"
    wait_for(d, lambda: png.is_file() and not list(d.downloads.glob("*.crdownload")), "the downloaded PNG")
    with Image.open(png) as im:
        im.verify()
    assert np.array_equal(np.asarray(Image.open(png)), tile(parts.images[:8], cols=3))
