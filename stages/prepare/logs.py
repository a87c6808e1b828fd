"""A user's own logs (parquet, jsonl, jsonl.gz, csv): the production case.

``prepare.source.columns`` maps contract columns to the file's (``{prompt: question}``); a
contract column the mapping leaves out is taken by its own name if the file has it. With an
``observed`` column, observed and feedback come from the logs and nothing is simulated; without
one, a ``rating`` column is simulated (if ``prepare.simulate.enabled``). In implicit mode
(``prepare.feedback: implicit``) a ``feedback`` column alone is the log (1 acted, 0 not; any
``observed`` column is not used): :mod:`stages.prepare.implicit`. Every bad row is an
error naming the file, the row (0-based, data rows) and the column: the whole table is checked
by :func:`pipeline.table.validate` in file order, before anything else touches it.
"""

from __future__ import annotations

from pathlib import Path

import polars as pl

from pipeline.config import SourceParams
from pipeline.errors import RmpipeError
from pipeline.files import read_any
from pipeline.table import SCHEMA, canonical_prompt, pair_ids, validate
from stages.prepare.implicit import IMPLICIT_HINT, check_logged
from stages.prepare.sources import Loaded, group_key

MAPPABLE = ("prompt", "response", "group_id", "comparison_id", "split", "observed", "feedback",
            "label", "rating", "propensity_logged", "pair_id")


def _map(df: pl.DataFrame, columns: dict[str, str], path: Path, covariates) -> pl.DataFrame:
    unknown = sorted(set(columns) - set(MAPPABLE))
    if unknown:
        raise RmpipeError(f"params: prepare.source.columns: {unknown[0]!r} is not a contract "
                          f"column (mappable: {', '.join(MAPPABLE)})")
    out = {}
    for name in MAPPABLE:
        col = columns.get(name, name)
        if col in df.columns:
            out[name] = df[col]
        elif name in columns:
            raise RmpipeError(f"{path}: missing column {col!r} (mapped to {name})")
    for name in ("prompt", "response"):
        if name not in out:
            raise RmpipeError(f"{path}: missing column {name!r} (map yours with "
                              f"prepare.source.columns.{name})")
    for name in covariates:
        if name not in df.columns:
            raise RmpipeError(f"{path}: missing column {name!r} (a declared covariate)")
        out[name] = df[name]
    return pl.DataFrame(out)


def _friendly_types(df: pl.DataFrame) -> pl.DataFrame:
    """Accept 0/1 integers for ``observed`` and integral floats (NaN = missing, as pandas
    writes it) for ``feedback``/``label``; anything else is left for validation to name."""
    if "observed" in df.columns and df["observed"].dtype.is_integer():
        if df["observed"].drop_nulls().is_in([0, 1]).all():
            df = df.with_columns(pl.col("observed").cast(pl.Boolean))
    for name in ("feedback", "label"):
        if name in df.columns and df[name].dtype.is_float():
            col = df[name].fill_nan(None)
            if (col.drop_nulls() == col.drop_nulls().round()).all():
                df = df.with_columns(col.cast(pl.Int64).alias(name))
    if "prompt" in df.columns and isinstance(df["prompt"].dtype, pl.List):
        df = df.with_columns(pl.col("prompt").map_elements(
            lambda t: canonical_prompt(t.to_list() if hasattr(t, "to_list") else t),
            return_dtype=pl.String))
    return df


def load_logs(src: SourceParams, where: str = "params", covariates=(), feedback: str = "explicit") -> Loaded:
    if not src.path:
        raise RmpipeError(f"{where}: prepare.source.path: kind 'file' needs the path of your logs")
    path = Path(src.path)
    df = _friendly_types(_map(read_any(path), src.columns, path, covariates))
    if df.height == 0:
        raise RmpipeError(f"{path}: empty file (no rows)")
    hints = []
    if feedback == "implicit":
        logged = "feedback" in df.columns
        if "observed" in df.columns:
            df = df.drop("observed")
            hints.append(f"{path}: column observed is not used in implicit mode (every row is an impression)")
        if logged:
            df = check_logged(df, str(path))
    else:
        logged = "observed" in df.columns
    for name in ("prompt", "response"):
        if df[name].dtype != pl.String:
            raise RmpipeError(f"{path}: column {name} has type {df[name].dtype}, expected String")
    filled = {}
    if "pair_id" not in df.columns:
        filled["pair_id"] = pl.Series(pair_ids(df["prompt"].fill_null("").to_list(),
                                               df["response"].fill_null("").to_list()))
    if "group_id" not in df.columns:
        filled["group_id"] = df["prompt"].fill_null("").map_elements(group_key, return_dtype=pl.String)
    if "split" not in df.columns:
        filled["split"] = pl.repeat("train", df.height, eager=True)  # placeholder, reassigned
    if not logged:
        filled["observed"] = pl.repeat(False, df.height, eager=True)  # placeholder, simulated
        filled["feedback"] = pl.repeat(None, df.height, dtype=pl.Int8, eager=True)
    if "group_id" in df.columns and df["group_id"].dtype != pl.String:
        df = df.with_columns(pl.col("group_id").cast(pl.String))
    checked = validate(df.with_columns(**filled), path)  # file order: row numbers are the user's
    if not logged and "rating" not in df.columns:
        hint = f"; {IMPLICIT_HINT}" if "feedback" in df.columns else ""
        raise RmpipeError(f"{path}: no observed column (map one with prepare.source.columns."
                          f"observed) and no rating column to simulate feedback from{hint}")
    if logged and feedback == "explicit":
        seen = checked.filter(pl.col("observed"))["feedback"]
        if seen.len() and (seen == 1).all():
            hints.append(f"{path}: every observed feedback is 1 (no 0 anywhere): {IMPLICIT_HINT}")
    keep = [c for c in checked.columns if c in SCHEMA and c != "split" or c in covariates]
    out = checked.select(keep)
    if "split" in df.columns:
        out = out.with_columns(checked["split"].alias("given_split"))
    return Loaded(out, f"file:{path.name}", src.licence or "the user's own logs (licence not stated)",
                  None, "rating as logged" if "rating" in df.columns else "", {}, logged=logged,
                  where=str(path), hints=hints)
