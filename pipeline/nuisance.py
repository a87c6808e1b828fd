"""Nuisance classifiers (logistic, LightGBM), K-fold cross-fitting, and their features.

Cross-fitting (Chernozhukov et al. 2018, "double/debiased ML"): split the rows into K folds, fit
on K−1, predict the held-out one, so every training row's score is out-of-fold; rows outside
the fit (other splits, unobserved rows for a feedback model, new data) get the mean of the K
fold models. Every fitted model exports to arrays or LightGBM's text format: nothing is pickled.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from pipeline.config import CLASSIFIERS
from pipeline.errors import RmpipeError

KINDS = CLASSIFIERS
CHUNK = 8192


C_GRID = tuple(np.logspace(-3, 1, 5))


def column_moments(X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Each column's mean and standard deviation in float64, a chunk at a time: ``X.std`` would
    hold a float64 copy of ``X`` (3 GiB for a streamed store's 6M × 64 fold)."""
    n = max(len(X), 1)
    total = np.zeros(X.shape[1])
    for s in range(0, len(X), CHUNK * 8):
        total += X[s:s + CHUNK * 8].sum(axis=0, dtype=np.float64)
    mean = total / n
    squares = np.zeros(X.shape[1])
    for s in range(0, len(X), CHUNK * 8):
        squares += ((X[s:s + CHUNK * 8] - mean) ** 2).sum(axis=0)
    return mean, np.sqrt(squares / n)


class LogisticClassifier:
    """L2 logistic regression on standardised features (scikit-learn's lbfgs); predicts from its
    own arrays, so a reloaded model gives identical scores. ``c=None`` picks the inverse
    regularisation from ``C_GRID`` by 3-fold cross-validated log loss: the anchor estimator
    needs *calibrated* scores, and an under-regularised model's extreme scores collapse the
    noise-rate estimates towards 0."""

    def __init__(self, c: float | None = 1.0, seed: int = 0, max_iter: int = 500):
        self.c = c
        self.seed = seed
        self.max_iter = max_iter

    def fit(self, X: np.ndarray, y: np.ndarray, copy: bool = True) -> "LogisticClassifier":
        """``copy=False`` standardises ``X`` in place (for a caller's own temporary copy)."""
        import warnings

        from sklearn.exceptions import ConvergenceWarning
        from sklearn.linear_model import LogisticRegression

        mean, scale = column_moments(X)
        self.mean_ = mean.astype(np.float32)
        self.scale_ = np.where(scale > 1e-12, scale, 1.0).astype(np.float32)
        Z = X.astype(np.float32, copy=copy)
        Z -= self.mean_
        Z /= self.scale_
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            lr = self._search(Z, y) if self.c is None else None
            if lr is None:
                self.c_ = 1.0 if self.c is None else float(self.c)
                lr = LogisticRegression(C=self.c_, max_iter=self.max_iter, random_state=self.seed).fit(Z, y)
            else:
                self.c_ = float(lr.C_)
        self.coef_ = lr.coef_.ravel().astype(np.float64)
        self.intercept_ = float(lr.intercept_[0])
        return self

    def _search(self, Z: np.ndarray, y: np.ndarray):
        """The ``C_GRID`` value with the lowest 3-fold cross-validated log loss, refitted on all
        rows (scikit-learn's ``LogisticRegressionCV``); ``None`` when a class has too few rows
        to validate on (then ``C = 1``)."""
        from sklearn.linear_model import LogisticRegressionCV
        from sklearn.model_selection import StratifiedKFold

        if np.bincount(np.asarray(y, dtype=int), minlength=2).min() < 3:
            return None
        return LogisticRegressionCV(
            Cs=list(C_GRID), cv=StratifiedKFold(3, shuffle=True, random_state=self.seed),
            scoring="neg_log_loss", l1_ratios=(0.0,), max_iter=self.max_iter,
            random_state=self.seed, use_legacy_attributes=False).fit(Z, y)

    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        out = np.empty(len(X))
        for s in range(0, len(X), CHUNK):
            z = ((X[s:s + CHUNK] - self.mean_) / self.scale_) @ self.coef_ + self.intercept_
            out[s:s + CHUNK] = 1.0 / (1.0 + np.exp(-z))
        return out

    def to_arrays(self) -> dict[str, np.ndarray]:
        return {"mean": self.mean_, "scale": self.scale_, "coef": self.coef_,
                "intercept": np.array([self.intercept_]), "c": np.array([self.c_])}

    @classmethod
    def from_arrays(cls, arrays: dict[str, np.ndarray]) -> "LogisticClassifier":
        model = cls()
        model.mean_, model.scale_ = arrays["mean"], arrays["scale"]
        model.coef_, model.intercept_ = arrays["coef"], float(arrays["intercept"][0])
        model.c_ = float(arrays["c"][0]) if "c" in arrays else None
        return model


class LightGBMClassifier:
    """Gradient-boosted trees; saved as LightGBM's own text model."""

    def __init__(self, n_estimators: int = 200, learning_rate: float = 0.05,
                 num_leaves: int = 15, seed: int = 0, n_jobs: int = 1):
        self.n_estimators = n_estimators
        self.learning_rate = learning_rate
        self.num_leaves = num_leaves
        self.seed = seed
        self.n_jobs = n_jobs

    def fit(self, X: np.ndarray, y: np.ndarray) -> "LightGBMClassifier":
        import lightgbm as lgb

        model = lgb.LGBMClassifier(
            n_estimators=self.n_estimators, learning_rate=self.learning_rate,
            num_leaves=self.num_leaves, min_child_samples=20, subsample=0.8, subsample_freq=1,
            colsample_bytree=0.8, random_state=self.seed, n_jobs=self.n_jobs,
            deterministic=True, force_row_wise=True, verbose=-1)
        model.fit(X, y)
        self.booster_ = model.booster_
        return self

    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        return np.concatenate([self.booster_.predict(X[s:s + CHUNK])
                               for s in range(0, len(X), CHUNK)]) if len(X) else np.empty(0)

    def to_text(self) -> str:
        return self.booster_.model_to_string()

    @classmethod
    def from_text(cls, text: str) -> "LightGBMClassifier":
        import lightgbm as lgb

        model = cls()
        model.booster_ = lgb.Booster(model_str=text)
        return model


def make_classifier(kind: str, c: float | None = 1.0, seed: int = 0):
    if kind == "logistic":
        return LogisticClassifier(c=c, seed=seed)
    if kind == "lightgbm":
        return LightGBMClassifier(seed=seed)
    raise RmpipeError(f"unknown nuisance model {kind!r} (known: {', '.join(KINDS)})")


class CrossFitClassifier:
    """K-fold cross-fitted classifier of a binary target.

    ``fit(X, y, rows)`` trains on ``X[rows]``; ``oof_`` holds each of those rows' out-of-fold
    score, ``models_`` the K fold models; :meth:`predict` averages them for any other rows.
    """

    def __init__(self, kind: str = "logistic", folds: int = 5, c: float | None = 1.0, seed: int = 0):
        self.kind = kind
        self.folds = folds
        self.c = c
        self.seed = seed

    def fit(self, X: np.ndarray, y: np.ndarray, rows: np.ndarray | None = None) -> "CrossFitClassifier":
        from sklearn.model_selection import StratifiedKFold

        rows = np.arange(len(X)) if rows is None else np.asarray(rows)
        y = np.asarray(y).astype(int)
        if np.bincount(y, minlength=2).min() < self.folds:
            raise RmpipeError(f"too few rows of one class to cross-fit with {self.folds} folds")
        self.oof_ = np.empty(len(rows))
        self.models_ = []
        splitter = StratifiedKFold(n_splits=self.folds, shuffle=True, random_state=self.seed)
        for k, (fit_idx, out_idx) in enumerate(splitter.split(np.zeros(len(y)), y)):
            model = make_classifier(self.kind, self.c, self.seed + k)
            if isinstance(model, LogisticClassifier):  # X[...] is a fresh copy: standardise it in place
                model.fit(X[rows[fit_idx]], y[fit_idx], copy=False)
            else:
                model.fit(X[rows[fit_idx]], y[fit_idx])
            self.oof_[out_idx] = model.predict_proba(X[rows[out_idx]])
            self.models_.append(model)
        return self

    def predict(self, X: np.ndarray) -> np.ndarray:
        return np.mean([m.predict_proba(X) for m in self.models_], axis=0)

    def export(self) -> tuple[dict[str, np.ndarray], dict[str, str]]:
        """``(arrays, texts)``: logistic folds as arrays ``fold{k}.{name}``, LightGBM folds as
        text models ``fold{k}``."""
        arrays, texts = {}, {}
        for k, m in enumerate(self.models_):
            if isinstance(m, LogisticClassifier):
                arrays.update({f"fold{k}.{n}": v for n, v in m.to_arrays().items()})
            else:
                texts[f"fold{k}"] = m.to_text()
        return arrays, texts

    @classmethod
    def restore(cls, kind: str, folds: int, arrays: dict, texts: dict) -> "CrossFitClassifier":
        model = cls(kind=kind, folds=folds)
        if kind == "logistic":
            model.models_ = [LogisticClassifier.from_arrays(
                {n: arrays[f"fold{k}.{n}"] for n in ("mean", "scale", "coef", "intercept", "c")})
                for k in range(folds)]
        else:
            model.models_ = [LightGBMClassifier.from_text(texts[f"fold{k}"]) for k in range(folds)]
        return model


@dataclass
class Features:
    """What nuisance models see: the embedding (optionally PCA-projected, fitted on training
    rows) beside declared covariate columns (numbers as is, text one-hot)."""

    pca_dim: int | None = None
    covariates: tuple[str, ...] = ()
    seed: int = 0

    def fit(self, X: np.ndarray, columns: dict[str, np.ndarray], rows: np.ndarray) -> "Features":
        self.pca_ = None
        if self.pca_dim:
            from sklearn.decomposition import PCA

            if not 0 < self.pca_dim <= min(X.shape[1], len(rows)):
                raise RmpipeError(f"fit.propensity.pca_dim must be in 1..{min(X.shape[1], len(rows))}, "
                                  f"got {self.pca_dim}")
            rng = np.random.default_rng(self.seed)
            sample = np.sort(rng.choice(rows, size=min(len(rows), 20000), replace=False))
            pca = PCA(n_components=self.pca_dim, svd_solver="randomized", random_state=self.seed)
            pca.fit(X[sample])
            self.pca_ = {"mean": pca.mean_.astype(np.float32),
                         "components": pca.components_.astype(np.float32)}
        self.categories_ = {}
        for name in self.covariates:
            values = np.asarray(columns[name])
            if values.dtype.kind in "OUS":
                self.categories_[name] = sorted({str(v) for v in values[rows]})
        return self

    def transform(self, X: np.ndarray, columns: dict[str, np.ndarray]) -> np.ndarray:
        """Feature matrix for all rows of ``X``; ``X`` itself (no copy) when there is nothing to add."""
        if self.pca_ is None and not self.covariates:
            return X
        parts = []
        if self.pca_ is not None:  # filled in place: a streamed store's projection is the big array
            Z = np.empty((len(X), self.pca_dim), np.float32)
            for s in range(0, len(X), CHUNK):
                Z[s:s + CHUNK] = (X[s:s + CHUNK] - self.pca_["mean"]) @ self.pca_["components"].T
            if not self.covariates:
                return Z
            parts.append(Z)
        else:
            parts.append(X)
        for name in self.covariates:
            values = np.asarray(columns[name])
            if name in self.categories_:
                cats = self.categories_[name]
                parts.append(np.stack([values.astype(str) == c for c in cats], axis=1).astype(np.float32))
            else:
                parts.append(values.astype(np.float32).reshape(-1, 1))
        return np.hstack(parts).astype(np.float32, copy=False)
