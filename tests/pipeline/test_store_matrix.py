"""StoreMatrix: a store's vectors read shard by shard, indexed like the array store.read gives."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from pipeline.errors import RmpipeError
from pipeline.store import EmbeddingStore
from pipeline.store_matrix import StoreMatrix, embeddings, in_store_order

DIM = 6


def sharded_store(root, shards=5, rows=40, seed=0, nan_at=None):
    """A real store of ``shards`` shards of ``rows`` pairs each; ``nan_at``: (shard, row) holding NaN."""
    rng = np.random.default_rng(seed)
    store = EmbeddingStore.create(root, backbone="toy", spec={"model": "toy"}, dim=DIM)
    ids = []
    for k in range(shards):
        chunk = [f"p{k:02d}{r:03d}" for r in range(rows)]
        X = rng.standard_normal((rows, DIM)).astype(np.float32)
        if nan_at is not None and nan_at[0] == k:
            X[nan_at[1], 2] = np.nan
        store.append(chunk, X)
        ids += chunk
    return store, ids


def test_slices_and_gathers_equal_store_read_with_a_small_cache(tmp_path):
    store, ids = sharded_store(tmp_path / "s")
    rng = np.random.default_rng(1)
    wanted = list(rng.permutation(ids)) + ids[:7]  # any order, with repeats
    full = store.read(wanted)
    X = StoreMatrix.of(store, wanted)
    X.window = 1  # two decoded shards at a time: the gathers below re-read
    assert X.shape == full.shape and len(X) == len(wanted)
    np.testing.assert_array_equal(X[3:57], full[3:57])
    rows = rng.integers(0, len(wanted), size=90)
    np.testing.assert_array_equal(X[rows], full[rows])
    np.testing.assert_array_equal(X[torch.from_numpy(rows)], full[rows])
    np.testing.assert_array_equal(X[5], full[5])
    assert X.shard_reads > 5  # it really evicted and re-read


def test_store_order_keeps_slices_in_a_shard_or_two(tmp_path):
    store, ids = sharded_store(tmp_path / "s")
    shuffled = list(np.random.default_rng(2).permutation(ids))
    order, X = in_store_order(store, shuffled)
    np.testing.assert_array_equal(X[:], store.read([shuffled[i] for i in order]))
    X.window = 1
    for s in range(0, len(X), 40):
        X[s:s + 40]
    assert X.shard_reads == 5  # each shard decoded once in a pass over the rows


def shuffled(X, rows, seed):
    """An epoch's order from :meth:`StoreMatrix.epoch_windows`, its windows checked on the way."""
    windows = X.epoch_windows(rows, torch.Generator().manual_seed(seed))
    for shards, pos in windows:  # each window's rows live in the shards it names
        assert set(X.shard[rows[pos]]) <= set(shards.tolist()) and len(shards) <= X.window
    return np.concatenate([pos for _, pos in windows])


def test_an_epoch_is_a_permutation_that_visits_a_window_of_shards_at_a_time(tmp_path):
    store, ids = sharded_store(tmp_path / "s", shards=6)
    order, X = in_store_order(store, ids)
    X.window = 2
    rows = np.sort(np.random.default_rng(3).choice(len(ids), size=150, replace=False))
    perm = shuffled(X, rows, 0)
    assert sorted(perm.tolist()) == list(range(len(rows)))
    shard = X.shard[rows[perm]]
    windows = [set(shard[i:i + n]) for i, n in _runs(shard, X.window)]
    assert all(len(w) <= 2 for w in windows)
    again = shuffled(X, rows, 0)
    other = shuffled(X, rows, 1)
    np.testing.assert_array_equal(perm, again)
    assert not np.array_equal(perm, other)
    # a pass in that order decodes each shard once
    for s in range(0, len(perm), 16):
        X[rows[perm[s:s + 16]]]
    assert X.shard_reads == 6


def _runs(shard, window):
    """(start, length) of consecutive stretches that cover ``window`` distinct shards."""
    out, start, seen = [], 0, []
    for i, k in enumerate(shard):
        if k not in seen:
            if len(seen) == window:
                out.append((start, i - start))
                start, seen = i, []
            seen.append(k)
    out.append((start, len(shard) - start))
    return out


def test_a_nan_vector_is_refused_naming_its_pair_when_its_shard_is_read(tmp_path):
    store, ids = sharded_store(tmp_path / "s", nan_at=(3, 11))
    X = StoreMatrix.of(store, ids)
    X[:100]  # shards 0-2: fine
    with pytest.raises(RmpipeError, match=r"NaN or infinite embedding for pair_id p03011"):
        X[100:200]


def test_missing_pairs_are_refused_in_one_line(tmp_path):
    store, ids = sharded_store(tmp_path / "s", shards=2)
    with pytest.raises(RmpipeError, match=r"1 pair_id\(s\) not embedded, e.g\. nope"):
        StoreMatrix.of(store, ids[:3] + ["nope"])


def test_embeddings_loads_below_the_threshold_and_streams_above(tmp_path):
    store, ids = sharded_store(tmp_path / "s", shards=2)
    small = embeddings(store, ids, stream_gb=1.0)
    big = embeddings(store, ids, stream_gb=0.0)
    assert isinstance(small, np.ndarray) and isinstance(big, StoreMatrix)
    np.testing.assert_array_equal(big[:], small)
