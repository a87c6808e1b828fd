"""The graded shared sets (arena-bench-v1, wmt-mqm-ted-ende) on the real files: counts as their
SOURCE.md states, dropped rows counted by reason, ratings on the source's own scale."""

from __future__ import annotations

import gzip
import json

import polars as pl
import pytest

from pipeline.config import SourceParams
from stages.prepare.shared import shared_root
from stages.prepare.sources import load_source

needs_shared = pytest.mark.skipif(not shared_root().exists(), reason="../shared/data not present")


@needs_shared
def test_arena_bench_joins_answers_to_grades():
    got = load_source(SourceParams(kind="shared", name="arena-bench-v1"))
    df = got.frame
    # SOURCE.md: 4,500 answers, 39 grades that did not parse; 27 answers are empty strings
    assert got.dropped == {"grade missing (the judge's text did not parse)": 39, "empty response": 27}
    assert df.height == 4500 - 39 - 27
    assert df["group_id"].n_unique() == 300
    assert sorted(df["rating"].unique().to_list()) == [float(g) for g in range(1, 11)]
    assert got.scale == (1.0, 10.0) and df["comparison_id"].is_null().all()
    # an independent join of one model's answers and grades agrees row by row
    base = shared_root() / "arena-bench-v1"
    with gzip.open(base / "model_judgment" / "gpt-4-turbo.jsonl.gz", "rt") as fh:
        grades = {r["question_id"]: r["score"] for r in map(json.loads, fh)}
    with gzip.open(base / "model_answer" / "gpt-4-1106-preview.jsonl.gz", "rt") as fh:
        answers = {r["question_id"]: r["choices"][0]["turns"][0] for r in map(json.loads, fh)}
    qid, answer = next((q, a) for q, a in answers.items() if grades.get(q) is not None and a.strip())
    row = df.filter(pl.col("response") == answer)
    assert row.height >= 1 and row["rating"][0] == float(grades[qid])
    assert row["policy"][0] == "gpt-4-1106-preview"
    # policy: the model that answered, what a serving log records (a propensity covariate)
    per_model = df.group_by("policy").agg(pl.col("rating").mean()).sort("rating")
    assert per_model.height == 15
    assert per_model["policy"][0] == "llama-13b" and per_model["policy"][-1] == "gpt-4-1106-preview"


@needs_shared
def test_wmt_mqm_one_row_per_rated_translation():
    got = load_source(SourceParams(kind="shared", name="wmt-mqm-ted-ende"))
    df = got.frame
    # SOURCE.md: 14 systems x 606 segments = 8,484 scores, 1,078 of them "None"
    assert got.dropped == {"segment not rated": 1078}
    assert df.height == 7406 == 14 * 529
    assert df["rating"].n_unique() == 37 and df["rating"].max() == 0.0 and df["rating"].min() >= -25.0
    assert not df["response"].str.contains("<v>").any() and not df["prompt"].str.contains("</v>").any()
    assert df["prompt"].str.starts_with("Translate to German: ").all()
    # a prompt's group holds its 14 translations (identical sources share one group)
    sizes = df.group_by("group_id").len()["len"]
    assert (sizes % 14 == 0).all() and sizes.sum() == 7406
    # the human reference is present under the scores file's name
    first = df.filter(pl.col("prompt").str.contains("consider for a second the very simple fact"))
    assert first.height == 14
    assert first["policy"].n_unique() == 14 and "ref-A" in first["policy"].to_list()
    assert df["policy"].value_counts()["count"].to_list() == [529] * 14
