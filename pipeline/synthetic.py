"""A Gaussian embedding world with known ground truth, observed through the paper's protocol.

Embeddings ``e ~ N(0, I_D)``; a latent quality ``z = e·u + 0.5·tanh(e·v) + ε`` is cut into five
rating levels 0–4 (HelpSteer's scale); then docs/method.md's simulation through
:mod:`pipeline.simulation`: ``p = α^(5 − s')`` scaled to the target observation rate,
``o ~ Bernoulli(p)``, clean label ``y = 1[s > 2]``, and flips on observed rows with ``rho_pos`` /
``rho_neg``. For tests and benches: the truth (``label``, ``propensity``) is returned beside
what training may see.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl

from pipeline import simulation
from pipeline.config import EmbedParams, EvaluateParams, FitParams, Params
from pipeline.store import EmbeddingStore
from pipeline.table import Provenance, conform, make_pair_id, write_provenance, write_table

LEVELS = np.arange(5.0)  # HelpSteer's 0-4: the label threshold is 2


@dataclass(frozen=True)
class World:
    X: np.ndarray  # (n, D) float32
    rating: np.ndarray  # 0..4
    label: np.ndarray  # clean y
    propensity: np.ndarray  # true p
    observed: np.ndarray  # bool
    feedback: np.ndarray  # ỹ, 0 where unobserved
    split: np.ndarray  # train | val | test


def make_world(n: int = 6000, dim: int = 16, alpha: float = 0.5, target_rate: float = 0.2,
               rho_pos: float = 0.1, rho_neg: float = 0.2, latent_noise: float = 0.5,
               cuts: tuple[float, ...] = (0.15, 0.35, 0.6, 0.85), seed: int = 0,
               fractions: tuple[float, float, float] = (0.6, 0.2, 0.2)) -> World:
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, dim)).astype(np.float32)
    u = rng.standard_normal(dim)
    u /= np.linalg.norm(u)
    v = rng.standard_normal(dim)
    v /= np.linalg.norm(v)
    z = X @ u + 0.5 * np.tanh(X @ v) + latent_noise * rng.standard_normal(n)
    rating = np.searchsorted(np.quantile(z, cuts), z).astype(np.int64)
    propensity = simulation.propensity(rating, alpha, target_rate, scale=(0.0, 4.0))
    observed = rng.random(n) < propensity
    label = simulation.clean_label(rating, LEVELS)
    flip = simulation.flips(label, rng.random(n), rng.random(n), rho_pos, rho_neg)
    feedback = np.where(observed, label ^ flip, 0).astype(np.int8)
    cut = np.cumsum(np.asarray(fractions) / np.sum(fractions))[:-1]
    u_split = rng.random((n + 1) // 2).repeat(2)[:n]  # rows 2k, 2k+1 share a prompt and a split
    split = np.where(u_split < cut[0], "train", np.where(u_split < cut[1], "val", "test"))
    observed = observed | (split == "test")  # the test split is clean and fully observed
    feedback = np.where(split == "test", label, feedback).astype(np.int8)
    return World(X, rating, label, propensity, observed, feedback, split)


def world_table(world: World):
    """The world as a feedback table (pipeline.table's contract): rows ``2k`` and ``2k+1`` share
    a prompt and form one comparison; unobserved rows have null feedback."""
    n = len(world.X)
    prompts = [f"prompt {i // 2}" for i in range(n)]
    responses = [f"response {i}" for i in range(n)]
    return conform(pl.DataFrame({
        "pair_id": [make_pair_id(p, r) for p, r in zip(prompts, responses)],
        "prompt": prompts, "response": responses,
        "group_id": [f"g{i // 2}" for i in range(n)],
        "comparison_id": [f"c{i // 2}" if i // 2 < n // 2 else None for i in range(n)],
        "split": world.split.tolist(),
        "observed": world.observed,
        "feedback": pl.Series(np.where(world.observed, world.feedback, 0)).cast(pl.Int8),
        "label": pl.Series(world.label).cast(pl.Int8),
        "rating": world.rating.astype(float),
        "propensity_true": np.where(world.split == "test", np.nan, world.propensity),
    }).with_columns(
        pl.when(pl.col("observed")).then(pl.col("feedback")).otherwise(None).alias("feedback"),
        pl.col("propensity_true").fill_nan(None),
    ))


def write_project(root, world: World, fit=None, backbone: str = "toy", shards: int = 1):
    """A world on disk as the pipeline would leave it before ``fit``: the prepared table (with a
    provenance naming its licence) under ``root/data``, a ``backbone`` store under
    ``root/emb`` (in ``shards`` shards), heads to go under ``root/heads``; returns matching :class:`pipeline.config.Params` (dataset ``toy``)."""
    root = Path(root)
    table = world_table(world)
    fit = dataclasses.replace(fit or FitParams(), heads_dir=str(root / "heads"))
    params = Params(dataset="toy", data_dir=str(root / "data"), embed=EmbedParams(store_dir=str(root / "emb")),
                    fit=fit, evaluate=EvaluateParams(reports_dir=str(root / "reports")))
    write_table(table, params.table_path)
    write_provenance(Provenance(source="pipeline.synthetic", licence="CC0-1.0 (synthetic)"), params.table_path)
    store = EmbeddingStore.create(root / "emb" / backbone, backbone=backbone,
                                  spec={"model": backbone, "dim": world.X.shape[1]}, dim=world.X.shape[1])
    ids = table["pair_id"].to_list()
    order = np.random.default_rng(0).permutation(len(ids)) if shards > 1 else np.arange(len(ids))
    for chunk in np.array_split(order, shards):  # shards > 1: stored in another order than the table's
        store.append([ids[i] for i in chunk], world.X[chunk], exec_info={"backend": "synthetic"})
    return params
