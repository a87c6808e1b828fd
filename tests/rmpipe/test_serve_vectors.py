"""Bring your own embeddings end to end: vectors a team computed elsewhere, in a real Parquet file,
carry fit -> evaluate -> serve without stage one's model. The vectors here are MiniLM's (read
from the MiniLM store), so the head fitted on the file must be the MiniLM head, logit for logit;
the server scores the pairs the file holds and names the file for the rest."""

from __future__ import annotations

import dataclasses

import httpx
import numpy as np
import polars as pl
import pytest

from pipeline.config import BackboneSpec
from pipeline.errors import RmpipeError
from pipeline.heads import load_head
from pipeline.store import EmbeddingStore
from rmpipe.score import score
from rmpipe.serve import RewardModel, ServeSettings, ServerThread, build_app
from stages.embed.run import embed
from stages.evaluate.run import evaluate
from stages.fit.run import fit

pytestmark = pytest.mark.slow  # MiniLM's store and head (the module's shared project)

EXTRA = ("Capital of Peru?", "Lima.")  # in the file, not in the table: servable, never fitted on


def vectors_file(params, path):
    """The table's pairs keyed by prompt and response (the 'pair text' form), one extra pair, the
    vector column a list of float32: as a user would export them."""
    table = pl.read_parquet(params.table_path).unique("pair_id", maintain_order=True)
    X = EmbeddingStore(params.store_path("minilm")).read(table["pair_id"].to_list())
    pl.DataFrame({
        "prompt": [*table["prompt"].to_list(), EXTRA[0]],
        "response": [*table["response"].to_list(), EXTRA[1]],
        "vector": [*X.tolist(), X[0].tolist()],
    }, schema_overrides={"vector": pl.List(pl.Float32)}).write_parquet(path)
    return path, X[0]


def test_fit_evaluate_and_serve_on_a_vectors_file(served, tmp_path):
    params, minilm_head = served
    path, extra_vector = vectors_file(params, tmp_path / "my_vectors.parquet")
    byo = dataclasses.replace(
        params, backbones={**params.backbones, "byo": BackboneSpec(model=f"vectors:{path}")},
        fit=dataclasses.replace(params.fit, heads_dir=str(tmp_path / "heads")),
        evaluate=dataclasses.replace(params.evaluate, reports_dir=str(tmp_path / "reports")))

    summary = embed(byo, "byo", progress=False)
    table = pl.read_parquet(params.table_path)
    assert summary.computed == table["pair_id"].n_unique() and summary.dim == 384
    assert embed(byo, "byo", progress=False).computed == 0  # a second run copies nothing
    head = fit(byo, "byo", ["naive"], progress=False, log=lambda _: None)["naive"]
    reports = evaluate(byo, "byo", ["naive"], log=lambda _: None)["naive"]["metrics"]
    baseline = evaluate(params, "minilm", ["naive"], log=lambda _: None)["naive"]["metrics"]
    assert reports.keys() == baseline.keys() and len(reports) > 2
    assert all(reports[k] == pytest.approx(baseline[k], abs=1e-6) for k in reports)

    X = EmbeddingStore(byo.store_path("byo")).read(table["pair_id"].to_list())
    mine, theirs = load_head(head), load_head(minilm_head)
    assert np.abs(mine.logits(X) - theirs.logits(X)).max() < 1e-5  # the same vectors, the same head

    model = RewardModel(byo, head)
    stored = (table["prompt"][0], table["response"][0])
    unknown = ("Capital of Chile?", "Santiago.")
    with ServerThread(build_app(model, ServeSettings())) as url, httpx.Client(base_url=url, timeout=60) as client:
        reply = client.post("/rewards", json=[{"prompt": p, "response": r} for p, r in (stored, EXTRA, unknown)])
        refused = client.post("/get_reward", json={"query": ["".join(unknown)], "prompts": [unknown[0]]})
        info = client.get("/info").json()
    assert reply.status_code == 200, reply.text
    body = reply.json()
    assert body["rewards"][2] is None and body["missing"] == [2] and str(path) in body["note"]
    assert body["logits"][0] == pytest.approx(float(theirs.logits(X[:1])[0]), abs=1e-5)
    assert body["logits"][1] == pytest.approx(float(mine.logits(extra_vector[None])[0]), abs=1e-5)
    assert refused.status_code == 422 and "no vector in" in refused.json()["error"]
    assert info["vectors_file"] == str(path) and info["stats"]["missing"] == 2

    data = tmp_path / "new.jsonl"
    pl.DataFrame({"prompt": [unknown[0]], "response": [unknown[1]]}).write_ndjson(data)
    with pytest.raises(RmpipeError, match=r"my_vectors\.parquet has no vector for 1 of the 1 pairs"):
        score(byo, head, data, progress=False)
    # the file is the function: another file (one more row) is another key, and the head is refused
    pl.concat([pl.read_parquet(path), pl.read_parquet(path).tail(1).with_columns(pl.lit("again").alias("response"))]
              ).write_parquet(path)
    with pytest.raises(RmpipeError, match=r"trained on backbone 'byo' .*but params \(backbones\.byo\) gives spec"):
        RewardModel(byo, head)


def test_the_commands_of_docs_serving_run_on_a_vectors_backbone(served, tmp_path):
    """`rmpipe embed / fit / evaluate --backbone prod` with `model: vectors:<file>`, as documented."""
    import json

    import yaml
    from typer.testing import CliRunner

    from rmpipe.cli import app

    params, _ = served
    path, _ = vectors_file(params, tmp_path / "prod_vectors.parquet")
    settings = json.loads(json.dumps(dataclasses.asdict(params)))
    settings["backbones"]["prod"] = {"model": f"vectors:{path}"}
    settings["embed"].update(backbones=["prod"], store_dir=str(tmp_path / "emb"))
    settings["fit"]["heads_dir"] = str(tmp_path / "heads")
    settings["evaluate"]["reports_dir"] = str(tmp_path / "reports")
    params_file = tmp_path / "params.yaml"
    params_file.write_text(yaml.safe_dump(settings))
    runner = CliRunner()
    for args in (["embed", "--backbone", "prod"], ["fit", "--backbone", "prod", "--method", "naive"],
                 ["evaluate", "--backbone", "prod"]):
        result = runner.invoke(app, [*args, "--params", str(params_file)])
        assert result.exit_code == 0, (args, result.output)
    assert (tmp_path / "heads" / "prod" / params.dataset / "naive").is_dir()
    assert "naive" in result.output  # evaluate's table
