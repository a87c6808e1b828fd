"""Stage two on arrays: check the inputs, fit the nuisance models once, then one head a method.

Order (docs/method.md): nuisance models first — propensity ``p̂`` on all training rows, the feedback
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
from stages.fit.audit import AuditPropensity, label_selection, label_selection_warning, platt
from stages.fit.imputation import impute
from stages.fit.methods import Method, RowInputs, check_kind
from stages.fit.noise import NoiseRates, resolve_rates, weak_anchor_warning
from pipeline.nuisance import CrossFitClassifier, Features
from stages.fit.propensity import (PropensityModel, clip, diagnostics, logged_propensity,
                                   propensity_trust, trust_warning)
from stages.fit.pu import PUNuisance, fit_pu
from stages.fit.train import RiskRows, TrainResult, train_head

NUISANCE_BYTES = 2.5 * 2**30  # the nuisance features of a streamed store at most (docs/scale.md)
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
    audit: np.ndarray | None = None  # rows of a randomised audit (stages.fit.audit)

    def __post_init__(self):
        self.split = np.asarray(self.split).astype(str)
        self.observed = np.asarray(self.observed, dtype=bool)
        if self.audit is not None:
            self.audit = np.asarray(self.audit, dtype=bool)
            if len(self.audit) != len(self.observed):
                raise RmpipeError(f"{self.where}: dimension mismatch: {len(self.observed)} rows but "
                                  f"{len(self.audit)} values of audit")
            if (self.audit & ~self.observed).any():
                raise RmpipeError(f"{self.where}: an audit row must be observed (its feedback was asked for)")
            self.audit = self.audit if self.audit.any() else None
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
        bad = ~np.isfinite(self.X).all(axis=1) if isinstance(self.X, np.ndarray) \
            else np.zeros(n, dtype=bool)  # a StoreMatrix checks each shard as it reads it
        if bad.any():
            i = int(np.argmax(bad))
            name = f"pair_id {self.ids[i]}" if self.ids is not None else f"row {i}"
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
        if self.audit is not None:
            seen = seen & ~self.audit  # the logs; an audit alone is audit_only's business
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

    @property
    def logs(self) -> np.ndarray:
        """Rows of the self-selected logs (not audit rows)."""
        return np.ones(len(self.split), dtype=bool) if self.audit is None else ~self.audit


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
    class_propensity: tuple[np.ndarray, np.ndarray] | None = None  # (π(x,1), π(x,0)) from an audit
    audit_model: AuditPropensity | None = None


def nuisance_dim(X, pca_dim: int | None) -> int | None:
    """``fit.propensity.pca_dim``; or, for embeddings streamed from the store, the widest
    projection (a multiple of 8) whose N × k float32 fits ``NUISANCE_BYTES`` — none at all when
    the raw embeddings fit, so a streamed fit's nuisance models are the loaded fit's."""
    if pca_dim is not None or isinstance(X, np.ndarray):
        return pca_dim
    k = int(NUISANCE_BYTES // max(len(X) * 4, 1)) // 8 * 8
    return None if k >= X.shape[1] else max(k, 8)


def dense(Z):
    """The nuisance features as an array: a streamed store's, within ``NUISANCE_BYTES``."""
    return Z if isinstance(Z, np.ndarray) else Z[:]


def fit_nuisance(data: FitInputs, params: FitParams, methods: list[Method]) -> Nuisance:
    """Fit what ``methods`` need, once, on the train split; predict it for every row."""
    prop, noise = params.propensity, params.noise
    check_kind(methods, data.kind, data.where)
    if data.kind == "implicit":
        return _fit_implicit(data, params, methods)
    by_audit = prop.model == "audit"
    need_p = any(m.needs_propensity for m in methods)
    audit_risk = (params.audit.select or params.audit.calibrate) and params.audit.labels == "noisy"
    need_rates = any(m.needs_rates for m in methods) or (need_p and by_audit) or audit_risk
    need_h = any(m.needs_imputation for m in methods) or (need_rates and noise.rho_pos is None)
    if by_audit and need_p and data.audit is None:
        raise RmpipeError(f"{data.where}: fit.propensity.model audit needs audit rows (a true `audit` "
                          "column) in the train split, and the table has none")
    out = Nuisance()
    train_rows = np.flatnonzero(data.train & data.logs)  # audit rows are not self-selected
    use_logged = prop.use_logged and data.propensity_logged is not None \
        and not np.isnan(np.asarray(data.propensity_logged, dtype=float)).all()
    if (need_p and not use_logged) or need_h:
        missing = [c for c in prop.covariates if c not in data.columns]
        if missing:
            raise RmpipeError(f"{data.where}: covariate column {missing[0]} (fit.propensity.covariates) "
                              "is not in the table")
        out.features = Features(nuisance_dim(data.X, prop.pca_dim), tuple(prop.covariates), prop.seed).fit(
            data.X, data.columns, train_rows)
        Z = dense(out.features.transform(data.X, data.columns))
        if hasattr(data.X, "release"):
            data.X.release()  # a streamed store: the nuisance fits need Z, not the cached shards
    if need_p and by_audit:
        pass  # after the noise rates, which the Bayes identity needs
    elif need_p:
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
        seen = np.flatnonzero(data.train & data.observed & data.logs)
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
            scores = out.noisy_score[data.train & data.observed & data.logs] if out.noisy_score is not None else None
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
    if need_p and by_audit:
        Z = Z if out.features is not None else dense(data.X)  # the nuisance features, computed above
        a = params.audit
        model = AuditPropensity(a.strata, a.k, tuple(a.covariates), a.smoothing, a.labels, prop.clip_min, prop.seed)
        model.fit(Z, data.columns, data.observed, data.feedback, data.audit, np.flatnonzero(data.train),
                  out.rates.rho_pos, out.rates.rho_neg)
        pi1, pi0 = model.predict(Z, data.columns)
        out.class_propensity = (np.where(data.audit, 1.0, pi1), np.where(data.audit, 1.0, pi0))
        out.audit_model = model
        out.diagnostics["audit_propensity"] = model.diagnostics(int((data.audit & data.val).sum()))
    if data.audit is not None:
        check = label_selection(data.observed, data.feedback, data.audit, np.flatnonzero(data.train),
                                check_strata(data, out, params, Z if out.features is not None else None))
        out.diagnostics["label_selection"] = check
        warning = label_selection_warning(check, prop.model if need_p else "audit")
        if warning:
            warnings.warn(warning, stacklevel=2)
    return out


def check_strata(data: FitInputs, out: Nuisance, params: FitParams, Z) -> np.ndarray | None:
    """Each row's stratum for the label-selection check: the audit propensity's, or — when it is
    not in use — the same kind of strata fitted for the check alone (fit.audit); None without
    nuisance features to cluster."""
    a = params.audit
    model = out.audit_model
    if model is None:
        if Z is None and a.strata == "kmeans":
            return None
        model = AuditPropensity(a.strata, a.k, tuple(a.covariates), seed=params.propensity.seed).fit_strata(
            Z, data.columns, np.flatnonzero(data.train), int((data.audit & data.train).sum()))
    return model.assign(Z if Z is not None else data.X, data.columns)


def _fit_implicit(data: FitInputs, params: FitParams, methods: list[Method]) -> Nuisance:
    """Implicit mode: the PU quantities (and the action classifier, saved as the feedback model)."""
    prop = params.propensity
    out = Nuisance()
    out.features = Features(nuisance_dim(data.X, prop.pca_dim), tuple(prop.covariates), prop.seed).fit(
        data.X, data.columns, np.flatnonzero(data.train))
    out.pu = fit_pu(data, dense(out.features.transform(data.X, data.columns)), params, methods)
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


def method_rows(data: FitInputs, nuisance: Nuisance, method: Method, configured_target: str = "clean",
                audit_labels: str = "noisy") -> tuple[RiskRows, RiskRows]:
    """The method's per-row coefficients on the train and val splits (non-zero rows only)."""
    imputed = None
    target = imputation_target(method, configured_target)
    if target is not None:
        imputed = impute(nuisance.noisy_score, target, nuisance.rates)
    pu = nuisance.pu or PUNuisance()
    rows = RowInputs(data.observed, data.feedback, nuisance.propensity, imputed,
                     nuisance.rates.rho_pos if nuisance.rates else None,
                     nuisance.rates.rho_neg if nuisance.rates else None,
                     split=data.split, labelling=pu.labelling, c=pu.c, prior=pu.prior, misclick=pu.misclick,
                     audit=data.audit, audit_clean=audit_labels == "clean",
                     class_propensity=nuisance.class_propensity if method.needs_propensity else None)
    a1, a0 = method.coefficients(rows)
    out = []
    for mask in (data.train, data.val):
        idx = np.flatnonzero(mask)
        out.append(RiskRows.select(idx, a1[idx], a0[idx]))
    return out[0], out[1]


def audit_rows(data: FitInputs, nuisance: Nuisance, labels: str, split: str = "val") -> RiskRows:
    """The audit rows of ``split`` with the clean risk's coefficients — noise-corrected when
    users answered the audit, plain when annotators did: an unbiased risk for any head, used to
    stop, choose and calibrate (docs/audit.md)."""
    from stages.fit.methods import AuditOnly

    if data.audit is None or not (data.audit & (data.split == split)).any():
        raise RmpipeError(f"{data.where}: fit.audit.select and fit.audit.calibrate need audit rows in the "
                          f"{split} split, and there are none")
    rates = nuisance.rates
    if rates is None and labels == "noisy":
        raise RmpipeError(f"{data.where}: the audit's noise-corrected risk needs noise rates (fit.noise)")
    rows = RowInputs(data.observed, data.feedback, rho_pos=rates.rho_pos if rates else 0.0,
                     rho_neg=rates.rho_neg if rates else 0.0, audit=data.audit, audit_clean=labels == "clean")
    a1, a0 = AuditOnly().coefficients(rows)
    idx = np.flatnonzero(data.split == split)
    return RiskRows.select(idx, a1[idx], a0[idx])


def fit_method(data: FitInputs, nuisance: Nuisance, method: Method, params: FitParams,
               progress: bool = False):
    """Train ``method``'s head; returns ``(model, TrainResult)``. With ``fit.audit.select`` the
    head stops on the val audit rows' risk, with ``fit.audit.calibrate`` it is Platt-scaled on
    them (folded into its output layer, so export and serve need nothing new)."""
    audit = params.audit
    train, val = method_rows(data, nuisance, method, params.imputation.target, audit.labels)
    audited = None  # the val audit rows' risk, built once for stopping, calibrating and choosing
    if audit.select or audit.calibrate or (data.audit is not None and (data.audit & data.val).any()
                                           and (nuisance.rates or audit.labels == "clean")):
        audited = audit_rows(data, nuisance, audit.labels)
    model, result = train_head(data.X, train, audited if audit.select else val, params.head,
                               method_guard(method, params.guard), progress=progress, desc=method.name)
    if audit.calibrate:
        calibrate(model, data.X, audited, audit.labels, result)
    if audited is not None:
        result.val_audit_risk = audit_risk(model, data.X, audited)
    return model, result


def audit_risk(model, X: np.ndarray, audited: RiskRows) -> float:
    """A head's guarded risk on the val audit rows (:func:`audit_rows`): unbiased for every head
    whatever its method, so comparable across methods — the audit's way to choose one without
    clean labels."""
    import torch

    from stages.fit.losses import guarded_risk
    from stages.fit.train import validation_risk

    return guarded_risk(*validation_risk(model, torch.as_tensor(X) if isinstance(X, np.ndarray) else X, audited))


def calibrate(model, X: np.ndarray, rows: RiskRows, labels: str, result: TrainResult) -> None:
    """Platt-scale ``model`` on the val audit rows (:func:`stages.fit.audit.platt`), in place."""
    f = model.logits(X[rows.rows]).numpy()
    a, b = platt(f, rows.a1, rows.a0)
    model.scale_output(a, b)
    result.calibration = {"a": a, "b": b, "rows": int(len(rows.rows)), "on": "val audit rows",
                          "labels": labels}


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
