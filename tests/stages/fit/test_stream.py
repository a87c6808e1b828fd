"""A fit that streams the store (fit.stream_gb): same heads' quality as the in-memory fit, each
shard decoded a bounded number of times, and evaluate/score reading the store the same way."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from pipeline.errors import RmpipeError
from pipeline.store_matrix import StoreMatrix
from pipeline.synthetic import make_world, write_project
from stages.evaluate.run import evaluate
from stages.fit.core import fit_method, fit_nuisance
from stages.fit.methods import get_method
from stages.fit.run import fit, load_inputs
from tests.stages.fit.conftest import fast_fit

METHODS = ["naive", "causalrm"]


def projects(tmp_path):
    world = make_world(n=3000, dim=8, seed=0)
    loaded = write_project(tmp_path / "mem", world, fit=fast_fit(), shards=6)
    streamed = write_project(tmp_path / "stream", world, fit=dataclasses.replace(fast_fit(), stream_gb=0.0), shards=6)
    return loaded, streamed


def test_a_streamed_fit_matches_the_in_memory_fit_within_seed_noise(tmp_path):
    loaded, streamed = projects(tmp_path)
    quiet = dict(progress=False, log=lambda _: None)
    data, _ = load_inputs(streamed, "toy")
    assert isinstance(data.X, StoreMatrix)
    assert isinstance(load_inputs(loaded, "toy")[0].X, np.ndarray)
    r2 = {}
    for name, params in (("mem", loaded), ("stream", streamed)):
        fit(params, "toy", METHODS, **quiet)
        reports = evaluate(params, "toy", METHODS, log=lambda _: None)
        r2[name] = {m: reports[m]["metrics"]["r2"] for m in METHODS}
    for m in METHODS:
        assert r2["stream"][m] > 0.2 and abs(r2["stream"][m] - r2["mem"][m]) < 0.08, r2


def test_a_streamed_epoch_decodes_each_shard_a_bounded_number_of_times(tmp_path):
    _, streamed = projects(tmp_path)
    data, _ = load_inputs(streamed, "toy")
    data.X.window = 1  # the store is small: force a cache of two shards, as a big store has
    params = streamed.fit
    method = get_method("causalrm")
    nuisance = fit_nuisance(data, params, [method])
    before = data.X.shard_reads
    assert before <= 6 * 3  # PCA sample, features, and nothing more than a pass each
    _, result = fit_method(data, nuisance, method, params)
    per_epoch = (data.X.shard_reads - before) / result.epochs_run
    assert per_epoch <= 2 * 6 + 1  # one pass for the train batches, one for the val risk
    assert nuisance.features.pca_ is None  # 3,000 × 8 fits the nuisance budget: no projection


def test_a_streamed_fit_refuses_a_nan_before_writing_any_head(tmp_path):
    world = make_world(n=1200, dim=8, seed=0)
    world.X[int(np.flatnonzero(world.split == "train")[5])] = np.nan
    params = write_project(tmp_path, world, fit=dataclasses.replace(fast_fit(), stream_gb=0.0), shards=4)
    with pytest.raises(RmpipeError, match="NaN or infinite embedding for pair_id"):
        fit(params, "toy", METHODS, progress=False, log=lambda _: None)
    assert not list((tmp_path / "heads").rglob("card.json"))


def test_score_streams_the_store_beyond_the_threshold_with_the_same_rewards(tmp_path):
    import polars as pl

    from pipeline.table import read_table
    from rmpipe.score import score

    loaded, streamed = projects(tmp_path)
    folder = fit(loaded, "toy", ["naive"], progress=False, log=lambda _: None)["naive"]
    data = tmp_path / "pairs.csv"
    read_table(loaded.table_path).select("prompt", "response").head(500).write_csv(data)
    out = {}
    for name, params in (("mem", loaded), ("stream", dataclasses.replace(
            loaded, fit=dataclasses.replace(loaded.fit, stream_gb=0.0)))):
        path, rows = score(params, folder, data, tmp_path / f"{name}.csv", progress=False)
        out[name] = pl.read_csv(path)["reward"].to_numpy()
    assert rows == 500
    np.testing.assert_allclose(out["stream"], out["mem"], rtol=1e-6)


def test_rmpipe_fit_says_it_streamed_and_why(tmp_path):
    _, streamed = projects(tmp_path)
    lines = []
    fit(streamed, "toy", ["causalrm"], progress=False, log=lines.append)
    assert "streamed from the store" in lines[0] and "above fit.stream_gb 0" in lines[0], lines[0]
    assert "projected" not in lines[0]  # the raw embeddings fit the nuisance budget


def test_a_streamed_store_too_big_for_the_nuisance_budget_is_projected(tmp_path, monkeypatch):
    import stages.fit.core as core

    params = write_project(tmp_path, make_world(n=1500, dim=32, seed=0),
                           fit=dataclasses.replace(fast_fit(), stream_gb=0.0), shards=3)
    data, _ = load_inputs(params, "toy")
    n = len(data.X)
    monkeypatch.setattr(core, "NUISANCE_BYTES", n * 4 * 20.5)  # room for 20 columns of 32
    assert core.nuisance_dim(data.X, None) == 16  # the widest multiple of 8 that fits
    lines = []
    fit(params, "toy", ["causalrm"], progress=False, log=lines.append)
    assert "nuisance features projected to 16 dims" in lines[0], lines[0]
    monkeypatch.setattr(core, "NUISANCE_BYTES", n * 4 * 40)
    assert core.nuisance_dim(data.X, None) is None  # the raw 32 columns fit: no projection
    assert core.nuisance_dim(data.X[:], None) is None and core.nuisance_dim(data.X, 4) == 4
