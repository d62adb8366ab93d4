"""The engines that make shards: this process (``run_local``), local processes
(``run_processes``) and Ray actors (``run_ray``), and the generation of one shard's arrays.

Every engine calls ``done(record)`` once a shard is renamed into place and ``progress(count)``
as images are made; a shard's bytes never depend on the engine, its workers or the batch size.
"""
from __future__ import annotations

import queue
import threading
import time
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch

from .design import make_sampler
from .format import INPUTS, LABELS, Plan, encode
from .store import SynthError, store_shard

DEFAULT_BATCH = 256
# Some kernels take another code path for a batch of one (a GEMV instead of a GEMM) and differ in
# the last bit; smaller batches are padded so a sample's bits never depend on its batch.
MIN_BATCH = 8
# timings of the latest local run in this process, for benchmarks (not part of the data)
LAST_RUN: dict = {}


class _Buffer:
    """Preallocated arrays for one shard; reused so memory stays flat."""

    def __init__(self, capacity: int, size: int, latent: int):
        self.capacity = capacity
        self.images = np.empty((capacity, size, size, 3), dtype=np.uint8)
        self.arrays = {name: np.empty(capacity, dtype=np.int64) for name in LABELS}
        for name in ("u_shape", "u_texture", "u_bg"):
            self.arrays[name] = np.empty((capacity, latent), dtype=np.float32)
        for name in ("fg_offset", "bg_offset"):
            self.arrays[name] = np.empty((capacity, 2), dtype=np.int64)

    def view(self, count: int) -> dict[str, np.ndarray]:
        out = {"images": self.images[:count]}
        out.update({k: v[:count] for k, v in self.arrays.items()})
        return out


def _pad(draw, m: int):
    from ..sampler import Draw
    reps = -(-m // len(draw))
    return Draw(**{k: v.repeat(reps, *([1] * (v.dim() - 1)))[:m] for k, v in vars(draw).items()})


def _fill(gen, sampler, buf: _Buffer, start: int, count: int, batch_size: int, progress=None) -> None:
    """Generate samples start..start+count-1 into ``buf`` in batches; batches never cross shards."""
    for a in range(0, count, batch_size):
        b = min(a + batch_size, count)
        draw = sampler.draw(range(start + a, start + b))
        for name in LABELS + INPUTS:
            buf.arrays[name][a:b] = getattr(draw, name).numpy()
        if b - a < MIN_BATCH:
            images = gen.images(_pad(draw, MIN_BATCH))[: b - a]
            buf.images[a:b] = images.cpu().numpy()
        else:
            images = gen.images(draw, out=torch.from_numpy(buf.images[a:b]))
            if images.data_ptr() != buf.images[a:b].ctypes.data:  # a runtime that ignores ``out``
                buf.images[a:b] = images.cpu().numpy()
        if progress is not None:
            progress(b - a)


def run_local(gen, sampler, plan: Plan, todo, batch_size: int, out: Path, done, progress,
              pool: int = 2) -> None:
    """Generate shards ``todo`` in this process while a writer thread encodes and writes them.

    ``done(record)`` is called (from the writer thread) after each shard is renamed into place.
    At most ``pool`` shard buffers exist: memory is independent of ``n``.
    """
    size, latent = gen.model.image_size, gen.model.latent_dim
    free: queue.Queue = queue.Queue()
    for _ in range(pool):
        free.put(None)
    full: queue.Queue = queue.Queue()
    failure: list[BaseException] = []

    stats = {"generator_waited_s": 0.0, "writer_busy_s": 0.0}

    def writer():
        while True:
            item = full.get()
            if item is None:
                return
            sid, buf, start, count = item
            t = time.perf_counter()
            try:
                if not failure:
                    files = encode(plan.fmt, buf.view(count), plan)
                    sha = store_shard(out, plan.name(sid), files)
                    del files
                    done({"name": plan.name(sid), "start": start, "count": count, "sha256": sha})
            except BaseException as e:  # noqa: BLE001 - handed to the generating thread
                failure.append(e)
            finally:
                stats["writer_busy_s"] += time.perf_counter() - t
                free.put(buf)

    thread = threading.Thread(target=writer, name="pycgn-synth-writer", daemon=True)
    thread.start()
    try:
        for sid in todo:
            start, count = plan.range(sid)
            t = time.perf_counter()
            buf = free.get()
            stats["generator_waited_s"] += time.perf_counter() - t
            if failure:
                break
            if buf is None or buf.capacity < count:
                buf = _Buffer(max(count, plan.shard_size if plan.n > plan.shard_size else count), size, latent)
            _fill(gen, sampler, buf, start, count, batch_size, progress)
            full.put((sid, buf, start, count))
    finally:
        full.put(None)
        thread.join()
        LAST_RUN.update(stats)
    if failure:
        raise failure[0]


def _worker_main(model, backend, device, seed, k, plan, batch_size, threads, tasks, results, out, design,
                 precision="float32"):
    """One process of ``workers > 1``: pulls shard ids, reports progress and finished shards."""
    try:
        torch.set_num_threads(threads)
        from ..api import Generator
        gen = Generator(model, backend, device, precision=precision)
        sampler = make_sampler(gen, seed, k, design)
        run_local(gen, sampler, plan, iter(tasks.get, None), batch_size, out,
                  done=lambda rec: results.put(("done", rec)),
                  progress=lambda m: results.put(("progress", m)))
        results.put(("exit", None))
    except BaseException as e:  # noqa: BLE001 - reported to the parent in one line
        results.put(("error", f"{type(e).__name__}: {e}"))


def run_processes(model, backend, device, seed, k, plan, todo, batch_size, workers, out, done, progress,
                  design=None, precision="float32"):
    """Shards ``todo`` made by ``workers`` spawned processes, each a ``run_local``."""
    import multiprocessing as mp
    ctx = mp.get_context("spawn")  # fork would copy torch's thread pools and locks
    tasks, results = ctx.Queue(), ctx.Queue()
    for sid in todo:
        tasks.put(sid)
    for _ in range(workers):
        tasks.put(None)
    threads = max(1, torch.get_num_threads() // workers)
    procs = [ctx.Process(target=_worker_main, daemon=True,
                         args=(model, backend, device, seed, k, plan, batch_size, threads, tasks, results, out,
                               design, precision))
             for _ in range(workers)]
    for p in procs:
        p.start()
    live, error = len(procs), None
    try:
        while live:
            try:
                kind, value = results.get(timeout=1.0)
            except queue.Empty:
                if not any(p.is_alive() for p in procs) and results.empty():
                    error = error or "a worker process died"
                    break
                continue
            if kind == "progress":
                progress(value)
            elif kind == "done":
                done(value)
            elif kind == "exit":
                live -= 1
            else:
                error, live = value, live - 1
                break
    finally:
        if error:
            for p in procs:
                if p.is_alive():
                    p.terminate()
        for p in procs:
            p.join()
    if error:
        raise SynthError(f"worker failed: {error}")


class _RayWorker:
    """A Ray actor: one Generator, makes whole shards and returns their encoded files."""

    def __init__(self, model, backend, device, seed, k, plan, threads, design=None, precision="float32"):
        torch.set_num_threads(threads)
        from ..api import Generator
        self.gen = Generator(model, backend, device, precision=precision)
        self.sampler = make_sampler(self.gen, seed, k, design)
        self.plan = plan
        m = self.gen.model
        self.buf = _Buffer(min(plan.shard_size, plan.n), m.image_size, m.latent_dim)

    def make(self, sid: int, batch_size: int):
        start, count = self.plan.range(sid)
        _fill(self.gen, self.sampler, self.buf, start, count, batch_size)
        files = encode(self.plan.fmt, self.buf.view(count), self.plan)
        return sid, {k: bytes(v) for k, v in files.items()}


@contextmanager
def ray_session(address: str | None):
    """Ray, connected to the cluster at ``address`` (or a new local one) for the block; a session
    already open in this process is used as it is. Failing to connect is a ``ValueError``: the
    caller connects before it creates anything, so a run that cannot start leaves nothing behind."""
    try:
        import ray
    except ImportError:
        raise ValueError("engine 'ray' needs Ray: pip install 'pycgn[ray]' (or use --engine local)") from None
    if ray.is_initialized():
        yield ray
        return
    kw = {"include_dashboard": False, "log_to_driver": False, "configure_logging": False}
    try:
        ray.init(address=address, **kw) if address else ray.init(**kw)
    except (ConnectionError, RuntimeError, ValueError, TimeoutError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        where = f"ray_address: cannot connect to a Ray cluster at {address!r}" if address else \
            "engine 'ray': cannot start a local Ray cluster"
        raise ValueError(f"{where} ({first})") from None
    try:
        yield ray
    finally:
        ray.shutdown()


# tries of one shard on Ray before the run gives up: a shard that kills every worker it meets
# (out of memory, say) must not take the whole cluster down with it
RAY_TRIES = 3


def _lost_errors(ray) -> tuple:
    """Ray's errors that mean a worker, its node or a result was lost (not a bug in the shard)."""
    e = ray.exceptions
    return tuple(getattr(e, name) for name in ("RayActorError", "WorkerCrashedError", "NodeDiedError",
                                                "ObjectLostError", "OutOfMemoryError", "LocalRayletDiedError")
                 if hasattr(e, name))


def run_ray(ray, model, backend, device, seed, k, plan, todo, batch_size, workers, out, done, progress,
            design=None, precision="float32"):
    """Shards ``todo`` made by Ray actors (one per CPU unless ``workers``); this process writes them.

    A shard whose actor dies (its process or node lost) goes back to the queue and is made by a
    surviving actor: the bytes do not depend on who makes them. The run stops with ``SynthError``
    when no actor is left or a shard has failed ``RAY_TRIES`` times; finished shards stay valid.
    """
    cpus = float(ray.cluster_resources().get("CPU", 1.0))
    actors = workers or max(1, int(cpus))
    # fractional CPUs: actors must fit beside the driver and other tasks, or they wait forever
    share = max(0.01, min(1.0, cpus / actors) * 0.5)
    threads = max(1, int(cpus // actors)) if workers else 1
    # spread over the nodes: more memory bandwidth, and a lost node takes fewer actors with it
    cls = ray.remote(num_cpus=share, scheduling_strategy="SPREAD")(_RayWorker)
    model_ref = ray.put(model)
    pool = {a: cls.remote(model_ref, backend, device, seed, k, plan, threads, design, precision)
            for a in range(actors)}
    lost, tries = _lost_errors(ray), {}
    pending: dict = {}  # result ref -> (actor number, shard id)
    todo = list(reversed(todo))

    def feed():  # two shards in flight per actor: one generating, one returning
        for a, actor in pool.items():
            while todo and sum(1 for b, _ in pending.values() if b == a) < 2:
                sid = todo.pop()
                pending[actor.make.remote(sid, batch_size)] = (a, sid)

    try:
        feed()
        while pending:
            ready, _ = ray.wait(list(pending), num_returns=1)
            a, sid = pending.pop(ready[0])
            try:
                _, files = ray.get(ready[0])
            except lost as e:
                why = " ".join(str(e).split())[:300] or type(e).__name__
                tries[sid] = tries.get(sid, 0) + 1
                if tries[sid] >= RAY_TRIES:
                    raise SynthError(f"shard {plan.name(sid)} failed on {RAY_TRIES} Ray workers (last: {why}); "
                                     f"the cluster cannot finish this run; finished shards are kept, rerun "
                                     f"the same command to resume") from None
                pool.pop(a, None)  # dead, or unreliable: the others take its shards
                todo.append(sid)
                if not pool:
                    raise SynthError(f"every Ray worker was lost (last: {why}); the cluster cannot finish "
                                     f"this run; finished shards are kept, rerun the same command to "
                                     f"resume") from None
                feed()
                continue
            feed()
            start, count = plan.range(sid)
            done({"name": plan.name(sid), "start": start, "count": count,
                  "sha256": store_shard(out, plan.name(sid), files)})
            progress(count)
            del files
    finally:
        for actor in pool.values():  # an error leaves shards in flight: stop them now
            ray.kill(actor)
