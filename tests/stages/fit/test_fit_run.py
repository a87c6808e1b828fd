"""The fit entry point, CLI and head folder on a toy project (table + store on disk)."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import polars as pl
import pytest
import torch
import yaml
from typer.testing import CliRunner

from rmpipe.cli import app
from pipeline.errors import RmpipeError
from pipeline.store import EmbeddingStore
from pipeline.table import read_table, write_table
from pipeline.heads import load_head, load_nuisance
from stages.fit.run import fit, load_inputs
from rmpipe.score import score


def write_params(params, path):
    path.write_text(yaml.safe_dump(json.loads(json.dumps(dataclasses.asdict(params)))))
    return path


def test_fit_writes_a_head_folder_with_a_complete_card(project):
    heads = fit(project, "toy", ["naive", "causalrm", "causalrm_dr"], progress=False, log=lambda _: None)
    assert set(heads) == {"naive", "causalrm", "causalrm_dr"}
    folder = heads["causalrm"]
    assert (folder / "weights.safetensors").exists() and (folder / "nuisance" / "propensity.safetensors").exists()
    card = json.loads((folder / "card.json").read_text())
    store = EmbeddingStore(f"{project.embed.store_dir}/toy")
    assert card["format_version"] == 1 and card["backbone"] == "toy" and card["method"] == "causalrm"
    assert card["embedding"]["spec_hash"] == store.spec_hash and card["embedding"]["dim"] == 8
    assert card["licence"] == "CC0-1.0 (synthetic)" and card["dataset"] == "toy"
    prop = card["diagnostics"]["propensity"]
    assert {"auc", "brier", "ece", "share_clipped", "ess", "calibration"} <= prop.keys()
    assert card["diagnostics"]["noise"]["source"] == "anchors"
    assert card["guard"]["mode"] == "nonnegative" and "detected" in card["runaway"]
    assert len(card["training"]["curve"]) == card["training"]["epochs_run"]
    assert card["metrics"]["val_guarded_risk"] >= 0
    assert card["package_versions"]["torch"] and card["params"]["fit"]["head"]["hidden"] == [32, 16]
    assert json.loads((heads["causalrm_dr"] / "card.json").read_text())["imputation_target"] == "clean"


def test_head_and_nuisance_reload_without_pickle(project):
    folder = fit(project, "toy", ["causalrm"], progress=False, log=lambda _: None)["causalrm"]
    assert not list(folder.rglob("*.pkl")) and not list(folder.rglob("*.pt"))
    head = load_head(folder)
    data, _ = load_inputs(project, "toy")
    r = head.rewards(data.X)
    assert r.shape == (len(data.X),) and ((r > 0) & (r < 1)).all()
    features, propensity, feedback = load_nuisance(folder, head.card)
    p = propensity.predict(features.transform(data.X, {}))
    calib = head.card.diagnostics["propensity"]["calibration"]
    assert abs(p[data.train].mean() - np.mean([b["p_mean"] for b in calib])) < 0.02
    assert feedback is not None and len(feedback.models_) == 3


def test_lightgbm_nuisance_round_trips_as_text(project):
    params = dataclasses.replace(project, fit=dataclasses.replace(
        project.fit, propensity=dataclasses.replace(project.fit.propensity, model="lightgbm")))
    folder = fit(params, "toy", ["ips"], progress=False, log=lambda _: None)["ips"]
    assert len(list((folder / "nuisance").glob("propensity.fold*.lgb.txt"))) == 3
    head = load_head(folder)
    _, propensity, _ = load_nuisance(folder, head.card)
    data, _ = load_inputs(params, "toy")
    assert propensity.predict(data.X).shape == (len(data.X),)


def test_fit_never_reads_the_clean_label(project, tmp_path):
    first = fit(project, "toy", ["causalrm"], progress=False, log=lambda _: None)["causalrm"]
    w1 = load_head(first).model.state_dict()
    table = read_table(project.table_path).drop("label", "propensity_true")
    write_table(table, project.table_path)
    assert read_table(project.table_path)["label"].null_count() == table.height
    second = fit(project, "toy", ["causalrm"], progress=False, log=lambda _: None)["causalrm"]
    w2 = load_head(second).model.state_dict()
    assert all(torch.equal(w1[k], w2[k]) for k in w1)


def test_cli_fit_and_one_line_errors(project, tmp_path):
    params_file = write_params(project, tmp_path / "params.yaml")
    runner = CliRunner()
    ok = runner.invoke(app, ["fit", "--backbone", "toy", "--method", "naive", "--params", str(params_file),
                             "--no-progress"])
    assert ok.exit_code == 0, ok.output
    assert "naive:" in ok.output
    bad = runner.invoke(app, ["fit", "--backbone", "missing", "--all", "--params", str(params_file)])
    assert bad.exit_code == 2 and "no embedding store here" in bad.output
    both = runner.invoke(app, ["fit", "--backbone", "toy", "--params", str(params_file)])
    assert both.exit_code == 2 and "give --method M" in both.output
    plain = runner.invoke(app, ["fit", "--backbone", "toy", "--method", "noise", "--plain", "--params",
                                str(params_file), "--no-progress"])
    assert plain.exit_code == 0, plain.output
    card = json.loads(open(f"{project.fit.heads_dir}/toy/toy/noise/card.json").read())
    assert card["guard"]["mode"] == "plain"


def test_score_refuses_a_store_of_another_embedding_function(project, tmp_path):
    folder = fit(project, "toy", ["naive"], progress=False, log=lambda _: None)["naive"]
    other = dataclasses.replace(project, embed=dataclasses.replace(project.embed, store_dir=str(tmp_path / "other")))
    EmbeddingStore.create(tmp_path / "other" / "toy", backbone="toy", spec={"model": "something else"}, dim=8)
    data = tmp_path / "pairs.csv"
    read_table(project.table_path).select("prompt", "response").head(3).write_csv(data)
    with pytest.raises(RmpipeError, match=r"trained on backbone 'toy' \(embedding spec [0-9a-f]{16}\), but the "
                                          r"store .* holds backbone 'toy' \(spec [0-9a-f]{16}\)"):
        score(other, folder, data, progress=False)
