"""Draws the benchmark fits: real shared sets through the paper's protocol, and two
semi-synthetic worlds where the reward is learnable by construction.

A :class:`Draw` is one simulated data set, split into what a fit may see (train and val rows:
embedding, split, ``o``, ``ỹ``) and what only scoring may read (clean labels of every row, the
test split's ratings and comparisons). Real sets come from ``stages.prepare.run.build`` in memory,
so the simulation is exactly the pipeline's; the worlds follow docs/method.md's protocol too:

- ``embedding`` world: all the shared texts together, with a known five-level reward that is a
  function of their real embeddings (``z = e·u + 0.5 tanh(e·v) + ε`` on whitened PCA coordinates,
  cut at fixed quantiles into levels 0–4), then :class:`pipeline.simulation.Simulator`;
- ``gaussian`` world: :func:`pipeline.synthetic.make_world` (``e ~ N(0, I)``) at N ≥ 30,000,
  the scale at which the paper's effect appears.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

import numpy as np
import polars as pl

from pipeline.config import Params, SimulateParams, SourceParams
from pipeline.simulation import Simulator, realised_rates
from pipeline.synthetic import make_world
from stages.prepare.run import build
from stages.prepare.splits import split_groups

LEVEL_CUTS = (0.15, 0.35, 0.6, 0.85)  # quantiles of z: levels 0-4, label y = 1[level > 2]


@dataclass
class Draw:
    """One simulated data set. ``X`` etc. hold the train and val rows (what a fit may see);
    ``label`` their clean labels (the oracle only); ``test`` the clean test split."""

    X: np.ndarray
    split: np.ndarray
    observed: np.ndarray
    feedback: np.ndarray
    label: np.ndarray
    X_test: np.ndarray
    y_test: np.ndarray
    rating_test: np.ndarray | None
    comparison_test: list | None
    realised: dict  # realised observation and flip rates on the train split
    propensity_true: np.ndarray | None = None  # train and val rows
    group_test: list | None = None  # the test rows' prompts: best-of-N and NDCG rank within them
    columns: dict = field(default_factory=dict)  # covariate columns of the train and val rows

    @property
    def train(self) -> np.ndarray:
        return self.split == "train"


def _from_frame(df: pl.DataFrame, X_of: dict[str, int], X_all: np.ndarray, covariates=()) -> Draw:
    """A prepared feedback table (with clean labels) and the backbone's embeddings -> a Draw,
    carrying the ``covariates`` columns the table has (the propensity model may read them)."""
    fit = df.filter(pl.col("split") != "test")
    test = df.filter(pl.col("split") == "test")
    rows = np.array([X_of[p] for p in fit["pair_id"].to_list()])
    rows_test = np.array([X_of[p] for p in test["pair_id"].to_list()])
    split = fit["split"].to_numpy().astype(str)
    observed = fit["observed"].to_numpy()
    feedback = fit["feedback"].fill_null(0).to_numpy().astype(np.int8)
    label = fit["label"].to_numpy().astype(np.int8)
    p_true = fit["propensity_true"].to_numpy() if fit["propensity_true"].null_count() == 0 else None
    tr = split == "train"
    return Draw(X=X_all[rows], split=split, observed=observed, feedback=feedback, label=label,
                X_test=X_all[rows_test], y_test=test["label"].to_numpy().astype(float),
                rating_test=test["rating"].to_numpy(), comparison_test=test["comparison_id"].to_list(),
                realised=realised_rates(observed[tr], feedback[tr], label[tr],
                                        None if p_true is None else p_true[tr]),
                propensity_true=p_true, group_test=test["group_id"].to_list(),
                columns={c: fit[c].to_numpy() for c in covariates if c in fit.columns})


def source_of(dataset: str, columns: dict[str, str] | None = None) -> SourceParams:
    """A benchmark data set by name: a shared set, or ``file:PATH`` (a user's rated file, with
    ``columns`` mapping contract names to the file's own)."""
    if dataset.startswith("file:"):
        return SourceParams(kind="file", path=dataset[len("file:"):], columns=dict(columns or {}))
    return SourceParams(kind="shared", name=dataset)


def shared_params(base: Params, dataset: str, alpha: float, rho: tuple[float, float], seed: int,
                  columns: dict[str, str] | None = None) -> Params:
    """``base`` with the data set ``dataset`` (shared set or ``file:PATH``) simulated at
    ``alpha``/``rho`` with ``seed`` (the split seed stays the base's, so every draw scores the
    same clean test rows)."""
    pp = base.prepare
    sim = dataclasses.replace(pp.simulate, enabled=True, alpha=alpha, rho_pos=rho[0], rho_neg=rho[1], seed=seed)
    name = dataset if not dataset.startswith("file:") else "user-file"
    return dataclasses.replace(base, dataset=name, prepare=dataclasses.replace(
        pp, source=source_of(dataset, columns), simulate=sim))


def shared_draw(base: Params, dataset: str, alpha: float, rho: tuple[float, float], seed: int,
                X_of: dict[str, int], X_all: np.ndarray, columns: dict[str, str] | None = None) -> Draw:
    """A real data set through the pipeline's own prepare stage, in memory."""
    df, _ = build(shared_params(base, dataset, alpha, rho, seed, columns), where=f"bench:{dataset}")
    return _from_frame(df, X_of, X_all, base.fit.row_columns)


@dataclass(frozen=True)
class EmbeddingWorld:
    """The known reward over real embeddings: rows (with their groups and comparisons) of all
    shared sets, levels 0–4 fixed once by ``reward_seed``; :meth:`draw` simulates feedback."""

    X: np.ndarray
    groups: np.ndarray
    comparisons: list
    level: np.ndarray
    split: np.ndarray

    @classmethod
    def build(cls, X: np.ndarray, groups, comparisons, pca_dim: int = 64, latent_noise: float = 0.5,
              reward_seed: int = 12345, split_seed: int = 0,
              fractions=(0.6, 0.2, 0.2)) -> "EmbeddingWorld":
        from sklearn.decomposition import PCA

        rng = np.random.default_rng(reward_seed)
        k = min(pca_dim, X.shape[1], len(X) - 1)
        Z = PCA(n_components=k, whiten=True, random_state=reward_seed).fit_transform(X.astype(np.float64))
        u, v = (w / np.linalg.norm(w) for w in rng.standard_normal((2, k)))
        z = Z @ u + 0.5 * np.tanh(Z @ v) + latent_noise * rng.standard_normal(len(X))
        level = np.searchsorted(np.quantile(z, LEVEL_CUTS), z).astype(float)
        split = split_groups(np.asarray(groups, dtype=object), fractions, split_seed).astype(str)
        return cls(X.astype(np.float32), np.asarray(groups), list(comparisons), level, split)

    def draw(self, alpha: float, rho: tuple[float, float], seed: int, target_rate: float = 0.2) -> Draw:
        fit, test = self.split != "test", self.split == "test"
        sim = Simulator(SimulateParams(alpha=alpha, target_rate=target_rate, rho_pos=rho[0], rho_neg=rho[1],
                                       seed=seed))
        s = sim.simulate(self.level[fit], scale=(0.0, 4.0), levels=self.level)
        tr = self.split[fit] == "train"
        return Draw(X=self.X[fit], split=self.split[fit], observed=s.observed,
                    feedback=np.where(s.observed, s.feedback, 0).astype(np.int8), label=s.label,
                    X_test=self.X[test], y_test=(self.level[test] > 2).astype(float),
                    rating_test=self.level[test], comparison_test=[self.comparisons[i] for i in np.flatnonzero(test)],
                    realised=realised_rates(s.observed[tr], s.feedback[tr], s.label[tr], s.propensity[tr]),
                    propensity_true=s.propensity)


def gaussian_draw(n: int, dim: int, alpha: float, rho: tuple[float, float], seed: int,
                  target_rate: float = 0.2) -> Draw:
    """:func:`pipeline.synthetic.make_world` (a fresh world per seed); rows ``2k, 2k+1`` form
    one comparison."""
    w = make_world(n=n, dim=dim, alpha=alpha, target_rate=target_rate, rho_pos=rho[0], rho_neg=rho[1], seed=seed)
    fit, test = w.split != "test", w.split == "test"
    tr = w.split[fit] == "train"
    obs, fb, lab = w.observed[fit], w.feedback[fit], w.label[fit]
    return Draw(X=w.X[fit], split=w.split[fit], observed=obs, feedback=np.where(obs, fb, 0).astype(np.int8),
                label=lab, X_test=w.X[test], y_test=w.label[test].astype(float),
                rating_test=w.rating[test].astype(float),
                comparison_test=[f"c{i // 2}" for i in np.flatnonzero(test)],
                realised=realised_rates(obs[tr], fb[tr], lab[tr], w.propensity[fit][tr]),
                propensity_true=w.propensity[fit])
