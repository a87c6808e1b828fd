"""A user's own logs (parquet, jsonl, jsonl.gz, csv): the production case.

``prepare.source.columns`` maps contract columns to the file's (``{prompt: question}``); a
contract column the mapping leaves out is taken by its own name if the file has it. With an
``observed`` column, observed and feedback come from the logs and nothing is simulated; without
one, a ``rating`` column is simulated (if ``prepare.simulate.enabled``), or, with no rating,
a clean 0/1 ``label`` taken as a two-level rating (a label beside a rating is the user's and is
never overwritten: :func:`stages.prepare.run.build` refuses one the simulation would change).
The file is read by :mod:`pipeline.reader` (the same coercions as ``score``). In implicit mode
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
from pipeline.reader import CONTRACT, read_user_table
from pipeline.table import SCHEMA, _refuse_rows, pair_ids, validate
from stages.prepare.implicit import IMPLICIT_HINT, check_logged
from stages.prepare.rows import Loaded, group_key

MAPPABLE = ("prompt", "response", "group_id", "comparison_id", "split", "observed", "audit", "feedback",
            "label", "rating", "propensity_logged", "pair_id")
# kept beside the contract when the file has them, as the shared sets' adapters write them:
# ``policy`` names the system that wrote each response (a propensity covariate when declared)
KEPT = ("policy",)


def _map(df: pl.DataFrame, columns: dict[str, str], path: Path, covariates) -> pl.DataFrame:
    """The contract columns, :data:`KEPT` and the declared covariates, by the names ``columns``
    maps them from (a covariate is mapped like a contract column)."""
    unknown = sorted(set(columns) - set(MAPPABLE) - set(KEPT) - set(covariates))
    if unknown:
        extra = f"; covariates: {', '.join(covariates)}" if covariates else ""
        raise RmpipeError(f"params: prepare.source.columns: {unknown[0]!r} is not a contract column "
                          f"nor a covariate (mappable: {', '.join(MAPPABLE + KEPT)}{extra})")
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
    for name in KEPT:
        col = columns.get(name, name)
        if name not in covariates and col in df.columns:
            out[name] = df[col].cast(pl.String)
        elif name in columns and name not in covariates:
            raise RmpipeError(f"{path}: missing column {col!r} (mapped to {name})")
    for name in covariates:
        col = columns.get(name, name)
        if col not in df.columns:
            mapped = f" (mapped to {name})" if col != name else ""
            raise RmpipeError(f"{path}: missing column {col!r}{mapped} (a declared covariate)")
        out[name] = df[col]
    return pl.DataFrame(out)


def _label_as_rating(df: pl.DataFrame, where: str) -> pl.DataFrame:
    """A clean 0/1 ``label`` with nothing logged and no ``rating``: the paper's simulation runs
    on it as a two-level rating (its median threshold gives back the same label)."""
    label = df["label"]
    _refuse_rows(label.is_null(), where, "label", "missing value (with no rating column, the label "
                 "is the rating that feedback is simulated from)")
    _refuse_rows(~label.is_in([0, 1]), where, "label", "label outside {0, 1}")
    return df.with_columns(label.cast(pl.Float64).alias("rating"))


def load_logs(src: SourceParams, where: str = "params", covariates=(), feedback: str = "explicit") -> Loaded:
    if not src.path:
        raise RmpipeError(f"{where}: prepare.source.path: kind 'file' needs the path of your logs")
    path = Path(src.path)
    coerce = [c for c in CONTRACT if not (feedback == "implicit" and c == "observed")]  # unused there
    df = _map(read_user_table(path, src.columns, coerce), src.columns, path, covariates)
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
    rating_note = "rating as logged" if "rating" in df.columns else ""
    if not logged and "rating" not in df.columns and "label" in df.columns:
        df = _label_as_rating(df, str(path))
        rating_note = "label (0/1) taken as a two-level rating"
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
    keep = [c for c in checked.columns if c in SCHEMA and c != "split" or c in covariates or c in KEPT]
    out = checked.select(keep)
    if "split" in df.columns:
        out = out.with_columns(checked["split"].alias("given_split"))
    return Loaded(out, f"file:{path.name}", src.licence or "the user's own logs (licence not stated)",
                  None, rating_note, {}, logged=logged,
                  where=str(path), hints=hints)
