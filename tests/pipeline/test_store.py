"""The embedding store: keyed by function, de-duplicating, ordered reads, damage named."""

import json
import multiprocessing as mp

import numpy as np
import pytest

from pipeline.errors import RmpipeError
from pipeline.store import MANIFEST, EmbeddingStore, list_stores, spec_hash

SPEC = {"model": "m", "pooling": "last", "layer": -1}


def vectors(ids, dim=4):
    """A deterministic vector per pair_id, so any reordering shows."""
    return np.stack([np.full(dim, int(i[1:]), dtype=np.float32) + np.arange(dim) for i in ids])


@pytest.fixture
def store(tmp_path):
    s = EmbeddingStore.create(tmp_path / "b", backbone="b", spec=SPEC, dim=4)
    s.append(["p0", "p1", "p2"], vectors(["p0", "p1", "p2"]), {"backend": "hf"})
    s.append(["p3", "p4"], vectors(["p3", "p4"]), {"backend": "vllm"})
    return s


def shard_path(store, k=0):
    return store.root / store.manifest["shards"][k]["file"]


def test_read_returns_requested_order_with_repeats(store):
    ids = ["p4", "p0", "p4", "p2"]
    out = store.read(ids)
    assert out.dtype == np.float32 and out.shape == (4, 4)
    np.testing.assert_array_equal(out, vectors(ids))


def test_missing_pair_is_named(store):
    with pytest.raises(RmpipeError, match="p9"):
        store.read(["p0", "p9"])


def test_append_skips_pairs_already_present_and_repeats(store):
    assert store.append(["p1", "p5", "p5"], vectors(["p1", "p5", "p5"])) == 1
    assert store.rows == 6 and store.pair_ids() == {f"p{i}" for i in range(6)}
    assert store.append(["p0"], vectors(["p0"])) == 0
    assert len(store.manifest["shards"]) == 3


def test_exec_info_is_recorded_per_shard(store):
    assert [s["exec"]["backend"] for s in store.manifest["shards"]] == ["hf", "vllm"]


def test_another_function_is_refused_by_field(store):
    with pytest.raises(RmpipeError, match="pooling"):
        EmbeddingStore.create(store.root, backbone="b", spec={**SPEC, "pooling": "mean"}, dim=4)


def test_rebuild_replaces_the_store(store):
    new = EmbeddingStore.create(store.root, backbone="b", spec={**SPEC, "layer": -2}, dim=4,
                                rebuild=True)
    assert new.rows == 0 and new.spec_hash == spec_hash({**SPEC, "layer": -2})
    assert not list(store.root.glob("shard-*"))


def test_reopen_with_the_same_function_keeps_rows(store):
    again = EmbeddingStore.create(store.root, backbone="b", spec=dict(SPEC), dim=4)
    assert again.rows == 5 and again.spec_hash == store.spec_hash and again.dim == 4


@pytest.mark.parametrize("damage", ["truncate", "flip", "delete"])
def test_damaged_shard_is_detected_and_named(store, damage):
    path = shard_path(store, 1)
    data = path.read_bytes()
    if damage == "truncate":
        path.write_bytes(data[: len(data) // 2])
    elif damage == "flip":
        path.write_bytes(data[:100] + bytes([data[100] ^ 0xFF]) + data[101:])
    else:
        path.unlink()
    fresh = EmbeddingStore(store.root)
    for action in (fresh.verify, lambda: fresh.read(["p3"]), fresh.pair_ids):
        with pytest.raises(RmpipeError, match=path.name):
            action()


def test_repair_drops_only_the_bad_shard(store):
    path = shard_path(store, 1)
    path.write_bytes(path.read_bytes()[:50])
    assert EmbeddingStore(store.root).repair() == [path.name]
    fresh = EmbeddingStore(store.root)
    fresh.verify()
    assert fresh.pair_ids() == {"p0", "p1", "p2"}


def test_orphans_of_a_killed_writer_are_removed_on_open(store):
    (store.root / "shard-deadbeef0000.parquet").write_bytes(b"half")
    (store.root / ".shard-x.parquet.abc.tmp").write_bytes(b"temp")
    EmbeddingStore.create(store.root, backbone="b", spec=SPEC, dim=4)
    names = {p.name for p in store.root.iterdir()}
    assert "shard-deadbeef0000.parquet" not in names and ".shard-x.parquet.abc.tmp" not in names
    assert EmbeddingStore(store.root).rows == 5


def test_merge_from_another_machines_store(store, tmp_path):
    other = EmbeddingStore.create(tmp_path / "elsewhere", backbone="b", spec=SPEC, dim=4)
    other.append(["p4", "p7", "p8"], vectors(["p4", "p7", "p8"]))
    assert store.merge_from(other) == 2
    np.testing.assert_array_equal(store.read(["p8", "p7"]), vectors(["p8", "p7"]))
    alien = EmbeddingStore.create(tmp_path / "alien", backbone="b", spec={**SPEC, "layer": 3}, dim=4)
    with pytest.raises(RmpipeError, match="cannot be merged"):
        store.merge_from(alien)


def test_float16_store_reads_back_float32(tmp_path):
    s = EmbeddingStore.create(tmp_path / "h", backbone="h", spec=SPEC, dim=4, dtype="float16")
    s.append(["p1"], vectors(["p1"]))
    assert s.read(["p1"]).dtype == np.float32


def test_no_store_and_bad_manifest_are_user_errors(tmp_path):
    with pytest.raises(RmpipeError, match="rmpipe embed"):
        EmbeddingStore(tmp_path)
    (tmp_path / MANIFEST).write_text("{not json")
    with pytest.raises(RmpipeError, match="unreadable"):
        EmbeddingStore(tmp_path).rows


def test_list_stores(store, tmp_path):
    assert [s.backbone for s in list_stores(tmp_path)] == ["b"]
    assert list_stores(tmp_path / "none") == []
    assert store.disk_bytes() > store.size_bytes() > 0


def _writer(root, start):
    s = EmbeddingStore(root)
    for k in range(start, start + 40, 4):
        ids = [f"p{j}" for j in range(k, k + 8)]  # overlaps the other writer's ranges
        s.append(ids, vectors(ids))


def test_concurrent_writers_leave_a_valid_store(tmp_path):
    root = tmp_path / "c"
    EmbeddingStore.create(root, backbone="c", spec=SPEC, dim=4)
    ctx = mp.get_context("fork")
    procs = [ctx.Process(target=_writer, args=(root, start)) for start in (0, 2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    s = EmbeddingStore(root)
    s.verify()
    ids = [i for sh in s.manifest["shards"] for i in s._shard_ids(sh)]
    assert len(ids) == len(set(ids)) == s.rows == 46
    np.testing.assert_array_equal(s.read(sorted(ids)), vectors(sorted(ids)))
    assert json.loads((root / MANIFEST).read_text())["backbone"] == "c"


def staged_shard(store, folder, ids, spec_hash_=None):
    """A shard written outside the store (as a Ray actor writes one), in the store's format."""
    import pyarrow.parquet as pq

    from pipeline.shards import shard_table
    from pipeline.store import HEADER

    header = {k: store.manifest[k] for k in HEADER}
    if spec_hash_:
        header["spec_hash"] = spec_hash_
    path = folder / f"shard-{ids[0]}.parquet"
    folder.mkdir(exist_ok=True)
    pq.write_table(shard_table(ids, vectors(ids).astype(np.float32), header, {"engine": "ray"}), path)
    return path


def test_commit_shard_lists_a_finished_shard_and_drops_rows_already_stored(store, tmp_path):
    staging = store.root / ".claim-x.shards"
    assert store.commit_shard(staged_shard(store, staging, ["p7", "p8"])) == 2
    assert store.commit_shard(staged_shard(store, staging, ["p4", "p9"])) == 1  # p4 is stored
    assert not list(staging.iterdir())
    store.verify()
    ids = [i for s in store.manifest["shards"] for i in store._shard_ids(s)]
    assert sorted(ids) == ["p0", "p1", "p2", "p3", "p4", "p7", "p8", "p9"]
    np.testing.assert_array_equal(store.read(["p9", "p7"]), vectors(["p9", "p7"]))
    alien = staged_shard(store, staging, ["p5"], spec_hash_="0" * 16)
    with pytest.raises(RmpipeError, match="shard has spec_hash 0{16}"):
        store.commit_shard(alien)
    assert store.rows == 8


def test_a_head_scores_the_stores_shards_as_read_without_a_copy_and_without_a_warning(store):
    """iter_shards hands out read-only arrays (no float32 copy); a head reads them as they are
    (the server scores every stored pair so at start-up). torch warns once per process, so the
    check runs in a process of its own."""
    import subprocess
    import sys
    from pathlib import Path

    script = f"""
import numpy as np, torch
from pipeline.reward_head import RewardHead
from pipeline.store import EmbeddingStore
torch.manual_seed(0)
head = RewardHead(4)
for ids, X in EmbeddingStore({str(store.root)!r}).iter_shards():
    assert not X.flags.writeable
    assert torch.equal(head.logits(X), head.logits(X.copy()))
print("ok")
"""
    run = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                         cwd=Path(__file__).resolve().parents[2], timeout=300)
    assert run.returncode == 0 and run.stdout.strip() == "ok", run.stderr
    assert "not writable" not in run.stderr
