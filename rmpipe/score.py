"""Scoring new pairs with a head: ``rmpipe score --head DIR --data FILE [--out FILE]``.

The head's card names the backbone and the hash of the embedding function it was trained on; a
store built by another function is refused by name (scores on other embeddings mean nothing).
Pairs the store lacks are embedded first through stage one's entry point, so scoring the same
file twice costs one forward pass per pair, ever.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl

from pipeline.atomic import atomic_path
from pipeline.config import Params
from pipeline.errors import RmpipeError
from pipeline.reader import read_user_table
from pipeline.store import MANIFEST, EmbeddingStore
from pipeline.table import pair_ids


def read_pairs(path: Path) -> pl.DataFrame:
    """A file of pairs (``prompt``, ``response``; other columns kept as read) with their
    ``pair_id``, read as ``prepare`` reads logs (:mod:`pipeline.reader`)."""
    path = Path(path)
    df = read_user_table(path, coerce=("prompt", "response"))
    missing = [c for c in ("prompt", "response") if c not in df.columns]
    if missing:
        raise RmpipeError(f"{path}: missing column(s) {', '.join(missing)}")
    if df.height == 0:
        raise RmpipeError(f"{path}: no rows to score")
    return df.with_columns(pl.Series("pair_id", pair_ids(df["prompt"].to_list(), df["response"].to_list())))


def write_rewards(df: pl.DataFrame, out: Path) -> Path:
    suffix = out.suffix
    with atomic_path(out) as tmp:
        if suffix == ".parquet":
            df.write_parquet(tmp)
        elif suffix == ".csv":
            df.write_csv(tmp)
        elif suffix == ".jsonl":
            df.write_ndjson(tmp)
        else:
            raise RmpipeError(f"{out}: unknown output type (expected .parquet, .csv or .jsonl)")
    return out


def score_frame(params: Params, head_dir: str | Path, df: pl.DataFrame, *,
                progress: bool = True) -> pl.DataFrame:
    """Pairs as :func:`read_pairs` gives them, with ``logit`` and ``reward`` = ``σ(f(e))``;
    pairs the store lacks are embedded into it first. Shared by ``score`` and ``rerank``."""
    from stages.fit.artifacts import load_head, sigmoid

    head = load_head(head_dir)
    root = params.store_path(head.backbone)
    have = set()
    if (root / MANIFEST).exists():
        existing = EmbeddingStore(root)
        head.check_store(existing)  # refuse before any expensive embedding
        have = existing.pair_ids()
    missing = [pid for pid in dict.fromkeys(df["pair_id"].to_list()) if pid not in have]
    if missing:
        from stages.embed.run import embed

        todo = df.filter(pl.col("pair_id").is_in(missing)).select("pair_id", "prompt", "response")
        embed(params, head.backbone, table=todo, progress=progress)
    store = EmbeddingStore(root)
    head.check_store(store)
    X = store.read(df["pair_id"].to_list())
    logits = head.logits(X)
    rewards = sigmoid(logits)
    return df.with_columns(pl.Series("logit", logits.astype(np.float64)),
                           pl.Series("reward", rewards.astype(np.float64)))


def score(params: Params, head_dir: str | Path, data: str | Path, out: str | Path | None = None, *,
          progress: bool = True) -> tuple[Path, int]:
    """Rewards ``σ(f(e))`` (and logits) for every row of ``data``; returns ``(out, rows)``."""
    data = Path(data)
    result = score_frame(params, head_dir, read_pairs(data), progress=progress)
    out = Path(out) if out else data.with_name(data.name.split(".")[0] + ".rewards.parquet")
    return write_rewards(result, out), result.height
