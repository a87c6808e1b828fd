"""`rmpipe embed --engine ray` on a local Ray cluster (``ray.init(num_cpus=2)``, one per module):
the same store as the local engine; a killed driver's finished shards adopted and only the rest
computed; Ctrl-C says what was kept. Skipped where Ray is not installed (the ``ray`` extra)."""

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
from tests.stages.embed.embed_helpers import all_ids, reference_embeddings, write_feedback, make_pairs, write_params

from pipeline.config import load_params
from pipeline.store import EmbeddingStore
from stages.embed.run import embed

pytestmark = pytest.mark.slow  # a Ray cluster starts (~10 s) and actors load the tiny Llama
ray = pytest.importorskip("ray")

REPO = Path(__file__).resolve().parents[3]
# A driver in its own process, joined to the test's cluster, that says 'committed' after its
# first shard is listed and then pauses, so the test can stop it there.
DRIVER = textwrap.dedent("""
    import sys, time
    from pipeline import store
    _commit = store.EmbeddingStore.commit_shard
    def slow_commit(self, *args, **kwargs):
        n = _commit(self, *args, **kwargs)
        if not getattr(store, "paused", False):
            store.paused = True
            print("committed", n, flush=True)
            time.sleep(float(sys.argv[3]))
        return n
    store.EmbeddingStore.commit_shard = slow_commit
    from pipeline.config import load_params
    from stages.embed.run import embed
    print(embed(load_params(sys.argv[1]), "tiny", progress=False, engine="ray",
                ray={"address": sys.argv[2], "actors": 1}).line(), flush=True)
""")


@pytest.fixture(scope="module")
def cluster():
    """A two-CPU local Ray cluster for this module; its address for drivers in subprocesses."""
    ray.init(num_cpus=2, log_to_driver=False, include_dashboard=False)
    yield ray.get_runtime_context().gcs_address
    ray.shutdown()


@pytest.fixture(scope="module")
def reference(tmp_path_factory, tiny_llama_dir):
    """The local engine's embeddings of the same 60 pairs."""
    return reference_embeddings(tmp_path_factory.mktemp("reference"), tiny_llama_dir)


def stored_ids(store: EmbeddingStore) -> list[str]:
    return [i for shard in store.manifest["shards"] for i in store._shard_ids(shard)]


def assert_store_is(params, reference) -> None:
    """Every pair once, each vector the local engine's, every shard passing its checks."""
    store = EmbeddingStore(params.store_path("tiny"))
    store.verify()
    ids = all_ids(params)
    assert sorted(stored_ids(store)) == sorted(ids)  # nothing missing, nothing twice
    assert np.abs(store.read(ids) - np.stack([reference[i] for i in ids])).max() <= 1e-5
    assert not list(store.root.glob(".claim-*")), "a claim or staging folder was left behind"


def test_ray_engine_fills_the_store_the_local_engine_would(cluster, llama_params, reference):
    summary = embed(llama_params, "tiny", progress=False, engine="ray", ray={"actors": 2})
    assert (summary.computed, summary.reused, summary.engine) == (60, 0, "ray")
    assert summary.tokens > 0 and "engine ray" in summary.line()
    assert_store_is(llama_params, reference)
    store = EmbeddingStore(llama_params.store_path("tiny"))
    assert len(store.manifest["shards"]) == 4  # 60 pairs in blocks of commit_rows 16
    assert {s["exec"]["engine"] for s in store.manifest["shards"]} == {"ray"}
    again = embed(llama_params, "tiny", progress=False, engine="ray")
    assert (again.computed, again.reused) == (0, 60)


def driver(project: Path, address: str, sleep: float) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", DRIVER, str(project / "params.yaml"), address, str(sleep)],
                            cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONPATH": str(REPO)})


def wait_for_commit(proc: subprocess.Popen) -> None:
    """Block until the driver has committed its first shard."""
    deadline = time.time() + 240
    while time.time() < deadline:
        line = proc.stdout.readline()
        if line.startswith("committed") or not line:
            break
    assert proc.poll() is None, f"driver ended before it could be stopped: {proc.communicate()}"


def test_killed_driver_is_resumed_and_ctrl_c_says_what_was_kept(cluster, tmp_path, tiny_llama_dir, reference):
    write_feedback(tmp_path / "data" / "t" / "feedback.parquet", make_pairs(60))
    params = load_params(write_params(tmp_path, tiny_llama_dir))
    root = params.store_path("tiny")

    proc = driver(tmp_path, cluster, sleep=30)  # it stops for good after its first commit
    try:
        wait_for_commit(proc)
        time.sleep(1.0)  # let the actor finish further blocks into the staging folder
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait(30)
    committed = EmbeddingStore(root).rows
    assert 0 < committed < 60
    resumed = embed(params, "tiny", progress=False, engine="ray")
    adopted = sum(int(n.split()[1]) for n in resumed.notes if "stopped Ray run" in n)
    assert resumed.computed + adopted + committed == 60  # nothing computed twice
    assert_store_is(params, reference)

    for shard in EmbeddingStore(root).manifest["shards"][1:]:  # Ctrl-C on a second, partial run
        (root / shard["file"]).unlink()
    EmbeddingStore(root).repair()
    before = EmbeddingStore(root).rows
    proc = driver(tmp_path, cluster, sleep=30)
    try:
        wait_for_commit(proc)
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=120)
    finally:
        proc.kill()
    kept = EmbeddingStore(root).rows
    assert proc.returncode != 0 and before < kept <= 60
    assert f"interrupted: {kept} row(s) committed" in err, err
    assert not list(root.glob(".claim-*"))
