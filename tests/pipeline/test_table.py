"""The feedback-table contract: round trip through real Parquet, stable hashes, validation."""

from __future__ import annotations

import json

import polars as pl
import pytest

from pipeline.errors import RmpipeError
from pipeline.table import (SCHEMA, canonical_prompt, make_pair_id, prompt_turns, read_table,
                            training_view, validate, write_table)


def table(n: int = 6) -> pl.DataFrame:
    prompts = [f"prompt {i // 2}" for i in range(n)]
    responses = [f"response {i}" for i in range(n)]
    observed = [i % 3 != 2 for i in range(n)]
    return pl.DataFrame({
        "pair_id": [make_pair_id(p, r) for p, r in zip(prompts, responses)],
        "prompt": prompts, "response": responses,
        "group_id": [f"g{i // 2}" for i in range(n)],
        "comparison_id": [f"c{i // 2}" if i < 4 else None for i in range(n)],
        "split": [("train", "val", "test")[i % 3] for i in range(n)],
        "observed": observed,
        "feedback": pl.Series([i % 2 if o else None for i, o in enumerate(observed)], dtype=pl.Int8),
        "label": pl.Series([i % 2 for i in range(n)], dtype=pl.Int8),
        "rating": [float(i) for i in range(n)],
        "propensity_logged": [None] * n,
        "propensity_true": [0.5] * n,
        "audit": [i == 0 for i in range(n)],
    }, schema_overrides={"propensity_logged": pl.Float64})


def test_round_trip_is_exact(tmp_path):
    df = table()
    path = write_table(df, tmp_path / "t" / "feedback.parquet")
    back = read_table(path)
    assert back.schema == pl.Schema(SCHEMA)
    assert back.equals(df)
    assert read_table(path, columns=["pair_id", "feedback"]).columns == ["pair_id", "feedback"]


def test_extra_covariates_survive_and_optional_columns_are_added(tmp_path):
    df = table().drop("comparison_id", "label", "rating", "propensity_logged", "propensity_true", "audit")
    df = df.with_columns(pl.lit("mobile").alias("surface"))
    back = read_table(write_table(df, tmp_path / "f.parquet"))
    assert back.columns == [*SCHEMA, "surface"] and back["label"].null_count() == back.height


def test_pair_id_is_stable_content_hash_without_boundary_collisions():
    assert make_pair_id("ab", "c") != make_pair_id("a", "bc")
    assert make_pair_id("p", "r") == make_pair_id("p", "r") and len(make_pair_id("p", "r")) == 32
    assert make_pair_id("p", "r") == "72814b54258a24112041e990d83f3526"  # pinned: stored embeddings are keyed by it


def test_canonical_prompt_is_order_free_json_and_inverts():
    turns = [{"role": "user", "content": "hi é"}, {"content": "yo", "role": "assistant"},
             {"role": "user", "content": "and?"}]
    text = canonical_prompt(turns)
    assert text == canonical_prompt([dict(reversed(list(t.items()))) for t in turns])
    assert " " not in text.replace("hi é", "") and "é" in text
    assert prompt_turns(text) == json.loads(text) == [dict(sorted(t.items())) for t in turns]
    assert canonical_prompt("plain") == "plain" and prompt_turns("plain") == [{"role": "user", "content": "plain"}]


@pytest.mark.parametrize("change,message", [
    (lambda d: d.drop("observed"), r"missing column\(s\) observed"),
    (lambda d: d.with_columns(pl.col("feedback").cast(pl.String)), r"column feedback has type String"),
    (lambda d: d.with_columns(pl.when(pl.int_range(6) == 4).then(pl.lit("")).otherwise("response").alias("response")),
     r"row 4, column response: empty text"),
    (lambda d: d.with_columns(pl.lit("dev").alias("split")), r"row 0, column split: unknown split"),
    (lambda d: d.with_columns(pl.lit(0.0).alias("propensity_true")), r"column propensity_true: propensity outside"),
    (lambda d: d.with_columns(pl.lit(float("nan")).alias("rating")), r"row 0, column rating: NaN value"),
    (lambda d: d.with_columns(pl.lit(3, dtype=pl.Int8).alias("label")), r"column label: label outside"),
    (lambda d: d.head(0), r"the table is empty"),
    # 300 does not fit Int8: it must be named, not silently nulled by the cast
    (lambda d: d.with_columns(pl.Series("feedback", [None, None, 300, None, None, None])),
     r"row 2, column feedback: feedback outside \{0, 1\}"),
])
def test_validate_names_the_column_and_row(change, message):
    with pytest.raises(RmpipeError, match=message):
        validate(change(table()), "t.parquet")


def test_bad_table_leaves_no_file(tmp_path):
    with pytest.raises(RmpipeError, match=r"t\.parquet"):
        write_table(table().with_columns(pl.lit("x" * 32).alias("pair_id")), tmp_path / "t.parquet")
    assert list(tmp_path.iterdir()) == []


def test_read_refuses_missing_and_damaged_files(tmp_path):
    with pytest.raises(RmpipeError, match="no such feedback table"):
        read_table(tmp_path / "none.parquet")
    (tmp_path / "bad.parquet").write_bytes(b"not parquet")
    with pytest.raises(RmpipeError, match="not a readable Parquet file"):
        read_table(tmp_path / "bad.parquet")


def test_training_view_hides_the_clean_label():
    assert {"label", "propensity_true"}.isdisjoint(training_view(table()).columns)
