"""A vectors file (bring your own embeddings) read and checked: real Parquet files, each mistake
one line naming the file, row and column; pair text and pair_id keys agree."""

from __future__ import annotations

import re

import numpy as np
import polars as pl
import pytest

from pipeline.config import BackboneSpec, load_params
from pipeline.errors import RmpipeError
from pipeline.store import EmbeddingStore
from pipeline.table import canonical_prompt, make_pair_id
from stages.embed import backbones
from stages.embed.run import embed
from stages.embed.vectors import VectorLookup, read_vectors
from tests.stages.embed.embed_helpers import make_pairs, write_feedback, write_params

TURNS = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello"},
         {"role": "user", "content": "Name a colour."}]


def test_pair_text_and_pair_id_keys_give_the_same_pairs(tmp_path):
    by_text = tmp_path / "text.parquet"
    pl.DataFrame({"prompt": ["What is 2 + 2?", "Hi"], "response": ["4", "Hello!"],
                  "vector": [[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]]}).write_parquet(by_text)
    by_id = tmp_path / "ids.parquet"
    pl.DataFrame({"pair_id": [make_pair_id("What is 2 + 2?", "4"), make_pair_id(canonical_prompt(TURNS), "Red")],
                  "vector": [[1.0, 2.0, 3.0], [7.0, 8.0, 9.0]]},
                 schema_overrides={"vector": pl.Array(pl.Float64, 3)}).write_parquet(by_id)
    text, ids = read_vectors(by_text), read_vectors(by_id)
    assert text.dim == ids.dim == 3 and text.X.dtype == np.float32
    pid = make_pair_id("What is 2 + 2?", "4")
    assert np.array_equal(text.X[text.index[pid]], ids.X[ids.index[pid]])
    lookup = VectorLookup(by_id)
    got = lookup([canonical_prompt(TURNS), "What is 2 + 2?", "unknown"], ["Red", "4", "x"])
    assert np.array_equal(got[:2], [[7, 8, 9], [1, 2, 3]]) and np.isnan(got[2]).all()


def test_the_key_is_the_file_content(tmp_path):
    path = tmp_path / "v.parquet"
    pl.DataFrame({"pair_id": ["a"], "vector": [[1.0]]}).write_parquet(path)
    spec = BackboneSpec(model=f"vectors:{path}")
    first = backbones.store_key(spec, "byo")
    assert backbones.resolve(spec, tmp_path, "byo").weights.startswith("vectors:")
    pl.DataFrame({"pair_id": ["a"], "vector": [[2.0]]}).write_parquet(path)
    assert backbones.store_key(spec, "byo") != first


BAD = [
    ("no vector", {"pair_id": ["a"], "v": [[1.0]]}, r"no 'vector' column \(columns: pair_id, v\)"),
    ("no key", {"vector": [[1.0]]}, "needs a pair_id column, or prompt and response columns"),
    ("empty", {"pair_id": pl.Series([], dtype=pl.String), "vector": pl.Series([], dtype=pl.List(pl.Float32))},
     "no rows"),
    ("ragged", {"pair_id": ["a", "b"], "vector": [[1.0, 2.0], [1.0]]}, r"row 1, column vector: 1 numbers, but row 0 has 2"),
    ("nan", {"pair_id": ["a", "b"], "vector": [[1.0], [float("nan")]]}, r"row 1, column vector: not a finite number"),
    ("null vector", {"pair_id": ["a", "b"], "vector": [[1.0], None]}, r"row 1, column vector: null"),
    ("text vector", {"pair_id": ["a"], "vector": ["1.0"]}, r"column vector: expected lists of numbers, got String"),
    ("null pair_id", {"pair_id": ["a", None], "vector": [[1.0], [2.0]]}, r"row 1, column pair_id: expected text"),
    ("null response", {"prompt": ["p"], "response": [None], "vector": [[1.0]]}, r"row 0, column response: expected text"),
    ("same pair, two vectors", {"pair_id": ["a", "a"], "vector": [[1.0], [2.0]]},
     r"rows 0 and 1 are the same pair \(a\) with different vectors"),
]


@pytest.mark.parametrize("columns, message", [c[1:] for c in BAD], ids=[c[0] for c in BAD])
def test_a_bad_vectors_file_is_one_line_naming_file_row_and_column(tmp_path, columns, message):
    path = tmp_path / "bad.parquet"
    pl.DataFrame(columns).write_parquet(path)
    with pytest.raises(RmpipeError) as caught:
        read_vectors(path)
    assert re.search(re.escape(str(path)) + ": " + message, str(caught.value)), str(caught.value)
    assert "\n" not in str(caught.value)


def test_a_file_that_is_not_there_or_not_parquet(tmp_path):
    with pytest.raises(RmpipeError, match=r"backbones\.byo\.model: 'vectors:.*nope\.parquet': no such file"):
        backbones.store_key(BackboneSpec(model=f"vectors:{tmp_path / 'nope.parquet'}"), "byo")
    path = tmp_path / "v.parquet"
    path.write_text("not parquet")
    with pytest.raises(RmpipeError, match=r"v\.parquet: not a readable Parquet file"):
        read_vectors(path)


def test_embed_copies_the_vectors_and_refuses_a_table_the_file_does_not_cover(tmp_path):
    pairs = make_pairs(6)
    vectors = tmp_path / "v.parquet"
    rng = np.random.default_rng(0)
    X = rng.normal(size=(len(pairs), 5)).astype(np.float32)
    frame = pl.DataFrame({"prompt": [p for p, _ in pairs], "response": [r for _, r in pairs], "vector": X.tolist()})
    frame.head(5).write_parquet(vectors)
    params = load_params(write_params(tmp_path, f"vectors:{vectors}", commit_rows=2))
    write_feedback(params.table_path, pairs)
    with pytest.raises(RmpipeError, match=r"backbones\.tiny\.model: .*v\.parquet has no vector for 1 of the 6 pairs"):
        embed(params, "tiny", progress=False)
    assert not params.store_path("tiny").exists()  # nothing half-written
    frame.write_parquet(vectors)
    summary = embed(params, "tiny", progress=False)
    assert (summary.computed, summary.dim) == (6, 5)
    ids = [make_pair_id(p, r) for p, r in pairs]
    assert np.array_equal(EmbeddingStore(params.store_path("tiny")).read(ids), X)
