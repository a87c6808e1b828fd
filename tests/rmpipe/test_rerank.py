"""`rerank` on a real small file: candidates grouped by group_id or by prompt, ordered by the
same rewards `score` gives."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest

from pipeline.errors import RmpipeError
from pipeline.store import EmbeddingStore
from rmpipe.rerank import rerank
from rmpipe.score import score

pytestmark = pytest.mark.slow  # the real MiniLM project of tests/rmpipe/conftest.py

CANDIDATES = {"How do I boil an egg?": ["Put it in boiling water for nine minutes.", "No.", "Eggs are oval."],
              "What is two plus two?": ["Four.", "It is 4, because 2 + 2 = 4.", "I cannot help with that."]}


def candidates(tmp_path, with_group: bool):
    rows = [(g, p, r) for g, (p, rs) in enumerate(CANDIDATES.items()) for r in rs]
    df = pl.DataFrame({"prompt": [p for _, p, _ in rows], "response": [r for *_, r in rows],
                       "note": [f"row {i}" for i in range(len(rows))]})
    if with_group:
        df = df.with_columns(pl.Series("group_id", [f"g{g}" for g, _, _ in rows]))
    path = tmp_path / ("grouped.v1.csv" if with_group else "by_prompt.jsonl")
    df.write_csv(path) if with_group else df.write_ndjson(path)
    return path


@pytest.mark.parametrize("with_group", [True, False])
def test_rerank_orders_each_group_by_the_rewards_score_gives(served, tmp_path, with_group):
    params, head = served
    data = candidates(tmp_path, with_group)
    out, n, groups = rerank(params, head, data, progress=False)
    assert out.name == data.name.rsplit(".", 1)[0] + ".reranked.parquet" and (n, groups) == (6, 2)
    ranked = pl.read_parquet(out)
    key = "group_id" if with_group else "prompt"
    assert ranked[key].unique(maintain_order=True).to_list() == (["g0", "g1"] if with_group else list(CANDIDATES))
    for _, group in ranked.group_by(key, maintain_order=True):
        rewards = group["reward"].to_numpy()
        assert (np.diff(rewards) <= 0).all() and group["rank"].to_list() == [1, 2, 3]
        assert group["best"].to_list() == [True, False, False]
    scored, _ = score(params, head, data, tmp_path / "scored.parquet", progress=False)
    expected = dict(zip(pl.read_parquet(scored)["note"], pl.read_parquet(scored)["reward"]))
    assert all(abs(expected[note] - r) < 1e-9 for note, r in zip(ranked["note"], ranked["reward"]))


def test_rerank_refuses_before_scoring(served, tmp_path):
    params, head = served
    data = candidates(tmp_path, True)
    rows = EmbeddingStore(params.store_path("minilm")).rows
    with pytest.raises(RmpipeError, match="overwrite the input"):
        rerank(params, head, data, data, progress=False)
    with pytest.raises(RmpipeError, match="unknown output type"):
        rerank(params, head, data, tmp_path / "out.txt", progress=False)
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"prompt": "p", "response": "a new answer", "group_id": "g"}\n'
                   '{"prompt": "p", "response": "another new answer", "group_id": null}\n')
    with pytest.raises(RmpipeError, match="row 1, column group_id: missing value"):
        rerank(params, head, bad, progress=False)
    assert EmbeddingStore(params.store_path("minilm")).rows == rows  # nothing embedded
