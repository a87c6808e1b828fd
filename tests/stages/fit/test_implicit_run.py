"""Implicit mode end to end through the CLI on a toy project: fit every implicit method, the
cards record the feedback kind and the PU quantities, evaluate scores them, and a method or a
table of the other kind is refused by name."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import polars as pl
import pytest
from typer.testing import CliRunner

from rmpipe.cli import app
from pipeline.config import PrepareParams
from pipeline.table import Provenance, read_table, write_provenance, write_table
from pipeline.synthetic import make_world, write_project
from tests.stages.fit.conftest import fast_fit
from tests.stages.fit.test_fit_run import write_params

pytestmark = pytest.mark.slow  # every implicit method fitted and evaluated through the CLI

IMPLICIT = ["pu_naive", "scar", "upu", "nnpu", "sar", "sar_noise"]


def implicit_project(root):
    """The toy world with clicks instead of explicit feedback: a = y · Bernoulli(e), e logged."""
    world = make_world(n=1600, dim=8, seed=1)
    params = write_project(root, world, fit=fast_fit())
    table = read_table(params.table_path)
    rng = np.random.default_rng(0)
    y = table["label"].to_numpy()
    e = np.where(table["rating"].to_numpy() == 4, 0.6, 0.3)
    test = (table["split"] == "test").to_numpy()
    a = np.where(test, y, (y == 1) & (rng.random(len(y)) < e)).astype(np.int8)
    table = table.with_columns(pl.lit(True).alias("observed"), pl.Series("feedback", a, dtype=pl.Int8),
                               pl.Series("propensity_logged", np.where(test, np.nan, e)).fill_nan(None),
                               pl.Series("propensity_true", np.where(test, np.nan, e)).fill_nan(None))
    write_table(table, params.table_path)
    write_provenance(Provenance(licence="CC0-1.0 (synthetic)", feedback_kind="implicit"), params.table_path)
    return dataclasses.replace(params, prepare=PrepareParams(feedback="implicit"))


def test_every_implicit_method_fits_and_evaluates_through_the_cli(tmp_path):
    params = implicit_project(tmp_path)
    path = write_params(params, tmp_path / "params.yaml")
    runner = CliRunner()
    args = [a for m in IMPLICIT for a in ("--method", m)]
    ok = runner.invoke(app, ["fit", "--backbone", "toy", *args, "--params", str(path), "--no-progress"])
    assert ok.exit_code == 0, ok.output
    assert "(implicit feedback)" in ok.stderr and "c 0." in ok.stderr and "Elkan & Noto" in ok.stderr
    cards = {m: json.loads((tmp_path / "heads/toy/toy" / m / "card.json").read_text()) for m in IMPLICIT}
    assert all(c["feedback"] == "implicit" for c in cards.values())
    assert cards["upu"]["guard"]["mode"] == "plain" and cards["nnpu"]["guard"]["mode"] == "nonnegative"
    pu = cards["scar"]["diagnostics"]["pu"]
    assert 0 < pu["c"]["value"] <= 1 and pu["prior"]["value"] >= pu["acted_rate_train"]
    assert pu["labelling"]["source"] == "propensity_logged"
    ev = runner.invoke(app, ["evaluate", "--backbone", "toy", *args, "--params", str(path)])
    assert ev.exit_code == 0, ev.output
    reports = {m: json.loads((tmp_path / "reports/toy/toy" / f"{m}.json").read_text()) for m in IMPLICIT}
    assert all(r["metrics"]["auroc"] > 0.7 for r in reports.values())
    # pu_naive learns P(act | x), far below P(good | x): the debiased heads are better calibrated
    assert reports["sar"]["metrics"]["mae"] < reports["pu_naive"]["metrics"]["mae"]


def test_methods_and_params_of_the_other_kind_are_refused_by_name(tmp_path):
    params = implicit_project(tmp_path)
    path = write_params(params, tmp_path / "params.yaml")
    runner = CliRunner()
    bad = runner.invoke(app, ["fit", "--backbone", "toy", "--method", "causalrm", "--params", str(path)])
    assert bad.exit_code == 2 and "method causalrm learns from explicit feedback" in bad.stderr
    explicit = write_params(dataclasses.replace(params, prepare=PrepareParams()), tmp_path / "explicit.yaml")
    stale = runner.invoke(app, ["fit", "--backbone", "toy", "--method", "naive", "--params", str(explicit)])
    assert stale.exit_code == 2 and "the table holds implicit feedback but params declare prepare.feedback: explicit" in stale.stderr
    no_e = read_table(params.table_path).with_columns(pl.lit(None, dtype=pl.Float64).alias("propensity_logged"))
    write_table(no_e, params.table_path)
    sar = runner.invoke(app, ["fit", "--backbone", "toy", "--method", "sar", "--params", str(path)])
    assert sar.exit_code == 2 and "method sar needs the labelling propensity" in sar.stderr


def test_evaluate_reports_c_and_prior_beside_the_truth(tmp_path):
    from stages.evaluate.run import evaluate
    from stages.fit.run import fit

    params = implicit_project(tmp_path)
    fit(params, "toy", ["scar", "nnpu"], progress=False, log=lambda _: None)
    reports = evaluate(params, "toy", ["scar", "nnpu"], log=lambda _: None)
    pu = reports["scar"]["pu"]
    train = read_table(params.table_path).filter(pl.col("split") == "train")
    y, a = train["label"].to_numpy(), train["feedback"].to_numpy()
    assert pu["realised"]["prior"] == y.mean() and pu["realised"]["c"] == a[y == 1].mean()
    assert set(pu["estimated"]) == {"c", "prior"}
