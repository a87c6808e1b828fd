"""Stage two on arrays: check the inputs, fit the nuisance models once, then one head a method.

Order (METHOD.md): nuisance models first — propensity ``p̂`` on all training rows, the feedback
classifier ``h`` on observed training rows (anchor noise rates, imputation) — then frozen; then
each method's coefficients on the train and val splits, and the one training loop. Nothing here
reads clean labels: :class:`FitInputs` has no place for them.
"""

from __future__ import annotations

import dataclasses
import warnings
from dataclasses import dataclass, field

import numpy as np

from pipeline.config import FitParams
from pipeline.errors import RmpipeError
from stages.fit.imputation import impute
from stages.fit.methods import Method, RowInputs, check_kind
from stages.fit.noise import NoiseRates, resolve_rates, weak_anchor_warning
from pipeline.nuisance import CrossFitClassifier, Features
from stages.fit.propensity import (PropensityModel, clip, diagnostics, logged_propensity,
                                   propensity_trust, trust_warning)
from stages.fit.pu import PUNuisance, fit_pu
from stages.fit.train import RiskRows, TrainResult, train_head

PU_MESSAGE = ("positive-only feedback such as clicks or copies is implicit feedback: set "
              "prepare.feedback: implicit (positive-unlabelled mode) and re-run prepare")


@dataclass
class FitInputs:
    """Train and val rows: embeddings, split, ``o``, ``ỹ`` (0 where unobserved), optional
    covariate columns and logged propensities, and ids to name rows in messages. ``kind``
    implicit: ``feedback`` is the action ``a`` on every row and ``observed`` is not used."""

    X: np.ndarray
    split: np.ndarray
    observed: np.ndarray
    feedback: np.ndarray
    columns: dict[str, np.ndarray] = field(default_factory=dict)
    propensity_logged: np.ndarray | None = None
    ids: list[str] | None = None
    where: str = "fit"
    kind: str = "explicit"

    def __post_init__(self):
        self.split = np.asarray(self.split).astype(str)
        self.observed = np.asarray(self.observed, dtype=bool)
        if self.kind == "implicit":
            self.observed = np.ones(len(self.observed), dtype=bool)
        self.feedback = np.where(self.observed, np.nan_to_num(np.asarray(self.feedback, dtype=float)), 0).astype(np.int8)
        if self.X.ndim != 2:
            raise RmpipeError(f"{self.where}: embeddings must be a 2-d array, got shape {self.X.shape}")
        n = len(self.X)
        for name in ("split", "observed", "feedback"):
            if len(getattr(self, name)) != n:
                raise RmpipeError(f"{self.where}: dimension mismatch: {n} embeddings but "
                                  f"{len(getattr(self, name))} values of {name}")
        bad = ~np.isfinite(self.X).all(axis=1)
        if bad.any():
            i = int(np.argmax(bad))
            name = f"pair_id {self.ids[i]}" if self.ids else f"row {i}"
            raise RmpipeError(f"{self.where}: NaN or infinite embedding for {name} "
                              f"({int(bad.sum())} row(s) in all); re-embed them")
        seen = self.observed & self.train
        if self.kind == "implicit":
            acted = self.feedback[self.train]
            if not self.train.any() or acted.sum() == 0:
                raise RmpipeError(f"{self.where}: no row in the train split has feedback 1: nothing was "
                                  "acted on, so there is nothing to learn from")
            if acted.all():
                raise RmpipeError(f"{self.where}: every row in the train split has feedback 1: implicit "
                                  "mode needs impressions that were not acted on")
            return
        if not seen.any():
            raise RmpipeError(f"{self.where}: no observed rows in the train split: there is no "
                              "feedback to learn from")
        classes = np.unique(self.feedback[seen])
        if len(classes) < 2:
            raise RmpipeError(f"{self.where}: every observed feedback in the train split is "
                              f"{int(classes[0])}: {PU_MESSAGE}")

    @property
    def train(self) -> np.ndarray:
        return self.split == "train"

    @property
    def val(self) -> np.ndarray:
        return self.split == "val"


@dataclass
class Nuisance:
    """Frozen nuisance values for every input row, the fitted models, and their diagnostics."""

    propensity: np.ndarray | None = None  # clipped p̂
    noisy_score: np.ndarray | None = None  # h(x) ≈ P(ỹ = 1 | x)
    rates: NoiseRates | None = None
    features: Features | None = None
    propensity_model: PropensityModel | None = None
    feedback_model: CrossFitClassifier | None = None
    diagnostics: dict = field(default_factory=dict)
    pu: PUNuisance | None = None  # implicit feedback's quantities (stages.fit.pu)


def fit_nuisance(data: FitInputs, params: FitParams, methods: list[Method]) -> Nuisance:
    """Fit what ``methods`` need, once, on the train split; predict it for every row."""
    prop, noise = params.propensity, params.noise
    check_kind(methods, data.kind, data.where)
    if data.kind == "implicit":
        return _fit_implicit(data, params, methods)
    need_p = any(m.needs_propensity for m in methods)
    need_rates = any(m.needs_rates for m in methods)
    need_h = any(m.needs_imputation for m in methods) or (need_rates and noise.rho_pos is None)
    out = Nuisance()
    train_rows = np.flatnonzero(data.train)
    use_logged = prop.use_logged and data.propensity_logged is not None \
        and not np.isnan(np.asarray(data.propensity_logged, dtype=float)).all()
    if (need_p and not use_logged) or need_h:
        missing = [c for c in prop.covariates if c not in data.columns]
        if missing:
            raise RmpipeError(f"{data.where}: covariate column {missing[0]} (fit.propensity.covariates) "
                              "is not in the table")
        out.features = Features(prop.pca_dim, tuple(prop.covariates), prop.seed).fit(data.X, data.columns, train_rows)
        Z = out.features.transform(data.X, data.columns)
    if need_p:
        if use_logged:
            out.propensity = logged_propensity(data.propensity_logged, prop.clip_min, f"{data.where}: propensity_logged")
            raw = np.asarray(data.propensity_logged, dtype=float)[train_rows]
            out.diagnostics["propensity"] = diagnostics(raw, data.observed[train_rows], prop.clip_min, "logged")
        else:
            model = PropensityModel(prop.model, prop.folds, prop.clip_min, prop.c, prop.seed)
            model.fit(Z, data.observed, train_rows)
            raw = model.predict_raw(Z)
            raw[train_rows] = model.oof_
            out.propensity = clip(raw, prop.clip_min)
            out.propensity_model = model
            out.diagnostics["propensity"] = diagnostics(model.oof_, data.observed[train_rows],
                                                        prop.clip_min, f"{prop.model}, {prop.folds}-fold cross-fitted")
            trust = propensity_trust(data.observed[train_rows], model.oof_, data.feedback[train_rows], prop.clip_min)
            out.diagnostics["propensity_trust"] = trust
            if trust_warning(trust):
                warnings.warn(trust_warning(trust), stacklevel=2)
    if need_h:
        seen = np.flatnonzero(data.train & data.observed)
        h = CrossFitClassifier(noise.model, prop.folds, noise.c, prop.seed).fit(Z, data.feedback[seen], seen)
        score = h.predict(Z)
        score[seen] = h.oof_
        out.noisy_score, out.feedback_model = score, h
        from sklearn.metrics import roc_auc_score
        out.diagnostics["feedback_model"] = {
            "model": noise.model, "rows": int(len(seen)), "positive_rate": float(data.feedback[seen].mean()),
            "oof_auc": float(roc_auc_score(data.feedback[seen], h.oof_)),
            "c": [getattr(m, "c_", None) for m in h.models_],
            "oof_quantiles": {str(q): float(np.quantile(h.oof_, q)) for q in (0.01, 0.03, 0.5, 0.97, 0.99)}}
    if need_rates:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            scores = out.noisy_score[data.train & data.observed] if out.noisy_score is not None else None
            out.rates = resolve_rates(noise.rho_pos, noise.rho_neg, scores, noise.q)
        messages = [str(w.message) for w in caught]
        if out.rates.source == "anchors":
            weak = weak_anchor_warning(out.diagnostics["feedback_model"]["oof_auc"])
            messages += [weak] if weak else []
        for message in messages:
            warnings.warn(message, stacklevel=2)
        out.diagnostics["noise"] = {"rho_pos": out.rates.rho_pos, "rho_neg": out.rates.rho_neg,
                                    "d": out.rates.d, "source": out.rates.source, "q": noise.q,
                                    "warning": "; ".join(messages) or None}
    return out


def _fit_implicit(data: FitInputs, params: FitParams, methods: list[Method]) -> Nuisance:
    """Implicit mode: the PU quantities (and the action classifier, saved as the feedback model)."""
    prop = params.propensity
    out = Nuisance()
    out.features = Features(prop.pca_dim, tuple(prop.covariates), prop.seed).fit(
        data.X, data.columns, np.flatnonzero(data.train))
    out.pu = fit_pu(data, out.features.transform(data.X, data.columns), params, methods)
    out.feedback_model = out.pu.model
    if out.pu.model is None:
        out.features = None
    out.diagnostics["pu"] = out.pu.diagnostics
    return out


def imputation_target(method: Method, configured: str) -> str | None:
    """What ``method`` imputes: nothing, the configured target, or — for plain dr, which knows
    nothing of noise — the noisy label it also trains on."""
    if not method.needs_imputation:
        return None
    return configured if method.needs_rates else "noisy"


def method_rows(data: FitInputs, nuisance: Nuisance, method: Method, configured_target: str = "clean"
                ) -> tuple[RiskRows, RiskRows]:
    """The method's per-row coefficients on the train and val splits (non-zero rows only)."""
    imputed = None
    target = imputation_target(method, configured_target)
    if target is not None:
        imputed = impute(nuisance.noisy_score, target, nuisance.rates)
    pu = nuisance.pu or PUNuisance()
    rows = RowInputs(data.observed, data.feedback, nuisance.propensity, imputed,
                     nuisance.rates.rho_pos if nuisance.rates else None,
                     nuisance.rates.rho_neg if nuisance.rates else None,
                     split=data.split, labelling=pu.labelling, c=pu.c, prior=pu.prior, misclick=pu.misclick)
    a1, a0 = method.coefficients(rows)
    out = []
    for mask in (data.train, data.val):
        idx = np.flatnonzero(mask)
        out.append(RiskRows.select(idx, a1[idx], a0[idx]))
    return out[0], out[1]


def fit_method(data: FitInputs, nuisance: Nuisance, method: Method, params: FitParams,
               progress: bool = False):
    """Train ``method``'s head; returns ``(model, TrainResult)``."""
    train, val = method_rows(data, nuisance, method, params.imputation.target)
    return train_head(data.X, train, val, params.head, method_guard(method, params.guard),
                      progress=progress, desc=method.name)


def method_guard(method: Method, guard):
    """fit.guard, unless the method fixes it (upu trains plain, nnpu guarded, by definition)."""
    if method.guard is None:
        return guard
    return dataclasses.replace(guard, nonnegative=method.guard == "nonnegative")


def fit_arrays(data: FitInputs, params: FitParams, methods: list[Method], progress: bool = False
               ) -> tuple[Nuisance, dict[str, tuple[object, TrainResult]]]:
    """Nuisance once, then each method's head: ``(nuisance, {name: (model, result)})``."""
    nuisance = fit_nuisance(data, params, methods)
    return nuisance, {m.name: fit_method(data, nuisance, m, params, progress) for m in methods}
