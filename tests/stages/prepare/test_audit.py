"""Audit rows in the table: drawn by the simulation, taken from a user's file, and Coat's real
randomised ratings (Schnabel et al. 2016) beside its self-selected ones."""

from __future__ import annotations

import dataclasses

import numpy as np
import polars as pl
import pytest

from pipeline.config import Params, PrepareParams, SimulateParams, SourceParams, SplitParams
from pipeline.errors import RmpipeError
from stages.prepare.run import build
from stages.prepare.shared import shared_root


def builtin(share=0.0, labels="noisy", rows=3000) -> Params:
    return Params(prepare=PrepareParams(source=SourceParams(kind="builtin", rows=rows),
                                        simulate=SimulateParams(audit_share=share, audit_labels=labels)))


def test_the_simulated_audit_is_a_uniform_share_of_the_non_test_rows_and_leaves_the_rest_alone():
    plain, _ = build(builtin())
    df, report = build(builtin(0.05))
    audit, test = df["audit"].to_numpy(), (df["split"] == "test").to_numpy()
    assert not audit[test].any() and audit.sum() == round(0.05 * (~test).sum())
    info = report["feedback"]["audit"]
    assert info["rows"] == audit.sum() and info["share_realised"] == pytest.approx(0.05, abs=1e-3)
    assert df.filter(pl.col("audit"))["observed"].all()
    # the audit is drawn whatever the propensity: its positive share is the population's, not the logs'
    logs = df.filter(~pl.col("audit") & pl.col("observed") & (pl.col("split") != "test"))
    assert df.filter(pl.col("audit"))["label"].mean() < logs["label"].mean() - 0.1
    # every row outside the audit is the same draw as without one
    keep = ~audit
    for col in ("observed", "feedback", "label", "split", "pair_id"):
        assert df[col].filter(pl.Series(keep)).equals(plain[col].filter(pl.Series(keep)), null_equal=True), col
    assert report["feedback"]["requested"]["audit_share"] == 0.05


def test_an_annotator_audit_is_clean_and_a_user_audit_carries_the_flips():
    clean, _ = build(builtin(0.2, "clean"))
    noisy, report = build(builtin(0.2, "noisy"))
    a = clean.filter(pl.col("audit"))
    assert (a["feedback"] == a["label"]).all()
    b = noisy.filter(pl.col("audit"))
    assert report["feedback"]["audit"]["flipped"] == int((b["feedback"] != b["label"]).sum()) > 0


def test_a_users_audit_column_is_read_with_the_observed_coercions(tmp_path):
    path = tmp_path / "logs.csv"
    rows = ["prompt,response,observed,feedback,from_random_sample"]
    rows += [f"p{i},r{i},{'yes' if i % 2 else 'no'},{i % 3 % 2 if i % 2 else ''},{'true' if i % 4 == 1 else 'false'}"
             for i in range(40)]
    path.write_text("\n".join(rows) + "\n")
    src = SourceParams(kind="file", path=str(path), columns={"audit": "from_random_sample"})
    df, report = build(Params(prepare=PrepareParams(source=src)))
    assert df["audit"].sum() == 10 and report["feedback"]["audit"]["rows"] <= 10
    path.write_text("prompt,response,observed,feedback,audit\np,r,no,,yes\n")
    with pytest.raises(RmpipeError, match=r"row 0, column audit: an audit row must be observed"):
        build(Params(prepare=PrepareParams(source=SourceParams(kind="file", path=str(path)))))


needs_coat = pytest.mark.skipif(not (shared_root() / "coat").exists(), reason="../shared/data/coat not present")


def coat(seed=0, share=None) -> Params:
    return Params(dataset="coat", prepare=PrepareParams(source=SourceParams(kind="shared", name="coat",
                                                                            audit_share=share, seed=seed),
                                                        split=SplitParams(seed=seed)))


@needs_coat
def test_coat_keeps_chosen_ratings_as_logs_random_ones_as_audit_and_test_and_splits_by_shopper():
    df, report = build(coat())
    raw_random = np.loadtxt(shared_root() / "coat" / "random.txt", delimiter=",", dtype=int)
    raw_chosen = np.loadtxt(shared_root() / "coat" / "user.txt", delimiter=",", dtype=int)
    assert len(raw_random) == 4640 and len(raw_chosen) == 6960
    test = df.filter(pl.col("split") == "test")
    n_test = test["group_id"].n_unique()
    assert test.height == 16 * n_test and test["observed"].all() and not test["audit"].any()
    assert report["dropped"]["self-selected rating of a test shopper (the test split is the random ratings)"] == 24 * n_test
    logs = df.filter((pl.col("split") != "test") & ~pl.col("audit"))
    shoppers = logs["group_id"].n_unique()
    assert logs.height == 300 * shoppers  # every (shopper, coat): chosen -> observed, the rest unobserved
    assert logs["observed"].sum() == 24 * shoppers
    audit = df.filter(pl.col("audit"))
    assert audit.height == 4 * shoppers  # a quarter of each shopper's 16 random ratings
    assert report["straddling_groups"] == 0
    # real selection on the label: chosen coats are liked more often than random ones (27.4% vs 18.5%)
    assert logs.filter(pl.col("observed"))["feedback"].mean() > audit["feedback"].mean() + 0.04
    assert test["prompt"][0].endswith("shopping for a coat.") and test["response"][0].startswith("A ")
    whole, _ = build(coat(share=1.0))
    assert whole.filter(pl.col("audit")).height == 16 * shoppers
    other, _ = build(coat(seed=1))
    assert set(other.filter(pl.col("split") == "test")["group_id"]) != set(test["group_id"])
