"""Bring your own embeddings: a backbone whose vectors were computed elsewhere.

A team whose production reward model or embedding service already embeds every response can
point a backbone at a Parquet file of those vectors (``model: vectors:<file.parquet>``) and fit,
evaluate and serve rmpipe heads on them without running a model. The file has a ``vector``
column (a list or array of floats, one length for every row) and either a ``pair_id`` column or
``prompt`` and ``response`` columns (a prompt may be a list of chat turns), from which the pair
id is made as ``prepare`` makes it. The store's key names the file by its SHA-256: a head fitted
on one file is refused with another, as with other weights.

``rmpipe embed`` copies the vectors of the table's pairs into the store (refusing, before
anything is written, a table with pairs the file lacks); ``rmpipe serve`` scores the pairs the
file holds and says which it cannot score (there is no model to embed new text with).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from pipeline.errors import RmpipeError
from pipeline.shards import file_sha256
from pipeline.store import EmbeddingStore, open_if_current, spec_hash
from pipeline.table import canonical_prompt, make_pair_id

PREFIX = "vectors:"


def is_vectors(model: str) -> bool:
    return model.startswith(PREFIX)


def locate(model: str, where: str) -> Path:
    """The vectors file a ``vectors:<path>`` model names, checked to exist."""
    path = Path(model[len(PREFIX):]).expanduser()
    if not path.is_file():
        raise RmpipeError(f"{where}: {model!r}: no such file; a vectors backbone names a Parquet "
                          f"file of vector plus pair_id (or prompt and response) columns")
    return path.resolve()


def weights_key(path: Path) -> str:
    return f"vectors:{file_sha256(path)}"


@dataclass
class VectorFile:
    """A vectors file read and checked: ``X[index[pair_id]]`` is a pair's vector."""

    path: Path
    X: np.ndarray
    index: dict[str, int] = field(default_factory=dict)

    @property
    def dim(self) -> int:
        return int(self.X.shape[1])


_CACHE: dict[tuple, VectorFile] = {}


def read_vectors(path: str | Path) -> VectorFile:
    """Read and check ``path``: every row a pair and a finite vector of the same length."""
    import polars as pl

    path = Path(path)
    stat = path.stat()
    key = (str(path), stat.st_mtime_ns, stat.st_size)
    if key in _CACHE:
        return _CACHE[key]
    try:
        df = pl.read_parquet(path)
    except Exception as exc:  # noqa: BLE001 - any unreadable file is the user's to fix
        raise RmpipeError(f"{path}: not a readable Parquet file ({type(exc).__name__})") from None
    if "vector" not in df.columns:
        raise RmpipeError(f"{path}: no 'vector' column (columns: {', '.join(df.columns) or 'none'})")
    if df.height == 0:
        raise RmpipeError(f"{path}: no rows")
    ids = _pair_ids(df, path)
    X = _matrix(df["vector"], path)
    index: dict[str, int] = {}
    for row, pid in enumerate(ids):
        first = index.setdefault(pid, row)
        if first != row and not np.array_equal(X[first], X[row]):
            raise RmpipeError(f"{path}: rows {first} and {row} are the same pair ({pid}) with "
                              f"different vectors")
    _CACHE.clear()
    _CACHE[key] = VectorFile(path, X, index)
    return _CACHE[key]


def _pair_ids(df, path: Path) -> list[str]:
    if "pair_id" in df.columns:
        ids = df["pair_id"].to_list()
        bad = next((i for i, p in enumerate(ids) if not isinstance(p, str) or not p), None)
        if bad is not None:
            raise RmpipeError(f"{path}: row {bad}, column pair_id: expected text, got {ids[bad]!r}")
        return ids
    if not {"prompt", "response"} <= set(df.columns):
        raise RmpipeError(f"{path}: needs a pair_id column, or prompt and response columns, "
                          f"beside vector")
    ids = []
    for i, (prompt, response) in enumerate(zip(df["prompt"].to_list(), df["response"].to_list())):
        if not isinstance(response, str):
            raise RmpipeError(f"{path}: row {i}, column response: expected text, got {response!r}")
        if prompt is not None and not isinstance(prompt, str):
            prompt = canonical_prompt(prompt, f"{path}: row {i}, column prompt")
        if not isinstance(prompt, str):
            raise RmpipeError(f"{path}: row {i}, column prompt: expected text or chat turns, got {prompt!r}")
        ids.append(make_pair_id(prompt, response))
    return ids


def _matrix(column, path: Path) -> np.ndarray:
    import polars as pl

    if column.null_count():
        raise RmpipeError(f"{path}: row {column.is_null().arg_true()[0]}, column vector: null")
    if isinstance(column.dtype, pl.Array):
        column = column.arr.to_list()
    if not isinstance(column.dtype, pl.List) or not column.dtype.inner.is_numeric():
        raise RmpipeError(f"{path}: column vector: expected lists of numbers, got {column.dtype}")
    lengths = column.list.len()
    dim = int(lengths[0])
    wrong = (lengths != dim).arg_true()
    if dim == 0 or len(wrong):
        row = int(wrong[0]) if len(wrong) else 0
        raise RmpipeError(f"{path}: row {row}, column vector: {int(lengths[row])} numbers, but row 0 "
                          f"has {dim}" if dim else f"{path}: row 0, column vector: empty")
    X = column.explode().cast(pl.Float32).to_numpy().reshape(len(column), dim)
    bad = np.flatnonzero(~np.isfinite(X).all(axis=1))
    if len(bad):
        raise RmpipeError(f"{path}: row {bad[0]}, column vector: not a finite number (NaN or inf)")
    return np.ascontiguousarray(X, dtype=np.float32)


def embed_vectors(params, backbone: str, function: dict, path, ids: list[str], prompts: list[str],
                  rebuild: bool) -> dict:
    """Stage one for a vectors backbone: the table's pairs' vectors copied into the store under
    ``function`` (the backbone's store key). Returns what :class:`stages.embed.run.EmbedSummary`
    needs beyond the pairs: the store and how many vectors were copied."""
    where = f"backbones.{backbone}.model"
    vf = read_vectors(path)
    missing = [k for k, pid in enumerate(ids) if pid not in vf.index]
    if missing:
        k = missing[0]
        raise RmpipeError(f"{where}: {vf.path} has no vector for {len(missing)} of the {len(ids)} "
                          f"pairs to embed (e.g. pair_id {ids[k]}, prompt {prompts[k][:60]!r}); add "
                          f"them to the file, keyed by pair_id or by prompt and response")
    root = params.store_path(backbone)
    store = None if rebuild else open_if_current(root, spec_hash(function))
    have = store.pair_ids() if store is not None else set()
    if store is None or any(pid not in have for pid in ids):
        store = EmbeddingStore.create(root, backbone=backbone, spec=function, dim=vf.dim, rebuild=rebuild)
        have = store.pair_ids()
    todo = [pid for pid in dict.fromkeys(ids) if pid not in have]
    computed = 0
    step = params.embed.commit_rows
    for i in range(0, len(todo), step):
        chunk = todo[i:i + step]
        rows = [vf.index[pid] for pid in chunk]
        computed += store.append(chunk, vf.X[rows], {"source": str(vf.path)})
    return {"store": store, "computed": computed}


class VectorLookup:
    """The server's stand-in for an embedder: vectors of the pairs the file holds, NaN rows for
    the others (which the server reports as pairs it cannot score)."""

    def __init__(self, path: str | Path):
        self.file = read_vectors(path)

    def load(self) -> None:
        pass

    def special_tokens(self) -> tuple[str, ...]:
        return ()

    def chat_default_system(self) -> str | None:
        return None

    def __call__(self, prompts: list[str], responses: list[str]) -> np.ndarray:
        out = np.full((len(prompts), self.file.dim), np.nan, dtype=np.float32)
        for i, (p, r) in enumerate(zip(prompts, responses)):
            row = self.file.index.get(make_pair_id(p, r))
            if row is None and not p.startswith("[{"):  # a lone user turn may be keyed as turns
                row = self.file.index.get(make_pair_id(canonical_prompt([{"role": "user", "content": p}]), r))
            if row is not None:
                out[i] = self.file.X[row]
        return out
