"""pycgn synth on a Ray cluster that loses a node mid-run (a real multi-node cluster on this machine)."""
import json
import shutil
import tempfile
import threading
import time

import pytest

from test_synth import random_checkpoint, run, shard_files


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    return random_checkpoint(tmp_path_factory.mktemp("ckpt"))

@pytest.mark.slow
def test_ray_node_lost_mid_run_gives_the_local_dataset(ckpt, tmp_path, monkeypatch):
    """A three-node Ray cluster on this machine (a head for the driver, two worker nodes); one
    worker node is killed (raylet and all) once the first shard is written. The run finishes on
    the other node and its dataset is the local engine's, byte for byte."""
    ray = pytest.importorskip("ray", reason="ray is the extra pycgn[ray]; the local engine needs no Ray")
    from ray.cluster_utils import Cluster
    if ray.is_initialized():
        pytest.skip("a Ray session is already open in this process")
    kw = dict(n=400, shard_size=20, counterfactuals=2, seed=5)
    run(ckpt, tmp_path / "local", **kw)
    total = 400 // 20
    # a short private temp folder: Ray's socket paths must stay short, and other Ray users of
    # this machine must neither see this cluster nor be seen
    short = tempfile.mkdtemp(prefix="pycgn-ray-", dir="/tmp")
    monkeypatch.setenv("RAY_TMPDIR", short)
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    out, at_kill = tmp_path / "ray", []
    cluster = Cluster()
    try:
        cluster.add_node(num_cpus=0)  # the head holds the driver only: actors go to the workers
        doomed = [cluster.add_node(num_cpus=1) for _ in range(2)][1]
        cluster.wait_for_nodes()
        ray.init(address=cluster.address, include_dashboard=False, log_to_driver=False)

        def kill_after_first_shard():
            deadline = time.monotonic() + 300
            while time.monotonic() < deadline:
                try:
                    written = len(json.loads((out / "manifest.json").read_text())["shards"])
                except (OSError, ValueError, KeyError):
                    written = 0
                if written:
                    at_kill.append(written)
                    cluster.remove_node(doomed, allow_graceful=False)
                    return
                time.sleep(0.02)

        real_get, failures = ray.get, []

        def get(*args, **kwargs):  # records what the engine met, to show the node's loss was seen
            try:
                return real_get(*args, **kwargs)
            except Exception as e:
                failures.append(type(e).__name__)
                raise

        monkeypatch.setattr(ray, "get", get)
        killer = threading.Thread(target=kill_after_first_shard, daemon=True)
        killer.start()
        m = run(ckpt, out, engine="ray", workers=2, batch_size=4, **kw)
        killer.join(timeout=60)
    finally:
        ray.shutdown()
        cluster.shutdown()
        shutil.rmtree(short, ignore_errors=True)
    assert at_kill and at_kill[0] < total, at_kill  # the node died with shards left to make
    assert failures and set(failures) <= {"ActorDiedError", "ActorUnavailableError", "NodeDiedError",
                                          "ObjectLostError", "OwnerDiedError"}, failures
    assert m["complete"] and shard_files(out) == shard_files(tmp_path / "local")
