"""Implicit mode's nuisance quantities (docs/method.md, "Implicit feedback"): what must be known or
estimated about the labelling mechanism, fitted once on the train split, then frozen.

With no mis-clicks ``P(a = 1 | x) = e(x) · P(y = 1 | x)``: a classifier of the action alone
cannot tell a rarely acted-on good response from a bad one, so each method leans on one
quantity, given in params or estimated here under a stated assumption:

- ``c`` (scar): constant labelling frequency. Estimate: Elkan & Noto's e1 — fit a calibrated
  classifier ``g(x) ≈ P(a = 1 | x)`` on the train split (cross-fitted logistic, C by
  cross-validated log loss) and average it over the *acted validation rows* (held out from
  ``g``'s fit). Exact when positives and negatives do not overlap (``g = c`` on positives);
  with overlap ``g = c · P(y=1 | x) < c`` there, so ``ĉ`` runs low and ``π̂`` high.
- ``π`` (upu, nnpu): class prior. Estimate: ``π̂ = P̂(a = 1) / ĉ`` on the train split (Elkan & Noto).
- ``e(x)`` (sar, sar_noise): from ``propensity_logged`` (clipped to ``[clip_min, 1]`` like p̂),
  or, without one (or with ``fit.propensity.use_logged: false``), from the columns named in
  ``fit.pu.propensity_columns`` by Bekker, Robberechts & Davis's SAR-EM (:class:`LabellingEM`).
  From ``(x, a)`` alone ``e`` is not identified (``P(a=1|x) = e·η`` splits any way); SAR-EM
  assumes the labelling depends only on those *propensity attributes* ``x_e`` and that both
  ``e(x_e)`` and ``η(x) = P(y=1|x)`` are logistic, and it fits them jointly by EM.
- ``rho_neg`` (sar_noise): mis-click rate, given, or the anchor estimate: the ``q`` quantile of
  ``g`` on train rows (where ``P(y=1 | x) ≈ 0``, ``g = rho_neg``).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from pipeline.config import FitParams
from pipeline.errors import RmpipeError
from pipeline.nuisance import CrossFitClassifier, Features, LogisticClassifier
from stages.fit.propensity import clip, logged_propensity


@dataclass
class PUNuisance:
    """The frozen quantities, where each came from, and the action classifier ``g``."""

    c: float | None = None
    prior: float | None = None
    misclick: float | None = None
    labelling: np.ndarray | None = None  # clipped e(x), every input row
    score: np.ndarray | None = None  # g(x): out-of-fold on train rows, fold mean elsewhere
    model: CrossFitClassifier | None = None
    diagnostics: dict = field(default_factory=dict)


class LabellingEM:
    """SAR-EM (Bekker, Robberechts & Davis 2019, "Beyond the Selected Completely At Random
    Assumption for Learning from Positive and Unlabeled Data"): ``P(a=1 | x) = η(x)·e(x_e)``
    (+ ``ρ·(1 − η)`` with mis-clicks at ``ρ``), a logistic class model ``η`` on the features
    ``Z`` and a logistic labelling model ``e`` on the propensity attributes ``W``.

    E-step: each row's ``r = P(y=1 | x, a)``: acted ``ηe / (ηe + (1−η)ρ)`` (1 when ``ρ = 0``),
    not acted ``η(1−e) / (η(1−e) + (1−η)(1−ρ))``. M-step: ``η`` by weighted logistic
    regression (each row a positive with weight ``r``, a negative with ``1 − r``); ``e`` by
    logistic regression of ``a`` on ``W`` over the rows weighted by ``r`` (the expected
    positives). Start: ``η`` from a classifier of ``a`` scaled by Elkan & Noto's ``c``, ``e = c``.
    Identified only through the assumption that ``e`` varies with ``W`` alone: a click rate that
    moves with ``W`` among rows of the same ``η`` is read as labelling, not quality."""

    def __init__(self, misclick: float = 0.0, max_iter: int = 100, tol: float = 1e-6, seed: int = 0):
        self.misclick = misclick
        self.max_iter = max_iter
        self.tol = tol
        self.seed = seed

    def fit(self, Z: np.ndarray, W: np.ndarray, a: np.ndarray) -> "LabellingEM":
        import warnings

        from sklearn.exceptions import ConvergenceWarning
        from sklearn.linear_model import LogisticRegression

        a = np.asarray(a).astype(int)
        acted, rho = a == 1, self.misclick
        g = LogisticClassifier(c=None, seed=self.seed).fit(Z, a)  # C by cross-validated log loss
        self.c_class_ = g.c_
        Zs = ((Z - g.mean_) / g.scale_).astype(np.float64)
        self.w_mean_, self.w_scale_ = W.mean(axis=0), np.where(W.std(axis=0) > 1e-12, W.std(axis=0), 1.0)
        Ws = (W - self.w_mean_) / self.w_scale_
        score = g.predict_proba(Z)
        c0 = float(np.clip(score[acted].mean(), 1e-3, 1.0))
        eta, e = np.clip(score / c0, 1e-4, 1 - 1e-4), np.full(len(a), c0)
        cls = LogisticRegression(C=self.c_class_, max_iter=300, warm_start=True, random_state=self.seed)
        lab = LogisticRegression(C=1e4, max_iter=300, warm_start=True, random_state=self.seed)
        Z2, y2 = np.vstack([Zs, Zs]), np.r_[np.ones(len(a)), np.zeros(len(a))]
        self.loglik_, previous = [], -np.inf
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            for _ in range(self.max_iter):
                pos = np.where(acted, eta * e, eta * (1 - e))
                neg = (1 - eta) * np.where(acted, rho, 1 - rho)
                r = pos / np.maximum(pos + neg, 1e-300)
                cls.fit(Z2, y2, sample_weight=np.r_[r, 1 - r] + 1e-12)
                lab.fit(Ws, a, sample_weight=r + 1e-12)
                eta = np.clip(cls.predict_proba(Zs)[:, 1], 1e-6, 1 - 1e-6)
                e = np.clip(lab.predict_proba(Ws)[:, 1], 1e-6, 1.0)
                p_act = eta * e + (1 - eta) * rho
                ll = float(np.where(acted, np.log(p_act), np.log1p(-np.minimum(p_act, 1 - 1e-12))).mean())
                self.loglik_.append(ll)
                if ll - previous < self.tol:
                    break
                previous = ll
        self.coef_, self.intercept_ = lab.coef_.ravel() / self.w_scale_, float(lab.intercept_[0])
        self.intercept_ -= float(self.coef_ @ self.w_mean_)
        self.prior_ = float(eta.mean())
        self.iterations_ = len(self.loglik_)
        return self

    def predict(self, W: np.ndarray) -> np.ndarray:
        """``e(x_e)``, unclipped."""
        return 1.0 / (1.0 + np.exp(-(W @ self.coef_ + self.intercept_)))


def needs(methods) -> dict[str, bool]:
    return {k: any(getattr(m, f"needs_{k}") for m in methods) for k in ("c", "prior", "labelling", "misclick")}


def elkan_noto_c(g_val_acted: np.ndarray) -> float:
    """e1: the mean held-out score over acted rows."""
    if len(g_val_acted) == 0:
        raise RmpipeError("scar/upu: no acted rows in the val split to estimate the labelling "
                          "frequency c on (give fit.pu.c or fit.pu.prior)")
    return float(np.mean(g_val_acted))


def fit_pu(data, Z, params: FitParams, methods) -> PUNuisance:
    """Everything ``methods`` need, from ``data`` (FitInputs, implicit) and features ``Z``."""
    pu, prop = params.pu, params.propensity
    need = needs(methods)
    out = PUNuisance()
    a = data.feedback.astype(int)
    tr, va = data.train, data.val
    acted_rate = float(a[tr].mean())
    diag = {"acted_rate_train": acted_rate, "acted_rate_val": float(a[va].mean()) if va.any() else None}
    need_c = need["c"] or (need["prior"] and pu.prior is None)
    need_g = (need_c and pu.c is None) or (need["misclick"] and pu.rho_neg is None)
    if need_g:
        rows = np.flatnonzero(tr)
        g = CrossFitClassifier(pu.model, prop.folds, None, prop.seed).fit(Z, a[rows], rows)
        score = g.predict(Z)
        score[rows] = g.oof_
        out.score, out.model = score, g
        from sklearn.metrics import roc_auc_score

        diag["action_model"] = {"model": pu.model, "rows": int(len(rows)),
                                "oof_auc": float(roc_auc_score(a[rows], g.oof_)),
                                "c": [getattr(m, "c_", None) for m in g.models_],
                                "what": "g(x) ≈ P(a = 1 | x), cross-fitted on the train split"}
    if need_c:
        if pu.c is not None:
            out.c, source = float(pu.c), "given (fit.pu.c)"
        else:
            out.c = elkan_noto_c(out.score[va & (a == 1)])
            source = "Elkan & Noto e1: mean held-out g(x) over acted val rows"
        diag["c"] = {"value": out.c, "source": source}
    if need["prior"]:
        if pu.prior is not None:
            out.prior, source = float(pu.prior), "given (fit.pu.prior)"
        else:
            out.prior, source = min(1.0, acted_rate / out.c), "P(a = 1) / c on the train split (Elkan & Noto)"
        if out.prior < acted_rate:
            raise RmpipeError(f"fit.pu.prior {out.prior:g} is below the acted rate {acted_rate:.4f}: "
                              "more rows were acted on than can be good")
        diag["prior"] = {"value": out.prior, "source": source}
    if need["misclick"]:
        if pu.rho_neg is not None:
            out.misclick, source = float(pu.rho_neg), "given (fit.pu.rho_neg)"
        else:
            out.misclick = float(np.quantile(out.score[tr], pu.q))
            source = f"anchor: the {pu.q} quantile of g(x) on train rows"
        diag["misclick"] = {"value": out.misclick, "source": source}
    if need["labelling"]:
        out.labelling, diag["labelling"] = labelling(data, Z, params, methods, out.misclick or 0.0)
    out.diagnostics = diag
    return out


def labelling(data, Z, params: FitParams, methods, misclick: float) -> tuple[np.ndarray, dict]:
    """Clipped ``e(x)`` for every row and where it came from: ``propensity_logged`` where there
    is one (and fit.propensity.use_logged), else SAR-EM on ``fit.pu.propensity_columns``."""
    prop, columns = params.propensity, params.pu.propensity_columns
    logged = data.propensity_logged
    has_logged = logged is not None and not np.isnan(np.asarray(logged, dtype=float)).all()
    if has_logged and (prop.use_logged or not columns):
        e = logged_propensity(logged, prop.clip_min, f"{data.where}: propensity_logged")
        raw = np.asarray(logged, dtype=float)[data.train]
        return e, {"source": "propensity_logged", "clip_min": prop.clip_min, "mean": float(raw.mean()),
                   "share_clipped": float(np.mean(raw < prop.clip_min))}
    name = next(m.name for m in methods if m.needs_labelling)
    if not columns:
        raise RmpipeError(f"{data.where}: method {name} needs the labelling propensity e(x) = P(act | good "
                          "response): a propensity_logged column, or the columns it depends on in "
                          "fit.pu.propensity_columns (to estimate it by SAR-EM); without either use "
                          "scar (constant e) or upu/nnpu (a known class prior)")
    missing = [c for c in columns if c not in data.columns]
    if missing:
        raise RmpipeError(f"{data.where}: column {missing[0]} (fit.pu.propensity_columns) is not in the table")
    tr = np.flatnonzero(data.train)
    attrs = Features(None, tuple(columns)).fit(np.empty((len(data.X), 0), np.float32), data.columns, tr)
    W = attrs.transform(np.empty((len(data.X), 0), np.float32), data.columns).astype(np.float64)
    bad = ~np.isfinite(W).all(axis=1)
    if bad.any():
        i = int(np.argmax(bad))
        row = f"pair_id {data.ids[i]}" if data.ids is not None else f"row {i}"
        raise RmpipeError(f"{data.where}: {row}: a missing or non-finite value in fit.pu.propensity_columns "
                          f"{list(columns)} ({int(bad.sum())} row(s) in all)")
    em = LabellingEM(misclick, seed=prop.seed).fit(Z[tr], W[tr], data.feedback[tr])
    raw = em.predict(W)
    return clip(raw, prop.clip_min), {
        "source": f"SAR-EM (Bekker et al. 2019) on fit.pu.propensity_columns {list(columns)}",
        "assumes": "e depends on those columns alone; e and P(y=1|x) logistic",
        "clip_min": prop.clip_min, "mean": float(raw[tr].mean()),
        "mean_acted": float(raw[tr][data.feedback[tr] == 1].mean()),
        "share_clipped": float(np.mean(raw[tr] < prop.clip_min)), "misclick": misclick,
        "em_iterations": em.iterations_, "em_prior": em.prior_,
        "coef": dict(zip(attrs_names(attrs), map(float, em.coef_))), "intercept": em.intercept_}


def attrs_names(attrs: Features) -> list[str]:
    """The labelling model's inputs: a number column by name, a text column per category."""
    return [n if c is None else f"{n}={c}" for n in attrs.covariates for c in attrs.categories_.get(n, [None])]
