"""`rmpipe export`: the exported folder, loaded by transformers alone, gives `rmpipe score`'s
logits on the same pairs (max |diff| <= 1e-4, float32) with left and right padding, the
conversation rendered by the folder's own chat template (which stops at the end-of-turn token)
and read by the stock class at the last token that is not its pad token."""

from __future__ import annotations

import json
import os
import shutil
import stat
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from rmpipe.cli import app
from pipeline.config import BackboneSpec
from pipeline.errors import RmpipeError
from rmpipe.export import REMOTE_FILE, export
from tests.rmpipe.export_helpers import PAIRS, chat_batch, last_real, make_project, pair_batch, rmpipe_logits

pytestmark = pytest.mark.slow  # a tiny Llama head fitted and exported per module, transformers reloads

TOL = 1e-4


def tiny_spec(path: Path) -> BackboneSpec:
    return BackboneSpec(model=str(path), pooling="last", max_tokens=256, chat_template=True,
                        dtype="float32", backend="hf")


@pytest.fixture(scope="module")
def tiny_linear(tmp_path_factory, tiny_chatml_dir):
    """A linear head on a copy of the tiny ChatML Llama (a copy: one test takes the model away)."""
    tmp = tmp_path_factory.mktemp("tiny-linear")
    model = shutil.copytree(tiny_chatml_dir, tmp / "model")
    params, head = make_project(tmp, "tiny", tiny_spec(model), hidden=())
    return params, head, tmp


def exported_logits(model, batch) -> np.ndarray:
    with torch.no_grad():
        out = model(**batch).logits
    assert out.shape == (batch["input_ids"].shape[0], 1)
    return out[:, 0].numpy()


def test_linear_head_on_a_decoder_exports_as_the_stock_class(tiny_linear, tmp_path, capsys):
    from transformers import AutoModelForSequenceClassification, AutoModelForTokenClassification, AutoTokenizer

    params, head, _ = tiny_linear
    done = export(params, head, tmp_path / "rm")
    assert (done.kind, done.architecture) == ("native", "LlamaForSequenceClassification")
    folder = tmp_path / "rm"
    config = json.loads((folder / "config.json").read_text())
    assert "auto_map" not in config and not (folder / REMOTE_FILE).exists()
    assert config["id2label"] == {"0": "reward"} and config["token_classification_bias"] is False
    assert config["rmpipe"]["backbone"] == "tiny" and config["rmpipe"]["method"] == "naive"
    assert config["pad_token_id"] is not None and "diagnostics" in config["rmpipe"]
    assert "trust_remote_code" not in (folder / "README.md").read_text()
    assert config["rmpipe"]["export"]["end_of_turn"] == "<|im_end|>"
    assert config["rmpipe"]["export"]["template_ends_at_end_of_turn"] is True

    expected = rmpipe_logits(params, head, PAIRS, tmp_path)
    tok = AutoTokenizer.from_pretrained(folder)
    seq = AutoModelForSequenceClassification.from_pretrained(folder).eval()
    assert type(seq).__name__ == "LlamaForSequenceClassification" and seq.score.bias is None
    token = AutoModelForTokenClassification.from_pretrained(folder).eval()
    assert type(token).__name__ == "LlamaForTokenClassification" and token.score.bias is None
    assert torch.equal(token.score.weight, seq.score.weight)
    diffs = {}
    for side in ("right", "left"):
        batch = chat_batch(tok, PAIRS, side)
        assert (batch["attention_mask"] == 0).any()  # padding really happens
        got = exported_logits(seq, batch)
        with torch.no_grad():
            per_token = last_real(token(**batch).logits, batch["attention_mask"])
        diffs[side] = (float(np.abs(got - expected).max()), float(np.abs(per_token - expected).max()))
    print(f"\ntiny llama native export vs rmpipe score, max |diff| (seq, token): {diffs}")
    assert max(max(d) for d in diffs.values()) <= TOL, diffs
    assert np.std(expected) > 1e-3  # the pairs get different rewards: the check can fail


def test_the_pad_is_not_the_end_of_turn_token_and_every_file_is_readable_by_all(tiny_linear, tmp_path):
    """The backbone pads with <|im_end|> (as SmolLM2 does); the stock class would then take the
    end-of-turn token for padding and read the token before it."""
    from transformers import AutoTokenizer

    params, head, _ = tiny_linear
    old = os.umask(0o022)
    try:
        export(params, head, tmp_path / "rm")
    finally:
        os.umask(old)
    folder = tmp_path / "rm"
    config = json.loads((folder / "config.json").read_text())
    tok = AutoTokenizer.from_pretrained(folder)
    eot = tok.convert_tokens_to_ids("<|im_end|>")
    assert tok.pad_token_id == config["pad_token_id"] != eot
    assert AutoTokenizer.from_pretrained(params.backbones["tiny"].model).pad_token_id == eot
    modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in [folder, *folder.iterdir()]}
    assert modes["model.safetensors"] == 0o644 and modes["rm"] == 0o755, modes
    assert set(modes.values()) <= {0o644, 0o755}, modes


def test_the_config_records_the_validation_logits_mean_and_std(tiny_linear, tmp_path):
    """Computed here from the exported model on the val split's texts, not from the store."""
    import polars as pl
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from pipeline.table import prompt_turns

    params, head, _ = tiny_linear
    export(params, head, tmp_path / "rm")
    config = json.loads((tmp_path / "rm" / "config.json").read_text())
    val = pl.read_parquet(params.table_path).filter(pl.col("split") == "val")
    pairs = [(prompt_turns(p), r) for p, r in zip(val["prompt"], val["response"])]
    tok = AutoTokenizer.from_pretrained(tmp_path / "rm")
    model = AutoModelForSequenceClassification.from_pretrained(tmp_path / "rm").eval()
    logits = exported_logits(model, chat_batch(tok, pairs, "right"))
    assert config["rmpipe"]["export"]["reward_stats"]["rows"] == len(pairs) > 10
    assert abs(config["mean"] - logits.mean()) <= TOL and abs(config["std"] - logits.std()) <= TOL
    assert config["std"] > 0


def test_mlp_head_on_a_decoder_exports_with_remote_code(tmp_path, tiny_chatml_dir):
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    params, head = make_project(tmp_path, "tiny", tiny_spec(tiny_chatml_dir), hidden=(16,))
    done = export(params, head, tmp_path / "rm")
    assert done.kind == "remote" and "MLP head" in done.why_remote
    assert "contains code" in (tmp_path / "rm" / "README.md").read_text()
    expected = rmpipe_logits(params, head, PAIRS, tmp_path)
    tok = AutoTokenizer.from_pretrained(tmp_path / "rm", trust_remote_code=True)
    model = AutoModelForSequenceClassification.from_pretrained(tmp_path / "rm", trust_remote_code=True).eval()
    diffs = {side: float(np.abs(exported_logits(model, chat_batch(tok, PAIRS, side)) - expected).max())
             for side in ("right", "left")}
    print(f"\ntiny llama MLP remote export vs rmpipe score: max |diff| {diffs}")
    assert max(diffs.values()) <= TOL, diffs


@pytest.mark.slow
def test_minilm_mean_pooling_exports_with_remote_code(tmp_path):
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    params, head = make_project(tmp_path, "minilm", None, hidden=(32, 16))
    done = export(params, head, tmp_path / "rm")
    assert done.kind == "remote" and "pooling mean" in done.why_remote
    expected = rmpipe_logits(params, head, PAIRS, tmp_path)
    tok = AutoTokenizer.from_pretrained(tmp_path / "rm", trust_remote_code=True)
    model = AutoModelForSequenceClassification.from_pretrained(tmp_path / "rm", trust_remote_code=True).eval()
    diffs = {}
    for side in ("right", "left"):
        got = exported_logits(model, pair_batch(tok, PAIRS, side))
        diffs[side] = float(np.abs(got - expected).max())
    print(f"\nminilm/mean remote export vs rmpipe score: max |diff| {diffs}")
    assert max(diffs.values()) <= TOL, diffs


# --- refusals: one line, exit 2, nothing written ----------------------------------------------
def test_a_non_empty_out_is_refused_before_any_work(tmp_path):
    out = tmp_path / "rm"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    result = CliRunner().invoke(app, ["export", "--head", str(tmp_path / "nohead"), "--out", str(out)])
    assert result.exit_code == 2
    assert "already exists and is not an empty folder" in result.output
    assert [p.name for p in out.iterdir()] == ["keep.txt"]


def test_a_missing_head_is_one_line_exit_2(tmp_path):
    result = CliRunner().invoke(app, ["export", "--head", str(tmp_path / "nohead"), "--out", str(tmp_path / "rm")])
    assert result.exit_code == 2 and "not a head folder" in result.output
    assert len(result.output.strip().splitlines()) == 1 and not (tmp_path / "rm").exists()


def test_a_changed_backbone_spec_and_a_missing_model_are_refused(tiny_linear, tmp_path):
    import dataclasses

    params, head, tmp = tiny_linear
    spec = params.backbones["tiny"]
    changed = dataclasses.replace(params, backbones={"tiny": dataclasses.replace(spec, max_tokens=128)})
    with pytest.raises(RmpipeError, match=r"trained on backbone 'tiny' .*but params \(backbones\.tiny\) gives spec"):
        export(changed, head, tmp_path / "rm")
    moved = Path(spec.model).with_name("gone")
    Path(spec.model).rename(moved)
    try:
        with pytest.raises(RmpipeError, match=r"backbones\.tiny\.model: '.*': no such file or folder"):
            export(params, head, tmp_path / "rm")
    finally:
        moved.rename(spec.model)
    assert not (tmp_path / "rm").exists() and list(tmp_path.iterdir()) == []


@pytest.mark.slow
def test_smollm2_linear_head_exports_as_llama_and_matches_score(tmp_path):
    from transformers import AutoModelForSequenceClassification, AutoModelForTokenClassification, AutoTokenizer

    params, head = make_project(tmp_path, "smollm2-135m", None, hidden=(), rows=120)
    done = export(params, head, tmp_path / "rm")
    assert (done.kind, done.architecture) == ("native", "LlamaForSequenceClassification")
    expected = rmpipe_logits(params, head, PAIRS, tmp_path)
    tok = AutoTokenizer.from_pretrained(tmp_path / "rm")
    seq = AutoModelForSequenceClassification.from_pretrained(tmp_path / "rm").eval()
    token = AutoModelForTokenClassification.from_pretrained(tmp_path / "rm").eval()
    diffs = {}
    for side in ("right", "left"):
        batch = chat_batch(tok, PAIRS, side)
        with torch.no_grad():
            per_token = last_real(token(**batch).logits, batch["attention_mask"])
        diffs[side] = (float(np.abs(exported_logits(seq, batch) - expected).max()),
                       float(np.abs(per_token - expected).max()))
    print(f"\nsmollm2-135m native export vs rmpipe score, max |diff| (seq, token): {diffs}")
    assert max(max(d) for d in diffs.values()) <= TOL, diffs


def test_the_template_is_wrapped_only_where_it_then_renders_rmpipes_text(tiny_llama_dir, tiny_chatml_dir):
    """The toy template writes a space before its end-of-turn [SEP] that rmpipe's text lacks:
    wrapping could not make it render rmpipe's text, so it is kept as it is."""
    from transformers import AutoTokenizer

    from rmpipe.export import wrap_template

    toy = AutoTokenizer.from_pretrained(tiny_llama_dir)
    original = toy.chat_template
    assert wrap_template(toy) is False and toy.chat_template == original
    chatml = AutoTokenizer.from_pretrained(tiny_chatml_dir)
    assert wrap_template(chatml) is True and chatml.chat_template != original
    turns = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Yo"}]
    assert chatml.apply_chat_template(turns, tokenize=False).endswith("assistant\nYo<|im_end|>")
    assert chatml.apply_chat_template(turns[:1], tokenize=False, add_generation_prompt=True).endswith(
        "<|im_start|>assistant\n")
