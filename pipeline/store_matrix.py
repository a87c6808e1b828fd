"""A store's vectors for a list of pair ids as an N × D matrix that is never in memory whole.

Stage two indexes its embeddings three ways: contiguous slices (nuisance features, scoring),
sorted row sets (a split's rows) and shuffled mini-batches. :class:`StoreMatrix` answers the first
two like a numpy array, reading each shard when a request first touches it and keeping the last
few decoded shards (``cache_bytes``); :meth:`StoreMatrix.epoch_windows` gives the third a shuffle
that visits the shards a window at a time (shards in random order, rows shuffled within the
window: half the cache), so an epoch decodes each shard once. Rows are best laid out in store order
(:func:`in_store_order`): then a slice touches one or two shards.

Every vector is checked finite when its shard is first decoded, so a fit refuses a NaN before
any head is written (the nuisance features read every row first).
"""

from __future__ import annotations

import time
from collections import OrderedDict
from typing import Sequence

import numpy as np
import polars as pl
import pyarrow as pa

from pipeline.errors import RmpipeError
from pipeline.store import EmbeddingStore

CACHE_BYTES = 1 << 30  # decoded shards kept: an epoch's shuffle window


def shard_index(store: EmbeddingStore) -> pl.DataFrame:
    """``(pair_id, shard, local)`` for every stored row: where each vector lives. Built from the
    shards' pair_id columns (a few bytes a row), never from their vectors."""
    parts = []
    for k, shard in enumerate(store.manifest["shards"]):
        ids = store._read_shard(shard, ["pair_id"])["pair_id"]
        parts.append(pl.DataFrame({"pair_id": pl.Series(ids.combine_chunks(), dtype=pl.String)})
                     .with_columns(shard=pl.lit(k, pl.Int32), local=pl.int_range(pl.len(), dtype=pl.Int64)))
    if not parts:
        return pl.DataFrame(schema={"pair_id": pl.String, "shard": pl.Int32, "local": pl.Int64})
    return pl.concat(parts)


def locate(store: EmbeddingStore, pair_ids: Sequence[str] | pl.Series) -> pl.DataFrame:
    """Each requested pair's ``(shard, local)`` in request order (repeats allowed); refuses pairs
    the store lacks, as :meth:`EmbeddingStore.read` does."""
    want = pl.DataFrame({"pair_id": pl.Series(pair_ids, dtype=pl.String)}).with_row_index("row")
    found = want.join(shard_index(store), on="pair_id", how="left").sort("row")
    missing = found.filter(pl.col("shard").is_null())
    if missing.height:
        raise RmpipeError(f"{store.root}: {missing.height} pair_id(s) not embedded, e.g. "
                          f"{missing['pair_id'][0]} (run `rmpipe embed --backbone {store.backbone}`)")
    return found


def in_store_order(store: EmbeddingStore, pair_ids: Sequence[str] | pl.Series
                   ) -> tuple[np.ndarray, "StoreMatrix"]:
    """``(order, X)``: the permutation of ``pair_ids`` that lays them out as the store does
    (shard by shard), and their matrix in that order."""
    found = locate(store, pair_ids).sort(["shard", "local"], maintain_order=True)
    return found["row"].to_numpy(), StoreMatrix(store, found)


class StoreMatrix:
    """The vectors (float32) of the rows :func:`locate` found, read from ``store`` on demand:
    ``X[a:b]``, ``X[rows]`` (an int array or tensor), ``len(X)``, ``X.shape`` work as on an
    array. :meth:`of` makes one for a list of pair ids."""

    ndim = 2
    dtype = np.dtype(np.float32)

    def __init__(self, store: EmbeddingStore, found: pl.DataFrame, cache_bytes: int = CACHE_BYTES):
        self.store = store
        self.ids = found["pair_id"]
        self.shard = found["shard"].to_numpy().astype(np.int32)
        self.local = found["local"].to_numpy()
        self.shards = store.manifest["shards"]
        self.dim = store.dim
        self.shape = (len(self.shard), self.dim)
        rows = max((s["rows"] for s in self.shards), default=1)
        # shuffle windows of half the cache: a batch that straddles two windows is still cached
        self.window = max(1, int(cache_bytes // max(2 * rows * self.dim * 4, 1)))
        self._cache: OrderedDict[int, np.ndarray] = OrderedDict()
        self.shard_reads = 0  # decodes and their seconds: the benchmark's account of where time goes
        self.read_seconds = 0.0

    @classmethod
    def of(cls, store: EmbeddingStore, pair_ids: Sequence[str] | pl.Series) -> "StoreMatrix":
        return cls(store, locate(store, pair_ids))

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, key) -> np.ndarray:
        if isinstance(key, slice):
            key = np.arange(*key.indices(len(self)))
        elif isinstance(key, (int, np.integer)):
            return self[np.array([key])][0]
        rows = np.asarray(key.numpy() if hasattr(key, "numpy") else key, dtype=np.int64)
        out = np.empty((len(rows), self.dim), dtype=np.float32)
        shards = self.shard[rows]
        for k in np.unique(shards):
            at = np.flatnonzero(shards == k)
            out[at] = self._values(int(k))[self.local[rows[at]]]
        return out

    def _values(self, k: int) -> np.ndarray:
        if k in self._cache:
            self._cache.move_to_end(k)
            return self._cache[k]
        started = time.perf_counter()
        shard = self.shards[k]
        values = self.store._shard_values(shard, self.dim)  # checked against its checksum once
        bad = ~np.isfinite(values).all(axis=1)
        if bad.any():
            pid = self.store._shard_ids(shard)[int(np.argmax(bad))]
            raise RmpipeError(f"{self.store.root / shard['file']}: NaN or infinite embedding for pair_id {pid} "
                              f"({int(bad.sum())} row(s) in this shard); re-embed them")
        self.shard_reads += 1
        self.read_seconds += time.perf_counter() - started
        self._cache[k] = values
        while len(self._cache) > 2 * self.window:
            self._cache.popitem(last=False)
            pa.default_memory_pool().release_unused()  # give an evicted shard's pages back to the OS
        return values

    def release(self) -> None:
        """Drop the decoded shards (the nuisance fits that follow the projection pass need none)."""
        self._cache.clear()
        pa.default_memory_pool().release_unused()

    def epoch_windows(self, rows: np.ndarray, generator) -> list[tuple[np.ndarray, np.ndarray]]:
        """An epoch's shuffle of ``range(len(rows))`` (positions into ``rows``), a window at a time:
        the shards in a random order, and the rows of each window of ``self.window`` shards in a
        random order. Returns ``(shards, positions)`` for each window, in visiting order, so a caller
        can do other work on a window's shards while they are cached (the fit scores the validation
        rows that live there). ``generator``: a torch Generator (the seed)."""
        import torch

        shards = self.shard[np.asarray(rows)]
        present = np.unique(shards)
        visit = present[torch.randperm(len(present), generator=generator).numpy()]
        windows = []
        for s in range(0, len(visit), self.window):
            pos = np.flatnonzero(np.isin(shards, visit[s:s + self.window]))
            windows.append((visit[s:s + self.window], pos[torch.randperm(len(pos), generator=generator).numpy()]))
        return windows


def streams(store: EmbeddingStore, rows: int, stream_gb: float) -> bool:
    """Whether ``rows`` of the store's vectors exceed ``stream_gb`` GiB as float32
    (``fit.stream_gb``), and so are read shard by shard rather than loaded."""
    return rows * store.dim * 4 > stream_gb * 2**30


def embeddings(store: EmbeddingStore, pair_ids: Sequence[str] | pl.Series,
               stream_gb: float) -> "np.ndarray | StoreMatrix":
    """``pair_ids``' vectors: one array, or a :class:`StoreMatrix` that reads them shard by
    shard when they stream (:func:`streams`)."""
    if streams(store, len(pair_ids), stream_gb):
        return StoreMatrix.of(store, pair_ids)
    return store.read(list(pair_ids))
