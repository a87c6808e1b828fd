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
from pipeline.errors import RmpipeError
from pipeline.reader import FORMATS
from rmpipe.score import read_pairs, score_frame, write_rewards

OUTPUTS = (".parquet", ".csv", ".jsonl")


def default_out(data: Path) -> Path:
    """``<data minus its format suffix>.reranked.parquet`` (``day.1.jsonl`` -> ``day.1.reranked.parquet``)."""
    name = data.name
    suffix = next((f for f in sorted(FORMATS, key=len, reverse=True) if name.lower().endswith(f)), data.suffix)
    return data.with_name(name[:len(name) - len(suffix)] + ".reranked.parquet")


def check_out(data: Path, out: Path | None) -> Path:
    """The output path, refused before any scoring if its type is unknown or it is the input."""
    out = Path(out) if out else default_out(data)
    if out.suffix not in OUTPUTS:
        raise RmpipeError(f"{out}: unknown output type (expected {', '.join(OUTPUTS)})")
    if out.resolve() == data.resolve():
        raise RmpipeError(f"{out}: the output would overwrite the input --data; choose another --out")
    return out


def group_key(pairs: pl.DataFrame, where: str) -> str:
    """``group_id`` if the file has it (every row set), else ``prompt``."""
    if "group_id" not in pairs.columns:
        return "prompt"
    nulls = pairs["group_id"].is_null()
    if nulls.any():
        raise RmpipeError(f"{where}: row {int(nulls.arg_max())}: empty group_id")
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
    out = check_out(data, out)
    pairs = read_pairs(data)
    key = group_key(pairs, str(data))
    ranked = rank_groups(score_frame(params, head_dir, pairs, progress=progress), key)
    return write_rewards(ranked, out), ranked.height, int(ranked["best"].sum())
