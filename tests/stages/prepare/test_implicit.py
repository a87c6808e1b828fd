"""Implicit mode in prepare, through the real CLI: a click-only file works, bad clicks are refused
by row and column, the simulation reports its realised rates, and an explicit file with no 0
gets a hint."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from pipeline.config import ImplicitSimParams, SimulateParams
from pipeline.simulation import Simulator
from pipeline.table import read_provenance

CLICKS = [{"prompt": f"p{i % 7}", "response": f"r{i}", "copied": int(i % 3 == 0)} for i in range(40)]


def write(name: str, records: list[dict]) -> str:
    pl.DataFrame(records, infer_schema_length=None).write_csv(name) if name.endswith(".csv") else \
        Path(name).write_text("".join(json.dumps(r) + "\n" for r in records))
    return name


def test_a_file_with_only_a_click_column_works(cli):
    write("clicks.csv", CLICKS)
    result = cli("prepare", "--source", "file:clicks.csv", "--column", "feedback=copied",
                 "--feedback", "implicit", "--dataset", "mine")
    assert result.exit_code == 0, result.output
    table = pl.read_parquet("data/prepared/mine/feedback.parquet")
    assert table["observed"].all() and table["feedback"].null_count() == 0
    assert table.sort("response")["feedback"].sum() == sum(r["copied"] for r in CLICKS)
    side = read_provenance("data/prepared/mine/feedback.parquet")
    assert side.feedback_kind == "implicit" and side.feedback["kind"] == "implicit"
    assert side.feedback["realised"]["acted"] == 14 and side.simulation is None
    assert "implicit feedback: acted on 0.3500 of rows (from the logs)" in result.stdout


IMPLICIT_BAD = [
    ("feedback of 2", [dict(r, copied=2 if i == 3 else r["copied"]) for i, r in enumerate(CLICKS)],
     r"clicks\.jsonl: row 3, column feedback: feedback outside \{0, 1\}"),
    ("a null", [dict(r, copied=None if i == 5 else r["copied"]) for i, r in enumerate(CLICKS)],
     r"clicks\.jsonl: row 5, column feedback: missing value \(implicit mode: 1 where the user acted"),
    ("all zero", [dict(r, copied=0) for r in CLICKS],
     r"clicks\.jsonl: column feedback: no row has feedback 1 \(nothing was acted on\)"),
    ("text clicks", [dict(r, copied="clicked") for r in CLICKS],
     r"clicks\.jsonl: row 0, column copied \(mapped to feedback\): 'clicked' is not 0 or 1"),
]


@pytest.mark.parametrize("records,message", [c[1:] for c in IMPLICIT_BAD], ids=[c[0] for c in IMPLICIT_BAD])
def test_bad_clicks_are_refused_by_name_and_nothing_is_written(cli, records, message):
    write("clicks.jsonl", records)
    result = cli("prepare", "--source", "file:clicks.jsonl", "--column", "feedback=copied", "--feedback", "implicit")
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and re.search(message, lines[0]), result.stderr
    assert not Path("data").exists() or not any(p.is_file() for p in Path("data").rglob("*"))


def test_an_unknown_feedback_kind_is_refused(cli):
    Path("params.yaml").write_text("prepare:\n  feedback: clicks\n")
    result = cli("prepare", "--params", "params.yaml")
    assert result.exit_code == 2
    assert "prepare.feedback must be one of explicit, implicit, got 'clicks'" in result.stderr


def test_an_explicit_file_with_no_zero_gets_a_one_line_hint(cli):
    write("ups.csv", [{"prompt": f"p{i}", "response": f"r{i}", "observed": True, "feedback": 1} for i in range(6)])
    result = cli("prepare", "--source", "file:ups.csv", "--dataset", "ups")
    assert result.exit_code == 0, result.output
    hints = [line for line in result.stderr.splitlines() if line.startswith("rmpipe: hint:")]
    assert len(hints) == 1 and "every observed feedback is 1" in hints[0] and "prepare.feedback: implicit" in hints[0]
    write("clicks.csv", CLICKS)  # a click column without observed, in explicit mode: refused, with the hint
    bad = cli("prepare", "--source", "file:clicks.csv", "--column", "feedback=copied")
    assert bad.exit_code == 2 and "set prepare.feedback: implicit" in bad.stderr


def test_builtin_simulation_in_implicit_mode_reports_realised_rates(cli):
    result = cli("prepare", "--feedback", "implicit", "--rows", "3000", "--dataset", "imp")
    assert result.exit_code == 0, result.output
    df = pl.read_parquet("data/prepared/imp/feedback.parquet")
    fit = df.filter(pl.col("split") != "test")
    a, y = fit["feedback"].to_numpy(), fit["label"].to_numpy()
    assert (a <= y).all()  # no mis-clicks by default: only good responses are acted on
    side = read_provenance("data/prepared/imp/feedback.parquet").simulation
    z = side["realised"]
    assert z["prior"] == pytest.approx(y.mean()) and z["positives_acted_on"] == pytest.approx(a[y == 1].mean())
    assert z["misclick_rate"] == 0 and z["scar_holds"] is False  # a graded rating: e varies among positives
    test = df.filter(pl.col("split") == "test")
    assert (test["feedback"] == test["label"]).all()


def test_simulated_actions_follow_the_labelling_propensity_and_the_mis_click_rate():
    rating = np.tile(np.arange(5.0), 40000)
    sim = Simulator(SimulateParams(alpha=0.5, target_rate=0.2, rho_pos=0.1, rho_neg=0.2, seed=3))
    d = sim.simulate_implicit(ImplicitSimParams(rho_neg=0.07), rating)
    assert d.propensity.mean() == pytest.approx(0.2)
    for level in (3.0, 4.0):
        m = rating == level
        assert d.acted[m].mean() == pytest.approx(d.propensity[m][0], abs=0.01)
    assert d.acted[d.label == 0].mean() == pytest.approx(0.07, abs=0.005)
    binary = sim.simulate_implicit(ImplicitSimParams(), np.tile([0.0, 1.0], 5000)).realised()
    assert binary["scar_holds"] is True and binary["misclick_rate"] == 0
