"""The benchmarks cannot rot: each one's --quick smoke run must write its report with its table rows.

The harness's own logic (interleaving, allocator environments, tables) is checked directly, fast.
"""
from __future__ import annotations

import argparse
import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

BENCH = Path(__file__).resolve().parents[1] / "benchmarks"
# loaded from its file: benchmarks/ on sys.path would let its scripts' names shadow other modules
_spec = importlib.util.spec_from_file_location("_harness", BENCH / "_harness.py")
H = sys.modules["_harness"] = importlib.util.module_from_spec(_spec)  # (dataclasses look it up there)
_spec.loader.exec_module(H)

NUM = r"[\d.,]+"
# benchmark, extra arguments (trimmed to keep the slow set near 3 minutes), rows its report must have
QUICK = {
    "composite": (["--cpu-variants"], [rf"^\| 128x3x32x32 shuffle \| float32 NCHW \| pycgn \| {NUM} \| {NUM}% \|",
                                       rf"^\| 8x3x256x256 shuffle \| uint8 NHWC \| eager \| {NUM} \|",
                                       rf"^\| 8x3x256x256 plain \| uint8 NHWC \| copy \(same bytes\) \| {NUM} \|",
                                       r"^## Allocator: glibc ",
                                       rf"^\| 8x3x256x256 plain \| uint8 NHWC \| pycgn out= \| {NUM} \| {NUM}% \| {NUM} \| {NUM}% \| {NUM}x \|$"]),
    "bf16": ([], [rf"^\| wildlife_mnist \| {NUM} \| {NUM} \| \d+ \| {NUM} % \|",
                  rf"^\| torch bfloat16 \| \d+ \| {NUM}x \| \d+ \| \d+ % \|"]),
    "generators": (["--configs", "tcmalloc" if H.tcmalloc_path() else "glibc+pycgn"],
                   [rf"^\| 16 \| 3 \| {NUM} \({NUM}x, {NUM} f, \d+%\) \|.* \| (torch|onnxruntime|torchscript) \| {NUM} \|$",
                    rf"^\| 1 \| 3 \| {NUM} \("]),
    "synth": (["--no-bf16"], [rf"^\| published, glibc malloc \| \d+ \| {NUM} \| \d+ \| {NUM}x \|",
                              rf"^\| pycgn synth \| \d+ \| {NUM} \| \d+ \| {NUM}x \|"]),
    "imagenet": ([], [rf"^\| eager \| 1 \| {NUM} \| {NUM} \| 1.00x \| {NUM} \| \d+% \|"]),
    "bg_nets": ([], [rf"^\| 16 \| three nets, periodic, torch \| [\d,]+ \| {NUM}x \| \d+% \|",
                     r"^\| 16 \| background net, dense \| [\d,]+ \| 1.00x \| - \|"]),
    # colored_mnist: its off-palette test needs no texture photos
    "invariance_parts": (["--model", "colored_mnist", "--tests", "palette,off-palette"],
                         [rf"^\| real masks, real random textures .* \| {NUM} % \| {NUM} % \| \d+ \|",
                          rf"^\| all from the CGN .* \| {NUM} % \| {NUM} % \| \d+ \|",
                          r"^\| training images \| palette test \| off-palette test \| seconds \|"]),
}


def _run(script: str, args: list[str], out: Path) -> str:
    cmd = [sys.executable, str(BENCH / f"{script}.py"), *args, "--out", str(out)]
    # One thread: the figures are not checked, and on a loaded shared machine two-thread runs crawl
    # (each OpenMP barrier waits for a descheduled thread).
    env = {**os.environ, "PYCGN_CACHE_DIR": str(out.parent / "cache"), "OMP_NUM_THREADS": "1"}
    p = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=BENCH.parent, timeout=1200)
    assert p.returncode == 0, f"{' '.join(cmd)} exited {p.returncode}:\n{p.stderr[-3000:]}"
    assert out.is_file(), f"{script} wrote no report"
    assert not list(out.parent.glob(f".{out.name}.*")), "a temporary report was left behind"
    return out.read_text()


def _check_rows(text: str, patterns: list[str]) -> None:
    for pat in patterns:
        assert re.search(pat, text, re.M), f"no row matching {pat!r} in the report:\n{text}"
    assert f"`{H.cpu_model()}`" in text, "the report does not name the CPU model"


@pytest.mark.slow
@pytest.mark.parametrize("script", list(QUICK))
def test_quick_run_writes_its_report(script, tmp_path):
    args, rows = QUICK[script]
    _check_rows(_run(script, ["--quick", *args], tmp_path / f"{script}.md"), rows)


@pytest.mark.slow
def test_composite_cuda_writes_its_report(tmp_path):
    if not torch.cuda.is_available():
        pytest.skip("no CUDA device: the CUDA benchmark needs one")
    text = _run("composite", ["--device", "cuda", "--cuda-reps", "5"], tmp_path / "c.md")
    _check_rows(text, [rf"^\| 64x3x256x256 \| uint8 NHWC \| pycgn \| {NUM} \| {NUM} \| \d+% \|", r"^Bar: "])


# ---- the harness itself (fast) ----

def test_composite_cuda_code_rehearsed_on_the_cpu():
    """benchmarks/composite.py's CUDA run is the same code on the CPU, with small and odd cases:
    a lent GPU gives it one try, so it must not first run there. Its check of every candidate
    against the reference runs too (a wrong image raises)."""
    spec = importlib.util.spec_from_file_location("_bench_composite", BENCH / "composite.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    args = argparse.Namespace(cases=[(4, 32), (3, 37)], cuda_reps=2, cuda_burst=2, cuda_compile=False)
    text = bench.run_cuda(args, device="cpu")
    for pat in [r"^## CPU rehearsal of the CUDA run ",
                rf"^\| 3x3x37x37 \| uint8 NHWC \| pycgn out= \| {NUM} \| {NUM} \| \d+% \| \d+% \| {NUM}x \|$",
                rf"^\| 4x3x32x32 \| float32 NCHW \| eager \| {NUM} \|",
                rf"^\| 3x3x37x37 \| float32 NCHW \| copy \(same bytes\) \| {NUM} \| {NUM} \| \d+% \| 100% \|",
                r"^Bar: pycgn >= 80% of a same-bytes device copy's rate at 37x37: worst \d+% -> (PASS|FAIL)$"]:
        assert re.search(pat, text, re.M), f"no line matching {pat!r} in:\n{text}"


def test_interleave_takes_turns_with_warmup_and_bounds():
    order = []
    cands = {"a": lambda: order.append("a"), "b": lambda: order.append("b")}
    t = H.interleave(cands, min_rounds=3, max_rounds=3, warmup=2)
    assert order == ["a", "a", "b", "b"] + ["a", "b"] * 3
    assert [x.rounds for x in t.values()] == [3, 3] and t["a"].calls == 3
    assert t["a"].best <= t["a"].median and t["a"].spread >= 0
    # a turn repeats its call until turn_calls; before(i) precedes every turn, numbered across candidates
    seen, order[:] = [], []
    t = H.interleave(cands, min_rounds=2, max_rounds=2, warmup=0, turn_calls=4, before=seen.append)
    assert seen == [0, 1, 2, 3] and t["b"].calls == 8 and len(order) == 16
    # the budget stops rounds after min_rounds; max_rounds caps them
    assert H.interleave(cands, min_rounds=1, max_rounds=50, budget=0)["a"].rounds == 1
    assert H.interleave(cands, min_rounds=1, max_rounds=4, budget=60)["a"].rounds == 4


def test_allocator_env(monkeypatch, tmp_path):
    monkeypatch.setenv("LD_PRELOAD", "/somewhere/libother.so")
    monkeypatch.setenv("KEEP", "1")
    env = H.allocator_env("glibc", DROP=None, ADD="x")
    assert "LD_PRELOAD" not in env and env["KEEP"] == "1" and env["ADD"] == "x" and "DROP" not in env
    monkeypatch.setenv("PYCGN_TCMALLOC", str(tmp_path / "absent.so"))
    with pytest.raises(FileNotFoundError, match="PYCGN_TCMALLOC"):
        H.allocator_env("tcmalloc")
    fake = tmp_path / "libtcmalloc_minimal.so.4"
    fake.write_bytes(b"")
    monkeypatch.setenv("PYCGN_TCMALLOC", str(fake))
    assert H.allocator_env("tcmalloc")["LD_PRELOAD"] == str(fake)
    with pytest.raises(ValueError, match="allocator must be"):
        H.allocator_env("jemalloc")


def test_allocator_in_use_sees_preloaded_tcmalloc():
    path = H.tcmalloc_path()
    if path is None:
        pytest.skip("libtcmalloc_minimal.so.4 is not installed (apt-get install libtcmalloc-minimal4)")
    code = "import _harness as H; print(H.allocator_in_use())"
    for alloc in ("glibc", "tcmalloc"):
        p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=BENCH,
                           env=H.allocator_env(alloc), check=True)
        assert p.stdout.strip() == alloc


def test_table_and_report(tmp_path, monkeypatch):
    lines = H.table(["case", "ms", "x"], [["a", 1.5, H.ratio(2)], ["b", 3, H.share(0.25)]], "lrr")
    assert lines == ["| case | ms | x |", "|---|---:|---:|", "| a | 1.5 | 2.00x |", "| b | 3 | 25% |"]
    out = tmp_path / "sub" / "r.md"
    H.write_report(out, "hello\n", echo=False)
    assert out.read_text() == "hello\n" and [p.name for p in out.parent.iterdir()] == ["r.md"]
    assert set(H.cpu_flags()) == set(H.ISA) and H.cpu_model() in H.machine_line()
    monkeypatch.setattr(sys, "argv", ["/x/benchmarks/imagenet.py", "--quick", H.CHILD_FLAG, "/tmp/c.json", "--n", "3"])
    assert H.command() == "`python benchmarks/imagenet.py --quick --n 3`"  # a child reports its parent's command
