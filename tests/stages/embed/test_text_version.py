"""A store embedded with the old chat rendering (text v1: the whole template, read at its trailing
newline after ``<|im_end|>``) is refused by ``rmpipe embed`` and ``rmpipe score`` with one line
saying to rebuild; ``--rebuild`` replaces it with vectors read at the end-of-turn token."""

from __future__ import annotations

import numpy as np
import pytest
from transformers import AutoTokenizer
from typer.testing import CliRunner

from pipeline.config import load_params
from pipeline.store import EmbeddingStore
from pipeline.table import prompt_turns, read_table
from rmpipe.cli import app
from stages.embed import backbones
from stages.embed.hf_backend import HFBackend
from tests.stages.embed.embed_helpers import make_pairs, write_feedback, write_params

pytestmark = pytest.mark.slow  # a real store written the old way with the tiny Llama


@pytest.fixture
def old_store(tmp_path, tiny_chatml_dir):
    """A project whose store was written by text v1: the full template's ids, last token '\\n'."""
    write_feedback(tmp_path / "data" / "t" / "feedback.parquet", make_pairs(12))
    params_path = write_params(tmp_path, tiny_chatml_dir, max_tokens=4096)
    params = load_params(params_path)
    spec = params.backbone("tiny")
    resolved = backbones.resolve(spec, params.embed.models_dir, "tiny")
    function = {**backbones.function_spec(spec, resolved.weights), "text": 1}
    df = read_table(params.table_path).unique(subset="pair_id", keep="first", maintain_order=True)
    tok = AutoTokenizer.from_pretrained(tiny_chatml_dir)
    ids = [tok(tok.apply_chat_template([*prompt_turns(p), {"role": "assistant", "content": r}],
                                       tokenize=False), add_special_tokens=False)["input_ids"]
           for p, r in zip(df["prompt"], df["response"])]
    assert all(tok.convert_ids_to_tokens(row[-1]) == "Ċ" for row in ids)  # v1 read the newline
    backend = HFBackend(str(tiny_chatml_dir), device="cpu")
    store = EmbeddingStore.create(params.store_path("tiny"), "tiny", function, backend.dim)
    store.append(df["pair_id"].to_list(), backend.encode(ids))
    return params_path, df


def test_an_old_rendering_store_is_refused_then_rebuilt(old_store, tmp_path):
    params_path, df = old_store
    root = load_params(params_path).store_path("tiny")
    before = (root / "manifest.json").read_text()
    run = CliRunner().invoke(app, ["embed", "--backbone", "tiny", "--params", str(params_path)])
    assert run.exit_code == 2, run.output
    line = run.output.strip()
    assert len(line.splitlines()) == 1
    assert "text rendering v1" in line and "v2" in line and "--rebuild" in line
    assert (root / "manifest.json").read_text() == before  # nothing touched

    old = EmbeddingStore(root).read(df["pair_id"].to_list())
    run = CliRunner().invoke(app, ["embed", "--backbone", "tiny", "--rebuild", "--params", str(params_path)])
    assert run.exit_code == 0, run.output
    store = EmbeddingStore(root)
    assert store.manifest["spec"]["text"] == backbones.TEXT_VERSION == 2
    new = store.read(df["pair_id"].to_list())
    assert np.abs(new - old).max() > 1e-2  # read at another token now


def test_the_check_every_reader_runs_names_the_versions(old_store):
    """``rmpipe score`` and ``export`` run this on the head's store before using it."""
    from pipeline.errors import RmpipeError

    root = load_params(old_store[0]).store_path("tiny")
    with pytest.raises(RmpipeError, match=r"text rendering v1, this rmpipe renders v2.*--rebuild"):
        backbones.check_text_version(EmbeddingStore(root).manifest, root, "tiny")
    pair_spec = {"spec": {"chat_template": False, "text": 1}}
    backbones.check_text_version(pair_spec, root, "minilm")  # encoders' pair encoding is still v1
