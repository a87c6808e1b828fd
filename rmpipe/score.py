"""Scoring new pairs with a head: ``rmpipe score --head DIR --data FILE [--out FILE]``.

The head's card names the backbone and the hash of the embedding function it was trained on; a
store built by another function, or params that would build one, is refused by name before any
model is loaded (scores on other embeddings mean nothing).
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
from pipeline.heads import Head, load_head, sigmoid
from pipeline.reader import FORMATS, read_user_table, type_name
from pipeline.store import MANIFEST, EmbeddingStore
from pipeline.store_matrix import embeddings
from pipeline.table import normal_text, pair_ids
from stages.embed import backbones

OUTPUTS = (".parquet", ".csv", ".jsonl")
NESTED = {"List": "a list", "Array": "an array", "Struct": "a struct"}


def read_pairs(path: Path) -> pl.DataFrame:
    """A file of pairs (``prompt``, ``response``; other columns kept as read) with their
    ``pair_id``, read as ``prepare`` reads logs (:mod:`pipeline.reader`), the text in the same
    Unicode form as ``prepare`` holds it (:data:`pipeline.table.TEXT_FORM`), so a pair scores
    from the embedding of the same pair in the table, whichever form the file has."""
    path = Path(path)
    df = read_user_table(path, coerce=("prompt", "response"))
    missing = [c for c in ("prompt", "response") if c not in df.columns]
    if missing:
        raise RmpipeError(f"{path}: missing column(s) {', '.join(missing)}")
    if df.height == 0:
        raise RmpipeError(f"{path}: no rows to score")
    df = df.with_columns(normal_text(df["prompt"])[0], normal_text(df["response"])[0])
    return df.with_columns(pl.Series("pair_id", pair_ids(df["prompt"].to_list(), df["response"].to_list())))


def default_out(data: Path, tag: str) -> Path:
    """``<data minus its format suffix>.<tag>.parquet``: only a known data suffix is cut, so
    ``day.1.jsonl`` -> ``day.1.<tag>.parquet`` and ``x.jsonl.gz`` -> ``x.<tag>.parquet``."""
    name = data.name
    cut = next((f for f in sorted(FORMATS, key=len, reverse=True) if name.lower().endswith(f)), "")
    return data.with_name(f"{name[:len(name) - len(cut)]}.{tag}.parquet")


def check_out(data: Path, out: str | Path | None, tag: str) -> Path:
    """The output path (default :func:`default_out`), refused before any work if its type is
    unknown or it is the input file itself."""
    out = Path(out) if out else default_out(data, tag)
    if out.suffix not in OUTPUTS:
        raise RmpipeError(f"{out}: unknown output type (expected {', '.join(OUTPUTS)})")
    if out.resolve() == data.resolve() or (out.exists() and data.exists() and out.samefile(data)):
        raise RmpipeError(f"{out}: the output would overwrite the input --data; choose another --out")
    return out


def check_writable(df: pl.DataFrame, out: Path) -> None:
    """Refuse, before any embedding, an input column the output format cannot hold (the output
    keeps every input column): a list or struct in CSV, raw bytes in CSV or JSONL."""
    suffix = out.suffix
    for name, dtype in df.schema.items():
        held = None
        if suffix == ".csv" and (dtype.is_nested() or dtype == pl.Object):
            held = NESTED.get(type_name(dtype), "values that are not text or numbers")
        elif suffix in (".csv", ".jsonl") and "Binary" in str(dtype):
            held = "raw bytes"
        if held:
            other = ".parquet" if held == "raw bytes" else ".parquet or .jsonl"
            raise RmpipeError(f"{out}: column {name!r} holds {held}, which {suffix} cannot; write "
                              f"{other} (or drop the column from --data)")


def write_rewards(df: pl.DataFrame, out: Path) -> Path:
    suffix = out.suffix
    if suffix not in OUTPUTS:
        raise RmpipeError(f"{out}: unknown output type (expected {', '.join(OUTPUTS)})")
    with atomic_path(out) as tmp:
        if suffix == ".parquet":
            df.write_parquet(tmp)
        elif suffix == ".csv":
            df.write_csv(tmp)
        else:
            df.write_ndjson(tmp)
    return out


def head_store(params: Params, head: Head) -> EmbeddingStore | None:
    """The head's store if there is one, refused if its key is not the head's."""
    root = params.store_path(head.backbone)
    if not (root / MANIFEST).exists():
        return None
    store = EmbeddingStore(root)
    backbones.check_text_version(store.manifest, root, head.backbone)
    head.check_store(store)
    return store


def check_params_key(params: Params, head: Head) -> None:
    """Refuse, before any model is loaded or store made, params whose backbone settings give
    another embedding function than the head's (embedding with them could only fail after)."""
    spec = params.backbone(head.backbone)
    head.check_key(backbones.store_key(spec, head.backbone), f"params (backbones.{head.backbone})")


def score_frame(params: Params, head_dir: str | Path, df: pl.DataFrame, *,
                progress: bool = True) -> pl.DataFrame:
    """Pairs as :func:`read_pairs` gives them, with ``logit`` and ``reward`` = ``σ(f(e))``;
    pairs the store lacks are embedded into it first. Shared by ``score`` and ``rerank``."""
    head = load_head(head_dir)
    existing = head_store(params, head)  # refuse before any expensive embedding
    have = existing.pair_ids() if existing is not None else set()
    missing = [pid for pid in dict.fromkeys(df["pair_id"].to_list()) if pid not in have]
    if missing:
        check_params_key(params, head)
        from stages.embed.run import embed

        todo = df.filter(pl.col("pair_id").is_in(missing)).select("pair_id", "prompt", "response")
        embed(params, head.backbone, table=todo, progress=progress)
    store = EmbeddingStore(params.store_path(head.backbone))
    head.check_store(store)
    X = embeddings(store, df["pair_id"], params.fit.stream_gb)  # streamed beyond fit.stream_gb
    logits = head.logits(X)
    rewards = sigmoid(logits)
    return df.with_columns(pl.Series("logit", logits.astype(np.float64)),
                           pl.Series("reward", rewards.astype(np.float64)))


def score(params: Params, head_dir: str | Path, data: str | Path, out: str | Path | None = None, *,
          progress: bool = True) -> tuple[Path, int]:
    """Rewards ``σ(f(e))`` (and logits) for every row of ``data``; returns ``(out, rows)``."""
    data = Path(data)
    out = check_out(data, out, "rewards")
    pairs = read_pairs(data)
    check_writable(pairs, out)
    result = score_frame(params, head_dir, pairs, progress=progress)
    return write_rewards(result, out), result.height
