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
    assert per_epoch <= 2 * 6 + 1  # a pass, and re-reads: a batch of 128 spans three shards of ~60 rows
    assert nuisance.features.pca_ is None  # 3,000 × 8 fits the nuisance budget: no projection


@pytest.mark.parametrize("head", [dict(max_epochs=6, patience=100, dropout=0.2),
                                  dict(max_epochs=40, patience=1, lr=3e-2)], ids=["max_epochs", "patience"])
def test_validating_in_the_next_pass_gives_the_same_head_and_curve_for_fewer_reads(tmp_path, head):
    import torch

    from stages.fit.core import method_rows
    from stages.fit.train import train_head

    _, streamed = projects(tmp_path)
    # batches smaller than a shard's ~60 train rows: a batch spans at most two windows of one shard
    params = dataclasses.replace(streamed.fit, head=dataclasses.replace(streamed.fit.head, batch_size=32, **head))
    data, _ = load_inputs(streamed, "toy")
    method = get_method("causalrm")
    train, val = method_rows(data, fit_nuisance(data, params, [method]), method)
    runs = {}
    for in_pass in (False, True):
        data.X.release()
        data.X.window = 1  # a cache of two shards, as a big store has
        before = data.X.shard_reads
        model, result = train_head(data.X, train, val, params.head, params.guard, validate_in_pass=in_pass)
        runs[in_pass] = model, result, data.X.shard_reads - before
    (m0, r0, reads0), (m1, r1, reads1) = runs[False], runs[True]
    assert r1.stopped == ("patience" if head["patience"] == 1 else "max_epochs")
    assert (r1.epochs_run, r1.best_epoch, r1.stopped) == (r0.epochs_run, r0.best_epoch, r0.stopped)
    assert r1.epochs_run < head["max_epochs"] or head["patience"] > 1
    for a, b in zip(m0.state_dict().values(), m1.state_dict().values()):
        assert torch.equal(a, b)  # the same training, so bit for bit the same weights
    for e0, e1 in zip(r0.curve, r1.curve, strict=True):
        assert e0["train_guarded_risk"] == e1["train_guarded_risk"]
        assert e0["val_guarded_risk"] == pytest.approx(e1["val_guarded_risk"], rel=1e-6)
    assert r1.guard == r0.guard and r1.best_val_risk == pytest.approx(r0.best_val_risk, rel=1e-6)
    passes = r1.epochs_run + 1  # one pass a settled epoch, and the last (a discarded epoch, or the final scoring)
    assert reads1 <= 6 * passes < reads0, (reads0, reads1)


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
