"""What every source adapter builds its rows with: the :class:`Loaded` result, the drop counter,
the group key, and the comparison and dialogue helpers. Their own module so the adapters import
it and ``sources`` (which dispatches to the adapters) imports nothing back.
"""

from __future__ import annotations

import hashlib
import re
from collections import Counter
from dataclasses import dataclass, field

import polars as pl

from pipeline.table import canonical_prompt


@dataclass
class Loaded:
    """A source's rows. ``frame`` holds prompt, response, group_id, comparison_id, rating and,
    where the source has its own split, ``source_split`` (train / test). ``logged``: observed
    and feedback come from the source itself (user logs): nothing is simulated."""

    frame: pl.DataFrame
    name: str
    licence: str
    scale: tuple[float, float] | None = None
    rating_note: str = ""
    dropped: dict[str, int] = field(default_factory=dict)
    logged: bool = False
    where: str = ""
    hints: list[str] = field(default_factory=list)  # one-line notes for the user (not errors)


def group_key(prompt: str) -> str:
    """``group_id`` of a prompt: a short content hash, so equal prompts share a group."""
    return "g" + hashlib.sha256(prompt.encode("utf-8")).hexdigest()[:16]


class Drops(Counter):
    """Rows (or comparisons) dropped, by reason."""

    def add(self, reason: str, n: int = 1) -> None:
        self[reason] += n


def frame(rows: list[dict]) -> pl.DataFrame:
    """Rows (prompt, response, rating, comparison_id[, source_split][, text columns such as
    ``policy``]) -> a frame with group_id. Extra keys become string columns the table keeps
    (a log's covariates: ``fit.propensity.covariates`` may name them)."""
    schema = {"prompt": pl.String, "response": pl.String, "rating": pl.Float64,
              "comparison_id": pl.String}
    for key in (rows[0] if rows else {}):
        schema.setdefault(key, pl.String)
    df = pl.DataFrame(rows, schema=schema, orient="row") if rows else pl.DataFrame(schema=schema)
    return df.with_columns(
        pl.col("prompt").map_elements(group_key, return_dtype=pl.String).alias("group_id"))


def is_blank(text) -> bool:
    return not isinstance(text, str) or not text.strip()


def comparison(prompt: str, better: str, worse: str, cid: str, drops: Drops,
               extra: dict | None = None) -> list[dict]:
    """One human comparison -> two rows (preferred rating 1, other 0) sharing ``cid``;
    an empty or identical pair is dropped and counted."""
    if is_blank(prompt):
        drops.add("empty prompt")
        return []
    if is_blank(better) or is_blank(worse):
        drops.add("empty response")
        return []
    if better == worse:
        drops.add("identical responses")
        return []
    extra = extra or {}
    return [{"prompt": prompt, "response": better, "rating": 1.0, "comparison_id": cid, **extra},
            {"prompt": prompt, "response": worse, "rating": 0.0, "comparison_id": cid, **extra}]


_TURN = re.compile(r"\n\n(Human|Assistant): ")


def dialogue_turns(text: str) -> list[dict] | None:
    """An hh-rlhf dialogue ``\\n\\nHuman: ...\\n\\nAssistant: ...`` as chat turns (None if it
    does not parse)."""
    parts = _TURN.split(text)
    if len(parts) < 3 or parts[0].strip():
        return None
    roles = {"Human": "user", "Assistant": "assistant"}
    return [{"role": roles[r], "content": c} for r, c in zip(parts[1::2], parts[2::2])]


def context_prompt(turns: list[dict]) -> str:
    """The context before the final reply: one user turn stays plain text, several become
    canonical JSON turns (pipeline.table.canonical_prompt)."""
    if len(turns) == 1 and turns[0]["role"] == "user":
        return turns[0]["content"]
    return canonical_prompt(turns)


def hh_comparison(chosen: str, rejected: str, cid: str, drops: Drops,
                  extra: dict | None = None) -> list[dict]:
    """A chosen/rejected dialogue pair -> shared context prompt + the two final replies."""
    a, b = dialogue_turns(chosen), dialogue_turns(rejected)
    if a is None or b is None:
        drops.add("dialogue does not parse")
        return []
    if a[-1]["role"] != "assistant" or b[-1]["role"] != "assistant":
        drops.add("dialogue does not end with an Assistant reply")
        return []
    if a[:-1] != b[:-1]:
        drops.add("chosen and rejected contexts differ")
        return []
    return comparison(context_prompt(a[:-1]), a[-1]["content"], b[-1]["content"], cid, drops, extra)
