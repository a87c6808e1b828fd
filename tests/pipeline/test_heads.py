"""The head folder (pipeline/heads.py) and score's early refusals, on a toy project on disk: a
fitted head's card and weights round-trip, a flipped byte or a truncated file is refused by the
CLI with exit 2, old and unknown card keys are handled by name, and score never overwrites its
input, cuts an output name at the first dot, or makes a store before refusing."""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path

import polars as pl
import pytest
import torch
import yaml
from typer.testing import CliRunner

from pipeline.config import BackboneSpec
from pipeline.errors import RmpipeError
from pipeline.heads import CARD, NUISANCE, WEIGHTS, HeadCard, load_head, load_nuisance, read_card, save_head
from pipeline.synthetic import make_world, write_project
from rmpipe.cli import app
from rmpipe.score import default_out
from stages.fit.run import fit
from tests.stages.fit.conftest import fast_fit


@pytest.fixture(scope="module")
def fitted(tmp_path_factory):
    """A toy project with a fitted ips head (it has a propensity model), built once."""
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("toy")
    params = write_project(root, make_world(n=300, dim=8, seed=0), fit=fast_fit(max_epochs=2))
    model = root / "model"  # a local folder: its key is computed from files, nothing is loaded
    model.mkdir()
    (model / "config.json").write_text("{}")
    params = dataclasses.replace(params, backbones={"toy": BackboneSpec(model=str(model))})
    fit(params, "toy", ["ips"], progress=False, log=lambda _: None)
    return root, params


@pytest.fixture
def toy(fitted, tmp_path):
    """A private copy of the fitted project: (params, head folder, params file)."""
    base, params = fitted
    root = tmp_path / "proj"
    shutil.copytree(base, root)
    params = dataclasses.replace(
        params, data_dir=str(root / "data"),
        embed=dataclasses.replace(params.embed, store_dir=str(root / "emb")),
        fit=dataclasses.replace(params.fit, heads_dir=str(root / "heads")),
        evaluate=dataclasses.replace(params.evaluate, reports_dir=str(root / "reports")))
    params_file = tmp_path / "params.yaml"
    params_file.write_text(yaml.safe_dump(json.loads(json.dumps(dataclasses.asdict(params)))))
    return params, root / "heads/toy/toy/ips", params_file


def pairs_file(params, path: Path, rows: int = 5) -> Path:
    """Pairs the toy store already holds (scoring them needs no model)."""
    pl.read_parquet(params.table_path).select("prompt", "response").head(rows).write_ndjson(path)
    return path


def score_cli(params_file: Path, head: Path, data: Path, *extra: str):
    return CliRunner().invoke(app, ["score", "--head", str(head), "--data", str(data), "--params",
                                    str(params_file), "--no-progress", *extra])


def one_line_error(result, *needles: str) -> None:
    assert result.exit_code == 2, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.output, result.output
    for needle in needles:
        assert needle in lines[0], lines[0]


# --- the folder format ----------------------------------------------------------------------
def test_card_and_weights_round_trip_through_save_and_load(toy, tmp_path):
    params, folder, _ = toy
    head = load_head(folder)
    raw = json.loads((folder / CARD).read_text())
    assert HeadCard.from_dict(raw).to_dict() == raw  # the typed card loses and adds nothing
    assert head.card.backbone == "toy" and head.card.method == "ips" and head.card.uses.propensity
    assert head.card.embedding.dim == 8 and head.card.feedback == "explicit"
    assert {WEIGHTS, f"{NUISANCE}/propensity.safetensors"} <= set(head.card.files)
    assert all(len(v["sha256"]) == 64 and v["bytes"] > 0 for v in head.card.files.values())

    copy = save_head(tmp_path / "copy", head.model, head.card, None)
    again = load_head(copy)
    assert again.card.metrics == head.card.metrics and again.card.embedding == head.card.embedding
    w1, w2 = head.model.state_dict(), again.model.state_dict()
    assert w1.keys() == w2.keys() and all(torch.equal(w1[k], w2[k]) for k in w1)


@pytest.mark.parametrize("damage", ["flip", "truncate"])
def test_a_damaged_weights_file_is_refused_by_score_with_exit_2(toy, tmp_path, damage):
    params, folder, params_file = toy
    path = folder / WEIGHTS
    blob = bytearray(path.read_bytes())
    if damage == "flip":
        blob[len(blob) // 2] ^= 0x01  # one bit in the tensor data: still parses, wrong rewards
    else:
        blob = blob[: len(blob) // 2]
    path.write_bytes(bytes(blob))
    out = tmp_path / "r.parquet"
    result = score_cli(params_file, folder, pairs_file(params, tmp_path / "p.jsonl"), "--out", str(out))
    one_line_error(result, str(path), "truncated or corrupted", "rmpipe fit")
    assert not out.exists()


def test_a_damaged_nuisance_file_is_refused_when_loaded(toy):
    _, folder, _ = toy
    path = folder / NUISANCE / "propensity.safetensors"
    blob = bytearray(path.read_bytes())
    blob[-1] ^= 0xFF
    path.write_bytes(bytes(blob))
    with pytest.raises(RmpipeError, match=r"propensity.safetensors: head file is truncated or corrupted"):
        load_nuisance(folder, read_card(folder))


def test_an_old_card_loads_with_its_old_meaning_and_unknown_keys_are_kept(toy):
    _, folder, _ = toy
    card = json.loads((folder / CARD).read_text())
    for key in ("files", "feedback", "licence", "method_doc"):  # keys later versions added
        del card[key]
    card["from_the_future"] = {"x": 1}
    card["embedding"]["note"] = "ignored"
    (folder / CARD).write_text(json.dumps(card))
    head = load_head(folder)  # unchecked: written before checksums
    assert head.card.feedback == "explicit" and head.card.licence is None and head.card.files == {}
    assert head.card.extra == {"from_the_future": {"x": 1}}
    assert head.card.to_dict()["from_the_future"] == {"x": 1}


@pytest.mark.parametrize("edit, message", [
    (lambda c: c.pop("embedding"), r"card.json: head card lacks embedding .*refit"),
    (lambda c: c["embedding"].pop("dim"), r"card.json: embedding: lacks dim; refit"),
    (lambda c: c.update(format_version=99), r"card.json: head format 99 was written by a newer rmpipe \(this "
                                             r"one reads format 1\); upgrade rmpipe to load it$"),
    (lambda c: c.update(format_version=0), r"card.json: head format 0, expected 1; refit"),
    (lambda c: c.update(format_version="2"), r"card.json: head format 2, expected 1; refit"),
])
def test_a_card_missing_what_every_head_has_is_refused_by_name(toy, edit, message):
    _, folder, _ = toy
    card = json.loads((folder / CARD).read_text())
    edit(card)
    (folder / CARD).write_text(json.dumps(card))
    with pytest.raises(RmpipeError, match=message):
        load_head(folder)


def test_an_unparsable_unchecked_weights_file_is_one_line_not_a_traceback(toy, tmp_path):
    params, folder, params_file = toy
    card = json.loads((folder / CARD).read_text())
    del card["files"]  # an old head: nothing to check against
    (folder / CARD).write_text(json.dumps(card))
    (folder / WEIGHTS).write_bytes((folder / WEIGHTS).read_bytes()[:40])
    result = score_cli(params_file, folder, pairs_file(params, tmp_path / "p.jsonl"))
    one_line_error(result, str(folder / WEIGHTS), "unreadable head weights")


# --- score's output path and store checks ---------------------------------------------------
def test_default_output_names_cut_only_a_known_data_suffix():
    assert default_out(Path("d/day.1.jsonl"), "rewards") == Path("d/day.1.rewards.parquet")
    assert default_out(Path("x.jsonl.gz"), "rewards") == Path("x.rewards.parquet")
    assert default_out(Path("v1.2.data.CSV"), "reranked") == Path("v1.2.data.reranked.parquet")


def test_two_dotted_inputs_write_two_outputs(toy, tmp_path):
    params, folder, params_file = toy
    for name, rows in (("day.1.jsonl", 3), ("day.2.jsonl", 4)):
        result = score_cli(params_file, folder, pairs_file(params, tmp_path / name, rows))
        assert result.exit_code == 0, result.output
    assert pl.read_parquet(tmp_path / "day.1.rewards.parquet").height == 3
    assert pl.read_parquet(tmp_path / "day.2.rewards.parquet").height == 4


def test_out_equal_to_data_is_refused_and_the_input_untouched(toy, tmp_path):
    params, folder, params_file = toy
    data = pairs_file(params, tmp_path / "pairs.jsonl")
    before = data.read_bytes()
    one_line_error(score_cli(params_file, folder, data, "--out", str(data)), "overwrite the input")
    dotted = tmp_path / "sub" / ".." / "pairs.jsonl"  # the same file by another spelling
    (tmp_path / "sub").mkdir()
    one_line_error(score_cli(params_file, folder, data, "--out", str(dotted)), "overwrite the input")
    assert data.read_bytes() == before


def test_a_bad_out_suffix_is_refused_before_any_store_is_made(toy, tmp_path):
    params, folder, params_file = toy
    store = params.store_path("toy")
    shutil.rmtree(store)
    data = pairs_file(params, tmp_path / "pairs.jsonl")
    one_line_error(score_cli(params_file, folder, data, "--out", str(tmp_path / "r.xlsx")),
                   "r.xlsx", "unknown output type")
    assert not store.exists()


def test_a_missing_store_with_other_backbone_settings_is_refused_before_embedding(toy, tmp_path):
    params, folder, params_file = toy
    store = params.store_path("toy")
    shutil.rmtree(store)
    out = tmp_path / "r.parquet"
    result = score_cli(params_file, folder, pairs_file(params, tmp_path / "pairs.jsonl"), "--out", str(out))
    one_line_error(result, str(folder), "params (backbones.toy) gives spec")
    assert not store.exists() and not out.exists()


def test_a_store_of_another_key_is_refused_before_embedding(toy, tmp_path):
    from pipeline.store import EmbeddingStore

    params, folder, params_file = toy
    other = EmbeddingStore.create(params.store_path("toy"), backbone="toy", spec={"model": "other"},
                                  dim=8, rebuild=True)
    result = score_cli(params_file, folder, pairs_file(params, tmp_path / "pairs.jsonl"))
    one_line_error(result, f"holds backbone 'toy' (spec {other.spec_hash})")
    assert other.rows == 0
