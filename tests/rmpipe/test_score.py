"""`score` end to end on real parts: the built-in table, real MiniLM embeddings, a fitted head."""

from __future__ import annotations

import gzip

import numpy as np
import polars as pl
import pytest

from pipeline.store import EmbeddingStore
from pipeline.heads import load_head
from stages.fit.run import fit
from rmpipe.score import score
from tests.stages.fit.conftest import small_minilm_project

pytestmark = pytest.mark.slow  # the real MiniLM embeds and a head is fitted per test


@pytest.fixture
def minilm_project(tmp_path):
    return small_minilm_project(tmp_path)


def test_score_embeds_only_what_the_store_lacks_and_matches_the_head(minilm_project, tmp_path):
    params = minilm_project
    folder = fit(params, "minilm", ["naive"], progress=False, log=lambda _: None)["naive"]
    store = EmbeddingStore(params.store_path("minilm"))
    rows_before = store.rows
    known = pl.read_parquet(params.table_path).select("prompt", "response").unique().head(5)
    new = pl.DataFrame({"prompt": ["How do I reset my router?"],
                        "response": ["Unplug it for thirty seconds, then plug it back in."]})
    data = tmp_path / "pairs.jsonl"
    pl.concat([known, new]).write_ndjson(data)

    out, n = score(params, folder, data, progress=False)
    assert n == 6
    assert store.rows == rows_before + 1  # only the new pair went through MiniLM
    result = pl.read_parquet(out)
    X = store.read(result["pair_id"].to_list())
    assert np.allclose(result["reward"].to_numpy(), load_head(folder).rewards(X), atol=1e-6)

    shards = len(store.manifest["shards"])
    again, _ = score(params, folder, data, tmp_path / "again.parquet", progress=False)
    assert len(store.manifest["shards"]) == shards  # nothing left to embed
    assert np.allclose(pl.read_parquet(again)["reward"].to_numpy(), result["reward"].to_numpy())

    gz = tmp_path / "pairs.jsonl.gz"  # the same reader as user logs: gzip too
    gz.write_bytes(gzip.compress(data.read_bytes()))
    zipped, _ = score(params, folder, gz, tmp_path / "zipped.csv", progress=False)
    assert np.allclose(pl.read_csv(zipped)["reward"].to_numpy(), result["reward"].to_numpy())


def test_a_store_of_another_embedding_function_is_refused_by_score_and_evaluate(minilm_project, tmp_path):
    from pipeline.errors import RmpipeError
    from stages.evaluate.run import evaluate

    params = minilm_project
    folder = fit(params, "minilm", ["naive"], progress=False, log=lambda _: None)["naive"]
    root = params.store_path("minilm")
    other = EmbeddingStore.create(root, backbone="minilm", spec={"model": "another"}, dim=384, rebuild=True)
    data = tmp_path / "pairs.csv"
    pl.DataFrame({"prompt": ["Hi?"], "response": ["Hello."]}).write_csv(data)
    out = tmp_path / "rewards.parquet"
    with pytest.raises(RmpipeError, match=rf"trained on backbone 'minilm' .*spec {other.spec_hash}\); use a head"):
        score(params, folder, data, out, progress=False)
    assert not out.exists() and other.rows == 0  # refused before embedding or writing anything
    with pytest.raises(RmpipeError, match="trained on backbone 'minilm'"):
        evaluate(params, "minilm", log=lambda _: None)
