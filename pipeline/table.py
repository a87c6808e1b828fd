"""The feedback table: the one contract between `prepare` and every later stage.

One row per logged event (a response shown to a user). The same (prompt, response) can appear in
several rows with different feedback: that is data, so ``pair_id`` (the embedding store's key) is
not unique. ``label`` is the clean label and exists for evaluation only: training never reads it.
Beside the table lies its provenance (``provenance.json``): where the rows came from, their
licence, the kind of feedback they hold and, when feedback was simulated, how.
"""

from __future__ import annotations

import hashlib
import json
import unicodedata
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import polars as pl

from pipeline.atomic import atomic_path
from pipeline.errors import RmpipeError

SPLITS = ("train", "val", "test")
PROVENANCE = "provenance.json"
OLD_PROVENANCE = ("simulation.json", "metadata.json")  # older names, still read

SCHEMA: dict[str, pl.DataType] = {
    "pair_id": pl.String,
    "prompt": pl.String,
    "response": pl.String,
    "group_id": pl.String,
    "comparison_id": pl.String,
    "split": pl.String,
    "observed": pl.Boolean,
    "feedback": pl.Int8,
    "label": pl.Int8,
    "rating": pl.Float64,
    "propensity_logged": pl.Float64,
    "propensity_true": pl.Float64,
    "audit": pl.Boolean,  # feedback from a randomised audit: asked regardless of the user's choice
}
# Every prompt and response is held in Unicode NFC before it is hashed: the same text typed on
# different systems (é as one code point, or e + a combining accent) is one pair and one group.
TEXT_FORM = "NFC"
REQUIRED = ("pair_id", "prompt", "response", "group_id", "split", "observed", "feedback")
NULLABLE_OPTIONAL = ("comparison_id", "label", "rating", "propensity_logged", "propensity_true", "audit")


def canonical_prompt(prompt: str | Sequence[dict], where: str = "prompt") -> str:
    """A prompt as one string: plain text stays as is; a multi-turn prompt becomes canonical JSON
    (``[{"content","role"}...]``, sorted keys, no spaces) so that its hash is stable. A turn
    without a text ``role`` or ``content`` is an error naming ``where`` (never a role "None")."""
    if isinstance(prompt, str):
        return prompt
    if not len(prompt):
        raise RmpipeError(f"{where}: an empty list of chat turns")
    for j, t in enumerate(prompt):
        for key in ("role", "content"):
            problem = turn_problem(t, key)
            if problem:
                raise RmpipeError(f"{where}: chat turn {j} needs a text {key!r} ({problem})")
    turns = [{"role": t["role"], "content": t["content"]} for t in prompt]
    return json.dumps(turns, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def kind_of(value) -> str | None:
    """A JSON value's kind as messages name it (None for null)."""
    if value is None:
        return None
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, str):
        return "text"
    return "a list" if isinstance(value, list) else "an object"


def turn_problem(turn, key: str) -> str | None:
    """What is wrong with a chat turn's ``role`` or ``content``: None when it is text, else
    ``missing`` or the kind it holds."""
    value = turn.get(key) if isinstance(turn, dict) else None
    return None if isinstance(value, str) else "missing" if value is None else kind_of(value)


def prompt_turns(prompt: str) -> list[dict]:
    """Inverse of :func:`canonical_prompt`: the chat turns a prompt stands for."""
    return text_turns(prompt) or [{"role": "user", "content": prompt}]


def text_turns(prompt: str) -> list[dict] | None:
    """The chat turns a *text* prompt spells as JSON (``[{"role": ..., "content": ...}, ...]``,
    starting ``[{``), else None. Every command reads such a text as those turns: it is how a CSV
    cell carries a chat prompt, and the table stores turns as that text."""
    if not prompt.startswith("[{"):
        return None
    try:
        turns = json.loads(prompt)
    except json.JSONDecodeError:
        return None
    if all(isinstance(t, dict) and isinstance(t.get("role"), str) and isinstance(t.get("content"), str)
           for t in turns):
        return turns
    return None


def normal_text(col: pl.Series) -> tuple[pl.Series, int]:
    """``col`` (text) in :data:`TEXT_FORM`, and how many cells that changed."""
    out = col.str.normalize(TEXT_FORM)
    return out, int((out != col).fill_null(False).sum())


def normal_pair(prompt: str, response: str) -> tuple[str, str]:
    """A pair as every command keys it: both texts in :data:`TEXT_FORM`, and a text prompt that
    spells chat turns (:func:`text_turns`) as their canonical JSON. For one pair at a time (the
    server); the file readers do the same column-wise."""
    prompt = unicodedata.normalize(TEXT_FORM, prompt)
    turns = text_turns(prompt)
    return (prompt if turns is None else canonical_prompt(turns)), unicodedata.normalize(TEXT_FORM, response)


def make_pair_id(prompt: str, response: str) -> str:
    """Content hash of (prompt, response): 32 hex digits of SHA-256 over a length-prefixed
    encoding, so that ("ab", "c") and ("a", "bc") never collide."""
    p, r = prompt.encode("utf-8"), response.encode("utf-8")
    h = hashlib.sha256()
    h.update(len(p).to_bytes(8, "little") + p + len(r).to_bytes(8, "little") + r)
    return h.hexdigest()[:32]


def pair_ids(prompts: Sequence[str], responses: Sequence[str]) -> list[str]:
    return [make_pair_id(p, r) for p, r in zip(prompts, responses)]


def conform(df: pl.DataFrame) -> pl.DataFrame:
    """Add the optional columns as nulls, order columns as SCHEMA, keep extra covariates after."""
    for name in NULLABLE_OPTIONAL:
        if name not in df.columns:
            df = df.with_columns(pl.lit(None, dtype=SCHEMA[name]).alias(name))
    extra = [c for c in df.columns if c not in SCHEMA]
    return df.select([*SCHEMA, *extra])


def validate(df: pl.DataFrame, where: str | Path = "<table>") -> pl.DataFrame:
    """Check ``df`` against the contract and return it conformed; raise RmpipeError naming
    ``where`` and the first offending column or row."""
    where = str(where)
    if df.height == 0:
        raise RmpipeError(f"{where}: the table is empty (no rows)")
    missing = [c for c in REQUIRED if c not in df.columns]
    if missing:
        raise RmpipeError(f"{where}: missing column(s) {', '.join(missing)}")
    for name, dtype in SCHEMA.items():
        if name not in df.columns:
            continue
        got = df.schema[name]
        if got == dtype or got == pl.Null:
            continue
        if dtype == pl.Int8 and got.is_integer():
            continue
        if dtype == pl.Float64 and (got.is_float() or got.is_integer()):
            continue
        raise RmpipeError(f"{where}: column {name} has type {got}, expected {dtype}")

    def check(mask: pl.Series, column: str, what: str) -> None:
        _refuse_rows(mask, where, column, what)

    for name in ("feedback", "label"):  # before the Int8 cast, which would null out 300
        if name in df.columns and df.schema[name] != pl.Null:
            check(~df[name].is_in([0, 1]) & df[name].is_not_null(), name, f"{name} outside {{0, 1}}")
    df = conform(df).with_columns(
        [pl.col(n).cast(t, strict=False) for n, t in SCHEMA.items()]
    )

    for name in ("pair_id", "prompt", "response", "group_id", "split"):
        check(df[name].is_null(), name, "missing value")
    for name in ("prompt", "response", "group_id"):
        check(df[name].str.strip_chars().str.len_chars() == 0, name, "empty text")
    check(df["observed"].is_null(), "observed", "missing value")
    check(~df["split"].is_in(SPLITS), "split", f"unknown split (expected one of {', '.join(SPLITS)})")
    check(~df["observed"] & df["feedback"].is_not_null(), "feedback", "feedback on a row whose observed is false")
    check(df["observed"] & df["feedback"].is_null(), "feedback", "observed row without feedback")
    check(~df["feedback"].is_in([0, 1]) & df["feedback"].is_not_null(), "feedback", "feedback outside {0, 1}")
    check(~df["label"].is_in([0, 1]) & df["label"].is_not_null(), "label", "label outside {0, 1}")
    check(df["audit"].fill_null(False) & ~df["observed"], "audit",
          "an audit row must be observed (its feedback was asked for)")
    for name in ("rating", "propensity_logged", "propensity_true"):
        check(df[name].is_nan(), name, "NaN value")
    for name in ("propensity_logged", "propensity_true"):
        col = df[name]
        check((col <= 0) | (col > 1), name, "propensity outside (0, 1]")
    check_pair_ids(df, where)
    return df


def check_pair_ids(df: pl.DataFrame, where: str | Path = "<table>") -> None:
    """Refuse rows whose pair_id is not the hash of their (prompt, response): a wrong key would
    file an embedding under another pair, for good."""
    expected = pl.Series(pair_ids(df["prompt"].to_list(), df["response"].to_list()))
    _refuse_rows(df["pair_id"] != expected, str(where), "pair_id",
                 "pair_id does not match the hash of (prompt, response)")


def _refuse_rows(mask: pl.Series, where: str, column: str, what: str) -> None:
    """Raise RmpipeError naming the first row where ``mask`` holds, and how many do."""
    bad = mask.fill_null(False)
    if bad.any():
        raise RmpipeError(f"{where}: row {int(bad.arg_true()[0])}, column {column}: {what} "
                          f"({int(bad.sum())} row(s) in all)")


def write_table(df: pl.DataFrame, path: str | Path) -> Path:
    """Validate, then write Parquet atomically: a bad table leaves no file behind."""
    df = validate(df, path)
    path = Path(path)
    with atomic_path(path) as tmp:
        df.write_parquet(tmp)
    return path


def read_table(path: str | Path, columns: Sequence[str] | None = None) -> pl.DataFrame:
    """Read and validate a feedback table. ``columns`` restricts what is returned (after
    validation of the whole), e.g. training code drops ``label``."""
    path = Path(path)
    if not path.exists():
        raise RmpipeError(f"{path}: no such feedback table (run `rmpipe prepare` first)")
    try:
        df = pl.read_parquet(path)
    except Exception as exc:  # pyarrow/polars raise many types for a damaged file
        raise RmpipeError(f"{path}: not a readable Parquet file ({type(exc).__name__})") from None
    df = validate(df, path)
    return df.select(columns) if columns is not None else df


def training_view(df: pl.DataFrame) -> pl.DataFrame:
    """What training may see: everything except the clean label and the true propensity."""
    return df.drop([c for c in ("label", "propensity_true") if c in df.columns])


@dataclass(frozen=True)
class Provenance:
    """What ``prepare`` records beside the table, read and written only here. ``feedback`` says
    how the feedback came about: ``simulated`` true with the requested and realised rates, or
    false for real logs. ``details`` keeps the rest of prepare's report (dataset, split, rows,
    drops), written at the top level of the file beside the named fields."""

    source: str | None = None
    licence: str | None = None
    feedback_kind: str = "explicit"  # tables from before the field hold explicit feedback
    feedback: dict = field(default_factory=dict)
    details: dict = field(default_factory=dict)

    @property
    def simulation(self) -> dict | None:
        """The simulation block, or None where nothing was simulated."""
        return self.feedback if self.feedback.get("simulated") else None

    def to_dict(self) -> dict:
        return {**self.details, "source": self.source, "licence": self.licence,
                "feedback_kind": self.feedback_kind, "feedback": self.feedback}

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True) + "\n"

    @classmethod
    def from_dict(cls, d: dict) -> "Provenance":
        named = ("source", "licence", "license", "feedback_kind", "feedback")
        licence = d.get("licence") or d.get("license")
        return cls(source=d.get("source"), licence=None if licence is None else str(licence),
                   feedback_kind=d.get("feedback_kind") or "explicit", feedback=dict(d.get("feedback") or {}),
                   details={k: v for k, v in d.items() if k not in named})


def provenance_path(table_path: str | Path) -> Path:
    return Path(table_path).with_name(PROVENANCE)


def write_provenance(prov: Provenance, table_path: str | Path) -> Path:
    """Write the table's provenance atomically (``prepare`` renames it together with the table
    instead: see stages/prepare/run.py)."""
    path = provenance_path(table_path)
    with atomic_path(path) as tmp:
        tmp.write_text(prov.to_json())
    return path


def read_provenance(table_path: str | Path) -> Provenance:
    """The provenance beside ``table_path``; a table prepared before the rename has it as
    ``simulation.json``, which is read instead. No file at all (a table written by other means):
    the defaults, i.e. explicit feedback, licence unknown."""
    folder = Path(table_path).parent
    for name in (PROVENANCE, *OLD_PROVENANCE):
        path = folder / name
        if not path.exists():
            continue
        try:
            meta = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise RmpipeError(f"{path}: not a readable provenance file ({type(exc).__name__}); "
                              "re-run `rmpipe prepare`") from None
        if not isinstance(meta, dict):
            raise RmpipeError(f"{path}: not a provenance file (expected a JSON object); re-run `rmpipe prepare`")
        return Provenance.from_dict(meta)
    return Provenance()
