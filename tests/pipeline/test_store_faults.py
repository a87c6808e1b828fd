"""The store under faults: a read-only disk, a full disk, a lost manifest, two writers, Ctrl-C.
Real Parquet, real processes and signals, the tiny random Llama where an embedding is needed."""

import contextlib
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
from tests.stages.embed.embed_helpers import (all_ids, make_pairs, reference_embeddings, slow_commits, write_feedback,
                                              write_params)
from typer.testing import CliRunner

from pipeline.config import load_params
from pipeline.errors import RmpipeError
from pipeline.store import MANIFEST, EmbeddingStore
from rmpipe.cli import app
from stages.embed.run import embed

REPO = Path(__file__).resolve().parents[2]
SPEC = {"model": "m", "pooling": "last", "layer": -1}


def vectors(ids, dim=4):
    return np.stack([np.full(dim, int(i[1:]), dtype=np.float32) + np.arange(dim) for i in ids])


def synthetic_store(root: Path) -> EmbeddingStore:
    s = EmbeddingStore.create(root, backbone="tiny", spec=SPEC, dim=4)
    s.append(["p0", "p1", "p2"], vectors(["p0", "p1", "p2"]))
    s.append(["p3", "p4"], vectors(["p3", "p4"]))
    return s


def snapshot(folder: Path) -> dict:
    return {p.name: p.read_bytes() for p in folder.iterdir() if p.is_file()}


def run_py(code: str, *args, **kwargs) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", textwrap.dedent(code), *map(str, args)],
                            cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONPATH": str(REPO)}, **kwargs)


@contextlib.contextmanager
def read_only(folder: Path):
    """``folder`` made read-only for real: chmod for a user, a read-only bind mount for root."""
    if os.geteuid() != 0:
        folder.chmod(0o555)
        try:
            yield
        finally:
            folder.chmod(0o755)
        return
    bind = subprocess.run(["mount", "--bind", folder, folder], capture_output=True)
    if bind.returncode != 0:
        pytest.skip("running as root without mount: cannot make a folder read-only")
    try:
        subprocess.run(["mount", "-o", "remount,ro,bind", folder], check=True)
        yield
    finally:
        subprocess.run(["umount", folder], check=True)


@pytest.fixture
def project(tmp_path, tiny_llama_dir) -> Path:
    write_feedback(tmp_path / "data" / "t" / "feedback.parquet", make_pairs(60))
    return write_params(tmp_path, tiny_llama_dir)


@pytest.fixture(scope="module")
def reference(tmp_path_factory, tiny_llama_dir):
    """The 60 pairs' embeddings from one uninterrupted single writer."""
    return reference_embeddings(tmp_path_factory.mktemp("reference"), tiny_llama_dir)


def assert_same_as_reference(params, reference):
    store = EmbeddingStore(params.store_path("tiny"))
    store.verify()
    ids = all_ids(params)
    stored = [i for pids, _ in store.iter_shards() for i in pids]
    assert sorted(stored) == sorted(ids)  # nothing missing, nothing twice
    assert np.abs(store.read(ids) - np.stack([reference[i] for i in ids])).max() <= 1e-4


# --- a read-only store, a full disk ---------------------------------------------------------
@pytest.mark.slow
def test_read_only_store_serves_a_rerun_and_refuses_new_work_in_one_line(project):
    params = load_params(project)
    embed(params, "tiny", progress=False)
    root = params.store_path("tiny")
    before = snapshot(root)
    runner = CliRunner()
    with read_only(root):
        again = runner.invoke(app, ["embed", "--backbone", "tiny", "--params", str(project)])
        assert again.exit_code == 0, again.output
        assert "0 computed, 60 reused" in again.output
        write_feedback(params.table_path, make_pairs(60) + make_pairs(3, seed=5))
        grown = runner.invoke(app, ["embed", "--backbone", "tiny", "--params", str(project)])
    assert grown.exit_code == 2, grown.output
    assert "cannot write the embedding store" in grown.output and "Traceback" not in grown.output
    assert snapshot(root) == before  # not a byte written, not even the lock


FULL_DISK = """
    import resource, signal, sys
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails with EFBIG
    from rmpipe.cli import app
    resource.setrlimit(resource.RLIMIT_FSIZE, (1024, 1024))
    sys.argv = ["rmpipe", "embed", "--backbone", "tiny", "--params", sys.argv[1]]
    app()
"""


@pytest.mark.slow
def test_full_disk_is_one_line_and_leaves_the_store_as_it_was(project):
    params = load_params(project)
    embed(params, "tiny", progress=False)
    root = params.store_path("tiny")
    write_feedback(params.table_path, make_pairs(60) + make_pairs(5, seed=9))
    before = snapshot(root)
    proc = run_py(FULL_DISK, project)
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 2, err
    errors = [line for line in err.splitlines() if line.startswith("rmpipe: error:")]
    assert len(errors) == 1 and "cannot write the embedding store" in errors[0], err
    assert "Traceback" not in err
    assert snapshot(root) == before  # no half shard, no temp file, no claim left
    assert embed(params, "tiny", progress=False).computed == 5


# --- a lost manifest ------------------------------------------------------------------------
@pytest.mark.parametrize("damage", ["truncate", "garbage", "delete"])
def test_lost_manifest_is_rebuilt_from_the_shards_that_pass_their_checks(tmp_path, damage):
    params_path = write_params(tmp_path, "unused")
    root = load_params(params_path).store_path("tiny")
    store = synthetic_store(root)
    store.append(["p5"], vectors(["p5"]))
    bad = root / store.manifest["shards"][2]["file"]
    bad.write_bytes(bad.read_bytes()[:-40])  # this one fails its own check
    manifest = root / MANIFEST
    if damage == "truncate":
        manifest.write_bytes(manifest.read_bytes()[:70])
    elif damage == "garbage":
        manifest.write_bytes(b"\xff\xfe\x00 not json")
    else:
        manifest.unlink()
    runner = CliRunner()
    checked = runner.invoke(app, ["cache", "verify", "--params", str(params_path)])
    assert checked.exit_code == 2 and "--repair" in checked.output
    repaired = runner.invoke(app, ["cache", "verify", "--repair", "--params", str(params_path)])
    assert repaired.exit_code == 0, repaired.output
    assert "rebuilt from 2 shard(s) (5 rows)" in repaired.output
    fresh = EmbeddingStore(root)
    fresh.verify()
    assert fresh.pair_ids() == {f"p{i}" for i in range(5)} and not bad.exists()
    np.testing.assert_array_equal(fresh.read(["p4", "p0"]), vectors(["p4", "p0"]))


@pytest.mark.slow
def test_embed_rebuild_recovers_a_truncated_manifest_instead_of_recomputing(project):
    params = load_params(project)
    embed(params, "tiny", progress=False)
    manifest = params.store_path("tiny") / MANIFEST
    manifest.write_bytes(manifest.read_bytes()[:100])
    with pytest.raises(RmpipeError, match="unreadable store manifest.*--rebuild"):
        embed(params, "tiny", progress=False)
    summary = embed(params, "tiny", rebuild=True, progress=False)
    assert (summary.computed, summary.reused) == (0, 60)
    assert "rebuilt from 4 shard(s) (60 rows)" in summary.line()


# --- two writers ----------------------------------------------------------------------------
# A run that waits for a go file, so two runs really start together, and whose commits are
# slowed down, so they overlap for several chunks.
# 4 chunks of 16 rows, each commit held 1 s: the second writer has seconds to claim its share
RACE = slow_commits(1.0) + textwrap.dedent("""
    import json, sys, time
    from pathlib import Path
    from pipeline.config import load_params
    from stages.embed.run import embed
    import stages.embed.hf_backend, stages.embed.text  # torch and transformers load before "ready":
    params = load_params(sys.argv[1])                  # both writers start level, so both get work
    Path(sys.argv[2]).touch()
    while not Path(sys.argv[3]).exists():
        time.sleep(0.01)
    print(json.dumps(embed(params, "tiny", progress=False).to_dict()))
""")


@pytest.mark.slow
def test_two_writers_split_the_pairs_and_count_honestly(project, reference, tmp_path):
    import json

    go = tmp_path / "go"
    procs = [run_py(RACE, project, tmp_path / f"ready{k}", go) for k in range(2)]
    deadline = time.time() + 240
    while not all((tmp_path / f"ready{k}").exists() for k in range(2)):
        assert time.time() < deadline and all(p.poll() is None for p in procs)
        time.sleep(0.05)
    go.touch()
    outs = [p.communicate(timeout=300) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs
    done = [json.loads(out.strip().splitlines()[-1]) for out, _ in outs]
    computed = [d["computed"] for d in done]
    assert sum(computed) == 60 and min(computed) > 0  # no pair twice, both did work
    assert [d["reused"] for d in done] == [60 - c for c in computed]
    params = load_params(project)
    assert_same_as_reference(params, reference)
    assert not list(params.store_path("tiny").glob(".claim-*"))


# --- Ctrl-C ---------------------------------------------------------------------------------
SLOW_CLI = slow_commits(0.5) + textwrap.dedent("""
    import sys
    from rmpipe.cli import app
    sys.argv = ["rmpipe", "embed", "--backbone", "tiny", "--params", sys.argv[1]]
    app()
""")


@pytest.mark.slow
def test_ctrl_c_says_what_is_committed_and_a_rerun_resumes(project, reference):
    params = load_params(project)
    manifest = params.store_path("tiny") / MANIFEST
    proc = run_py(SLOW_CLI, project)
    deadline = time.time() + 240
    while time.time() < deadline and proc.poll() is None:
        if manifest.exists() and manifest.read_text().count('"file"') >= 2:
            break
        time.sleep(0.05)
    assert proc.poll() is None, proc.communicate()
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert "Traceback" not in err
    partial = EmbeddingStore(params.store_path("tiny")).rows
    assert 0 < partial < 60
    assert f"interrupted: {partial} row(s) committed" in err and "again to resume" in err
    resumed = embed(params, "tiny", progress=False)
    assert resumed.computed == 60 - partial
    assert_same_as_reference(params, reference)


# SIGINT at the worst moment: the shard is renamed into place, the manifest not yet updated.
INTERRUPTED_COMMIT = """
    import os, signal, sys, time
    import numpy as np
    from pipeline import store
    s = store.EmbeddingStore(sys.argv[1])
    def interrupted(*args, **kwargs):
        os.kill(os.getpid(), signal.SIGINT)
        time.sleep(5)
    store.write_json = interrupted
    s.append(["p7", "p8"], np.stack([np.full(4, i, np.float32) + np.arange(4) for i in (7, 8)]))
"""


def test_ctrl_c_between_rename_and_manifest_keeps_the_finished_shard(tmp_path):
    store = synthetic_store(tmp_path / "tiny")
    proc = run_py(INTERRUPTED_COMMIT, store.root)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode != 0 and "KeyboardInterrupt" in err
    assert EmbeddingStore(store.root).rows == 5  # the manifest does not list it yet
    reopened = EmbeddingStore.create(store.root, backbone="tiny", spec=SPEC, dim=4)
    assert reopened.rows == 7 and "adopted 1 finished shard(s) (2 rows)" in reopened.notes[0]
    reopened.verify()
    np.testing.assert_array_equal(reopened.read(["p8", "p7", "p0"]), vectors(["p8", "p7", "p0"]))


# --- cache verify / ls ----------------------------------------------------------------------
def test_cache_verify_of_no_store_and_ls_of_a_damaged_one(tmp_path):
    params_path = write_params(tmp_path, "unused")
    runner = CliRunner()
    for args in (["cache", "verify", "nope"], ["cache", "verify"]):
        result = runner.invoke(app, [*args, "--params", str(params_path)])
        assert result.exit_code == 2 and "no embedding store" in result.output, result.output
        assert len(result.output.strip().splitlines()) == 1
    store = synthetic_store(load_params(params_path).store_path("tiny"))
    listing = runner.invoke(app, ["cache", "ls", "--params", str(params_path)])
    assert listing.exit_code == 0 and listing.output.splitlines()[1].endswith(" ok")
    (store.root / store.manifest["shards"][1]["file"]).unlink()
    listing = runner.invoke(app, ["cache", "ls", "--params", str(params_path)])
    assert listing.exit_code == 0 and "damaged" in listing.output and "missing" in listing.output
