"""``rmpipe rerank --head HEAD --data FILE``: best-of-N as a command.

The file holds groups of candidate responses: rows sharing a ``group_id`` (when the column is
there), else rows sharing a prompt. Every row is scored as ``rmpipe score`` scores it (the same
reader, the same store, the same embedding of what the store lacks); the output lists each group
(in order of first appearance) with its candidates by descending reward, ``rank`` 1..n, and
``best`` true on rank 1. Ties keep file order.
"""

from __future__ import annotations

from pathlib import Path

import polars as pl

from pipeline.config import Params
from pipeline.table import _refuse_rows
from rmpipe.score import check_out, check_writable, read_pairs, score_frame, write_rewards


def group_key(pairs: pl.DataFrame, where: str) -> str:
    """``group_id`` if the file has it (every row set), else ``prompt``. A null or blank
    ``group_id`` is refused alike, as ``prepare`` refuses it: "" is no group."""
    if "group_id" not in pairs.columns:
        return "prompt"
    ids = pairs["group_id"].cast(pl.String)
    _refuse_rows(ids.is_null(), where, "group_id", "missing value")
    _refuse_rows(ids.str.strip_chars().str.len_chars() == 0, where, "group_id", "empty text")
    return "group_id"


def rank_groups(scored: pl.DataFrame, key: str) -> pl.DataFrame:
    """Order scored rows by group (first appearance), then by descending reward; add ``rank``
    and ``best``."""
    scored = scored.with_row_index("_row")
    order = scored.group_by(key, maintain_order=True).agg(pl.col("_row").min().alias("_group"))
    ranked = (scored.join(order, on=key, how="left")
              .sort(["_group", "reward", "_row"], descending=[False, True, False])
              .with_columns(pl.int_range(1, pl.len() + 1).over("_group").alias("rank")))
    return ranked.with_columns((pl.col("rank") == 1).alias("best")).drop("_row", "_group")


def rerank(params: Params, head_dir: str | Path, data: str | Path, out: str | Path | None = None, *,
           progress: bool = True) -> tuple[Path, int, int]:
    """Write the reranked candidates; returns ``(out, candidates, groups)``."""
    data = Path(data)
    out = check_out(data, out, "reranked")
    pairs = read_pairs(data)
    key = group_key(pairs, str(data))
    check_writable(pairs, out)
    ranked = rank_groups(score_frame(params, head_dir, pairs, progress=progress), key)
    return write_rewards(ranked, out), ranked.height, int(ranked["best"].sum())
