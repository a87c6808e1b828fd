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


def test_the_same_text_in_nfc_and_nfd_is_one_pair_and_one_group(cli):
    """40 prompts, each logged twice in NFC and twice in NFD (é as one code point, or e and a
    combining accent): one group per prompt, so none straddles splits; the table holds NFC text,
    and the provenance says which form and how many cells changed."""
    import unicodedata

    rows = []
    for i in range(40):
        for j, form in enumerate(("NFC", "NFD", "NFC", "NFD")):
            rows.append({"prompt": unicodedata.normalize(form, f"café question {i}"),
                         "response": unicodedata.normalize(form, f"réponse {j % 2}"), "rating": float(j)})
    Path("logs.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    result = cli("prepare", "--source", "file:logs.jsonl", "--dataset", "accents")
    assert result.exit_code == 0, result.output
    assert "80 prompt(s) and 80 response(s) put in Unicode NFC" in result.stdout
    df = read_table("data/prepared/accents/feedback.parquet")
    assert df["group_id"].n_unique() == 40 and df["pair_id"].n_unique() == 80
    assert df.group_by("prompt").agg(pl.col("split").n_unique())["split"].max() == 1
    assert all(unicodedata.is_normalized("NFC", t) for t in df["prompt"].to_list() + df["response"].to_list())
    details = read_provenance("data/prepared/accents/feedback.parquet").details
    assert details["text"] == {"unicode_form": "NFC", "cells_normalised": {"prompt": 80, "response": 80}}
    assert details["straddling_groups"] == details["straddling_prompts"] == 0


def test_a_group_id_the_user_gave_is_kept_and_a_split_prompt_is_counted(cli):
    """Groups the user gave are theirs (only derived ids follow the normalised text), and a
    prompt their groups put in two splits is counted, not hidden behind straddling_groups = 0."""
    rows = [{"prompt": "same prompt", "response": f"r{i}", "rating": float(i % 3), "group_id": f"u{i}"}
            for i in range(60)]
    Path("logs.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert cli("prepare", "--source", "file:logs.jsonl", "--dataset", "given").exit_code == 0
    df = read_table("data/prepared/given/feedback.parquet")
    assert sorted(df["group_id"].unique()) == sorted(f"u{i}" for i in range(60))
    details = read_provenance("data/prepared/given/feedback.parquet").details
    assert details["straddling_groups"] == 0 and details["straddling_prompts"] == 1


@pytest.mark.parametrize("covariate", [False, True])
def test_a_policy_column_maps_like_a_contract_column(cli, covariate):
    """``--column policy=model`` (what bench/paper_protocol.py's --column passes on) keeps the
    user's column as ``policy``, as the shared sets' adapters write it; declared as a propensity
    covariate or not."""
    if covariate:
        Path("params.yaml").write_text("fit:\n  propensity:\n    covariates: [policy]\n")
    rows = [{"prompt": f"p{i}", "response": f"r{i}", "rating": float(i % 5), "model": f"m{i % 3}"} for i in range(60)]
    Path("logs.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    result = cli("prepare", "--source", "file:logs.jsonl", "--column", "policy=model", "--dataset", "pol")
    assert result.exit_code == 0, result.output
    df = read_table("data/prepared/pol/feedback.parquet")
    assert df["policy"].to_list() == [f"m{i % 3}" for i in range(60)] and "model" not in df.columns
    wrong = cli("prepare", "--source", "file:logs.jsonl", "--column", "policy=nope", "--dataset", "pol2")
    assert wrong.exit_code == 2 and "missing column 'nope' (mapped to policy)" in wrong.stderr
