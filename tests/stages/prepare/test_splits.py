"""Splits by prompt: no group straddles splits, fractions hold by group, seeded."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest

from pipeline.config import Params, PrepareParams, SourceParams, SplitParams
from stages.prepare.run import build
from stages.prepare.shared import shared_root
from stages.prepare.splits import assign_splits, split_groups, straddling


def no_straddle(df: pl.DataFrame) -> bool:
    return df.group_by("group_id").agg(pl.col("split").n_unique())["split"].max() == 1


def test_groups_never_straddle_and_fractions_hold_by_group():
    groups = np.random.default_rng(0).integers(0, 2000, 30_000).astype(str)
    split = split_groups(groups, (0.6, 0.2, 0.2), seed=4)
    assert straddling(groups, split) == 0
    per_group = dict(zip(groups, split))
    shares = {s: sum(v == s for v in per_group.values()) / len(per_group) for s in ("train", "val", "test")}
    assert abs(shares["train"] - 0.6) < 0.01 and abs(shares["test"] - 0.2) < 0.01
    assert (split_groups(groups, (0.6, 0.2, 0.2), seed=4) == split).all()
    assert (split_groups(groups, (0.6, 0.2, 0.2), seed=5) != split).any()


def test_a_source_test_split_is_kept_and_train_goes_80_20():
    groups = np.array([f"g{i % 500}" for i in range(5000)], dtype=object)
    source = np.where(np.arange(5000) % 500 < 100, "test", "train")
    split = assign_splits(groups, source, (0.6, 0.2, 0.2), 0.2, seed=0)
    assert (split[source == "test"] == "test").all()
    train_groups = {g for g, s in zip(groups, split) if s == "train"}
    val_groups = {g for g, s in zip(groups, split) if s == "val"}
    assert len(val_groups) == 80 and len(train_groups) == 320 and straddling(groups, split) == 0


def test_builtin_table_has_no_prompt_in_two_splits():
    df, report = build(Params(prepare=PrepareParams(source=SourceParams(rows=3000))))
    assert no_straddle(df) and report["straddling_groups"] == 0
    assert df.group_by("prompt").agg(pl.col("split").n_unique())["split"].max() == 1


@pytest.mark.skipif(not shared_root().exists(), reason="../shared/data not present")
@pytest.mark.parametrize("name", ["hh-rlhf", "pandalm", "llmbar"])
def test_shared_tables_have_no_prompt_or_response_in_two_splits(name):
    df, _ = build(Params(prepare=PrepareParams(source=SourceParams(kind="shared", name=name),
                                               split=SplitParams(seed=3))))
    assert no_straddle(df)
    assert df.group_by("pair_id").agg(pl.col("split").n_unique())["split"].max() == 1
    assert df.group_by("comparison_id").agg(pl.col("split").n_unique())["split"].max() == 1
