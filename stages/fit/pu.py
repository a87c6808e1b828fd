"""Implicit mode's nuisance quantities (METHOD.md, "Implicit feedback"): what must be known or
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
- ``e(x)`` (sar, sar_noise): from ``propensity_logged`` (clipped to ``[clip_min, 1]`` like p̂).
  rmpipe does not estimate a per-row ``e`` from clicks alone: without labels it is identified
  only under further assumptions, which a user should state by logging it.
- ``rho_neg`` (sar_noise): mis-click rate, given, or the anchor estimate: the ``q`` quantile of
  ``g`` on train rows (where ``P(y=1 | x) ≈ 0``, ``g = rho_neg``).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from pipeline.config import FitParams
from pipeline.errors import RmpipeError
from stages.fit.nuisance import CrossFitClassifier
from stages.fit.propensity import logged_propensity


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
    if need["labelling"]:
        logged = data.propensity_logged
        if logged is None or np.isnan(np.asarray(logged, dtype=float)).all():
            names = [m.name for m in methods if m.needs_labelling]
            raise RmpipeError(f"{data.where}: method {names[0]} needs the labelling propensity e(x) = "
                              "P(act | good response) in a propensity_logged column; without it use "
                              "scar (constant e) or upu/nnpu (a known class prior)")
        out.labelling = logged_propensity(logged, prop.clip_min, f"{data.where}: propensity_logged")
        raw = np.asarray(logged, dtype=float)[tr]
        diag["labelling"] = {"source": "propensity_logged", "clip_min": prop.clip_min,
                             "mean": float(raw.mean()), "share_clipped": float(np.mean(raw < prop.clip_min))}
    if need["misclick"]:
        if pu.rho_neg is not None:
            out.misclick, source = float(pu.rho_neg), "given (fit.pu.rho_neg)"
        else:
            out.misclick = float(np.quantile(out.score[tr], pu.q))
            source = f"anchor: the {pu.q} quantile of g(x) on train rows"
        diag["misclick"] = {"value": out.misclick, "source": source}
    out.diagnostics = diag
    return out
