"""`rmpipe prepare` end to end: the table, provenance.json beside it, the summary, determinism."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import polars as pl
import pytest

from pipeline.table import read_provenance, read_table

RMPIPE = Path(sys.executable).with_name("rmpipe")


def test_builtin_default_writes_table_and_report(cli):
    Path("data/prepared/default").mkdir(parents=True)
    Path("data/prepared/default/simulation.json").write_text("{}")  # an earlier prepare's sidecar
    result = cli("prepare", "--rows", "3000")
    assert result.exit_code == 0, result.output
    assert "observation rate" in result.stdout and "rho_pos" in result.stdout
    df = read_table("data/prepared/default/feedback.parquet")
    prov = read_provenance("data/prepared/default/feedback.parquet")
    report, fb = json.loads(Path("data/prepared/default/provenance.json").read_text()), prov.simulation
    assert fb["requested"] == {"alpha": 0.5, "target_rate": 0.2, "rho_pos": 0.1, "rho_neg": 0.2,
                               "shape": "monotone", "seed": 0, "audit_share": 0.0, "audit_labels": "noisy"}
    assert "audit" not in fb and not df["audit"].any()  # no audit unless asked for
    simulated = df.filter(pl.col("split") != "test")
    assert fb["realised"]["observed"] == simulated["observed"].sum()
    assert abs(fb["realised"]["mean_propensity"] - 0.2) < 1e-9
    assert report["rows"]["total"] == 3000 == sum(report["rows"][s]["rows"] for s in ("train", "val", "test"))
    assert report == prov.to_dict()  # the file is the provenance, nothing else
    assert not Path("data/prepared/default/simulation.json").exists()
    assert prov.licence and prov.details["dropped"] == {} and prov.details["straddling_groups"] == 0
    assert simulated.filter(~pl.col("observed"))["feedback"].null_count() == (~simulated["observed"]).sum()
    assert df.filter(pl.col("split") == "test")["observed"].all()
    first = Path("data/prepared/default/feedback.parquet").read_bytes()
    assert cli("prepare", "--rows", "3000").exit_code == 0
    assert pl.read_parquet("data/prepared/default/feedback.parquet").equals(pl.read_parquet(first))
    assert cli("prepare", "--rows", "3000", "--seed", "1").exit_code == 0
    assert not pl.read_parquet("data/prepared/default/feedback.parquet").equals(pl.read_parquet(first))


@pytest.mark.slow
def test_hub_source_through_the_installed_command_offline(hub_dirs, tmp_path):
    env = dict(os.environ, HF_DATASETS_OFFLINE="1", HF_HUB_OFFLINE="1", HF_HOME=str(tmp_path / "hf"))
    proc = subprocess.run(
        [str(RMPIPE), "prepare", "--source", "hub:Anthropic/hh-rlhf", "--config", "harmless-base",
         "--path", str(hub_dirs["Anthropic/hh-rlhf"]), "--dataset", "hh"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    df = read_table(tmp_path / "data/prepared/hh/feedback.parquet")
    report = read_provenance(tmp_path / "data/prepared/hh/feedback.parquet")
    assert report.licence == "MIT" and report.details["split"]["source_test_split"]
    assert df.filter(pl.col("split") == "test").height == 4
    assert report.details["dropped"] == {"chosen and rejected contexts differ": 1}
