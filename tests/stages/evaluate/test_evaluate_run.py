"""The evaluate entry point and CLI on a toy project with fitted heads."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from rmpipe.cli import app
from pipeline.errors import RmpipeError
from stages.evaluate.run import evaluate
from stages.fit.run import fit


@pytest.mark.slow
def test_evaluate_writes_reports_and_plots(project):
    fit(project, "toy", ["naive", "causalrm"], progress=False, log=lambda _: None)
    reports = evaluate(project, "toy", log=lambda _: None)
    assert set(reports) == {"naive", "causalrm"}
    out = f"{project.evaluate.reports_dir}/toy/toy"
    saved = json.loads(open(f"{out}/causalrm.json").read())
    m = saved["metrics"]
    assert {"r2", "mae", "rmse", "mse", "auroc", "pearson", "spearman", "pairwise_accuracy"} <= m.keys()
    assert m["pairs"] > 0 and 0 <= m["auroc"] <= 1
    est, real = saved["noise_rates"]["estimated"], saved["noise_rates"]["realised"]
    assert est["source"] == "anchors" and real["rho_neg"] == pytest.approx(0.2, abs=0.08)
    assert saved["propensity_vs_true"]["pearson_vs_true"] > 0.3
    assert "noise_rates" not in reports["naive"]
    # the toy world's prompts hold two rated responses each: best-of-2 over the test prompts
    assert m["bon_groups"] > 0 and m["bon_random"] <= m["bon_pick"] <= m["bon_best"]
    assert 0 < m["ndcg"] <= 1 and m["bon_gap_closed"] > 0
    trust = saved["propensity_trust"]  # the fit's flag, for the head that weights by the propensity
    assert trust["flag"] is False and trust["auc"] > 0.6 and "propensity_trust" not in reports["naive"]
    for name in ("methods", "propensity_calibration", "reward_distributions", "best_of_n"):
        assert open(f"{project.evaluate.reports_dir}/toy/plots/toy/{name}.png", "rb").read(4) == b"\x89PNG"
    assert sorted(p.name for p in Path(out).iterdir()) == ["causalrm.json", "naive.json"]  # JSON only: DVC metrics


def test_evaluate_needs_fitted_heads(project):
    with pytest.raises(RmpipeError, match="no fitted heads"):
        evaluate(project, "toy", log=lambda _: None)
    with pytest.raises(RmpipeError, match="no head for method ips"):
        evaluate(project, "toy", ["ips"], log=lambda _: None)


@pytest.mark.slow
def test_cli_evaluate_prints_the_table(project, tmp_path):
    fit(project, "toy", ["naive"], progress=False, log=lambda _: None)
    params_file = tmp_path / "params.yaml"
    params_file.write_text(yaml.safe_dump(json.loads(json.dumps(dataclasses.asdict(project)))))
    result = CliRunner().invoke(app, ["evaluate", "--backbone", "toy", "--params", str(params_file)])
    assert result.exit_code == 0, result.output
    assert "naive" in result.output and "r2" in result.output
