"""A label-dependent propensity from a randomised audit (docs/audit.md).

Users give feedback on what they feel strongly about, so ``o`` depends on the label itself:
``π(x, y) = P(o = 1 | x, y)``. A classifier of ``o`` on the embedding sees only
``P(o = 1 | x)``; a small uniform random sample of rows whose feedback was asked for regardless
of the user's choice (the *audit*) identifies the rest by Bayes' rule (Schnabel et al. 2016's
naive-Bayes propensity; per stratum as in Huang et al. 2024)::

    π(s, y) = P(o = 1 | s) · P(y | o = 1, s) / P_audit(y | s)

with strata ``s(x)`` (one; k-means of the nuisance features; or the values of named columns).
``P(y = 1 | o = 1, s) = (P(ỹ = 1 | o = 1, s) − rho_neg) / d`` undoes the users' flips; so does
``P_audit`` when the audit's answers come from users (``labels: noisy``), not from annotators.
Every rate is shrunk toward its global value by ``smoothing`` pseudo-rows, so a stratum the audit
barely touches falls back on the global ``π(·, y)``. Exact for selection that depends on ``y`` and
the stratum only; biased when it depends on what the strata miss (tests/stages/fit/test_audit.py).

Audit rows are never part of the self-selected logs: they are left out of every rate but
``P_audit``, and enter the losses as fully observed rows (``π = 1``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from pipeline.errors import RmpipeError

PER_STRATUM = 50  # train audit rows per k-means stratum when k is not given
MAX_STRATA = 20
EPS = 1e-3  # a class share estimated at 0 or 1 would make π infinite or 0


@dataclass
class AuditPropensity:
    """``π(s, 1)`` and ``π(s, 0)`` per stratum, fitted on the train rows; scikit-learn shape
    (settings in the constructor, what was learned ends in ``_``)."""

    strata: str = "kmeans"
    k: int | None = None
    covariates: tuple[str, ...] = ()
    smoothing: float = 20.0
    labels: str = "noisy"
    clip_min: float = 0.1
    seed: int = 0

    def fit(self, Z: np.ndarray, columns: dict, observed: np.ndarray, feedback: np.ndarray,
            audit: np.ndarray, rows: np.ndarray, rho_pos: float, rho_neg: float) -> "AuditPropensity":
        """``rows``: the train rows (indices); ``audit`` marks audit rows among all rows."""
        observed, audit = np.asarray(observed, bool), np.asarray(audit, bool)
        feedback = np.asarray(feedback, dtype=float)
        in_rows = np.zeros(len(observed), dtype=bool)
        in_rows[rows] = True
        a_rows, logs = in_rows & audit, in_rows & ~audit
        if not a_rows.any():
            raise RmpipeError("fit.propensity.model audit needs audit rows (a true `audit` column) in "
                              "the train split, and the table has none")
        self.rho_pos_, self.rho_neg_ = rho_pos, rho_neg
        self.fit_strata(Z, columns, rows, int(a_rows.sum()))
        s = self.assign(Z, columns)
        seen = logs & observed
        glob = {"obs": observed[logs].mean(), "pos": feedback[seen].mean() if seen.any() else 0.5,
                "audit": feedback[a_rows].mean()}
        table = []
        for j in range(self.n_strata_):
            m = s == j
            table.append(self._stratum(j, m & logs, m & seen, m & a_rows, feedback, glob))
        self.table_ = table
        self.global_ = self._stratum(-1, logs, seen, a_rows, feedback, glob)
        self.pi1_ = np.array([t["pi1"] for t in table])
        self.pi0_ = np.array([t["pi0"] for t in table])
        return self

    def fit_strata(self, Z, columns, rows, n_audit: int) -> "AuditPropensity":
        """The strata alone (enough to ``assign``), fitted on ``rows``; ``n_audit`` sets k-means' k."""
        if self.strata == "none":
            self.n_strata_, self.centers_, self.levels_ = 1, None, None
        elif self.strata == "covariates":
            missing = [c for c in self.covariates if c not in columns]
            if missing:
                raise RmpipeError(f"fit.audit.covariates: column {missing[0]} is not in the table")
            keys = self._keys(columns)
            self.levels_ = sorted(set(keys[rows]))
            self.n_strata_, self.centers_ = len(self.levels_), None
        else:
            from sklearn.cluster import KMeans

            k = self.k or max(1, min(MAX_STRATA, n_audit // PER_STRATUM))
            k = min(k, len(rows))
            rng = np.random.default_rng(self.seed)
            sample = np.sort(rng.choice(rows, size=min(len(rows), 20000), replace=False))
            km = KMeans(n_clusters=k, n_init=4, random_state=self.seed).fit(np.asarray(Z[sample], dtype=np.float64))
            self.n_strata_, self.centers_, self.levels_ = k, km.cluster_centers_.astype(np.float32), None
        return self

    @classmethod
    def restore(cls, saved: dict) -> "AuditPropensity":
        """The strata alone (enough to ``assign``), from what ``pipeline.heads`` saved with a head."""
        model = cls(strata=saved["strata"], covariates=tuple(saved["covariates"]))
        model.n_strata_, model.centers_, model.levels_ = saved["k"], saved["centers"], saved["levels"]
        return model

    def _keys(self, columns) -> np.ndarray:
        parts = [np.asarray(columns[c]).astype(str) for c in self.covariates]
        return np.array(["|".join(t) for t in zip(*parts)], dtype=object)

    def assign(self, Z: np.ndarray, columns: dict) -> np.ndarray:
        """Each row's stratum (0..n_strata_-1; -1 for a covariate value unseen in training: the
        global rates)."""
        n = len(Z)
        if self.strata == "none":
            return np.zeros(n, dtype=int)
        if self.strata == "covariates":
            index = {v: i for i, v in enumerate(self.levels_)}
            return np.array([index.get(v, -1) for v in self._keys(columns)], dtype=int)
        out = np.empty(n, dtype=int)
        for s in range(0, n, 8192):
            z = np.asarray(Z[s:s + 8192], dtype=np.float32)
            d = (z ** 2).sum(1)[:, None] - 2 * z @ self.centers_.T + (self.centers_ ** 2).sum(1)[None]
            out[s:s + 8192] = d.argmin(1)
        return out

    def _stratum(self, j, logs, seen, audited, feedback, glob) -> dict:
        m, d = self.smoothing, 1.0 - self.rho_pos_ - self.rho_neg_

        def shrunk(hits: float, n: int, prior: float) -> float:
            return (hits + m * prior) / (n + m) if n + m > 0 else prior

        p_obs = shrunk(seen.sum(), int(logs.sum()), glob["obs"])
        q_obs = shrunk(feedback[seen].sum(), int(seen.sum()), glob["pos"])
        q_aud = shrunk(feedback[audited].sum(), int(audited.sum()), glob["audit"])
        eta_obs = float(np.clip((q_obs - self.rho_neg_) / d, EPS, 1 - EPS))
        eta_aud = float(np.clip((q_aud - self.rho_neg_) / d if self.labels == "noisy" else q_aud, EPS, 1 - EPS))
        raw1, raw0 = p_obs * eta_obs / eta_aud, p_obs * (1 - eta_obs) / (1 - eta_aud)
        return {"stratum": j, "log_rows": int(logs.sum()), "observed": int(seen.sum()), "audit_rows": int(audited.sum()),
                "p_observed": float(p_obs), "observed_positive": float(q_obs), "audit_positive": float(q_aud),
                "p_y1_observed": eta_obs, "p_y1_audit": eta_aud,
                "pi1_raw": float(raw1), "pi0_raw": float(raw0),
                "pi1": float(np.clip(raw1, self.clip_min, 1.0)), "pi0": float(np.clip(raw0, self.clip_min, 1.0)),
                "label_selection_z": _two_share_z(feedback[seen], feedback[audited])}

    def predict(self, Z: np.ndarray, columns: dict) -> tuple[np.ndarray, np.ndarray]:
        """Clipped ``(π(x, 1), π(x, 0))`` for every row."""
        s = self.assign(Z, columns)
        pi1 = np.where(s >= 0, self.pi1_[np.maximum(s, 0)], self.global_["pi1"])
        pi0 = np.where(s >= 0, self.pi0_[np.maximum(s, 0)], self.global_["pi0"])
        return pi1, pi0

    def diagnostics(self, audit_val: int) -> dict:
        return {"strata": self.strata, "k": self.n_strata_, "labels": self.labels, "smoothing": self.smoothing,
                "audit_rows_train": self.global_["audit_rows"], "audit_rows_val": int(audit_val),
                "rho_pos": self.rho_pos_, "rho_neg": self.rho_neg_, "clip_min": self.clip_min,
                "global": self.global_, "table": self.table_,
                "share_clipped": {"pi1": float(np.mean([t["pi1_raw"] < self.clip_min for t in self.table_])),
                                  "pi0": float(np.mean([t["pi0_raw"] < self.clip_min for t in self.table_]))}}


def _two_share_z(a: np.ndarray, b: np.ndarray) -> float | None:
    """Two-proportion z statistic of ``mean(a) − mean(b)`` (None when either side is empty)."""
    if len(a) == 0 or len(b) == 0:
        return None
    p = (a.sum() + b.sum()) / (len(a) + len(b))
    se = math.sqrt(p * (1 - p) * (1 / len(a) + 1 / len(b)))
    return float((a.mean() - b.mean()) / se) if se > 0 else 0.0


# --- the label-free check an audit makes possible ---------------------------------------------
LABEL_SELECTION_Z = 2.58  # |z| of observed vs audit positive share beyond which selection follows the label


def label_selection(observed, feedback, audit, rows, strata: np.ndarray | None = None) -> dict:
    """Compare the observed (self-selected) feedback's positive share with the audit's, on the
    train rows, overall and within each stratum (``strata``: each row's, as
    :meth:`AuditPropensity.assign` gives it): the two answer the same question under the same
    noise, so a gap says the users chose *by* the label — which no propensity model of ``o`` on
    the embedding can see. A stratum is flagged beyond the Bonferroni-adjusted |z|, so k strata
    do not raise k chances of a false alarm. No clean labels needed. Returns ``{observed_positive,
    audit_positive, z, flag, reason, strata}``."""
    from scipy.stats import norm

    observed, audit = np.asarray(observed, bool), np.asarray(audit, bool)
    feedback = np.asarray(feedback, dtype=float)
    in_rows = np.zeros(len(observed), dtype=bool)
    in_rows[rows] = True
    seen, audited = in_rows & observed & ~audit, in_rows & audit
    if not audited.any() or not seen.any():
        return {"flag": False, "observed_positive": None, "audit_positive": None, "z": None, "strata": [],
                "reason": "no audit rows in the train split: " + NO_AUDIT_ADVICE}
    z = _two_share_z(feedback[seen], feedback[audited])
    pos, apos = float(feedback[seen].mean()), float(feedback[audited].mean())
    table, limit = [], None
    if strata is not None and len(np.unique(strata[in_rows])) > 1:
        ids = [int(j) for j in np.unique(strata[in_rows]) if j >= 0]
        limit = float(norm.ppf(1 - (1 - norm.cdf(LABEL_SELECTION_Z)) / max(len(ids), 1)))
        for j in ids:
            a, b = seen & (strata == j), audited & (strata == j)
            zj = _two_share_z(feedback[a], feedback[b])
            table.append({"stratum": j, "observed": int(a.sum()), "audit_rows": int(b.sum()),
                          "observed_positive": float(feedback[a].mean()) if a.any() else None,
                          "audit_positive": float(feedback[b].mean()) if b.any() else None,
                          "z": zj, "flag": bool(zj is not None and abs(zj) > limit)})
    flagged = ", ".join(str(t["stratum"]) for t in table if t["flag"])
    overall = z is not None and abs(z) > LABEL_SELECTION_Z
    flag = overall or bool(flagged)
    if overall or not flagged:
        reason = (f"the self-selected feedback is {pos:.0%} positive where the randomised audit is {apos:.0%} "
                  f"(z = {z:+.1f}, {int(audited.sum())} audit rows{f'; within strata {flagged} too' if flagged else ''})"
                  ": users chose by the label")
    else:
        reason = (f"within strata {flagged} the self-selected feedback's positive share differs from the "
                  f"randomised audit's (|z| > {limit:.2f}; overall {pos:.0%} vs {apos:.0%}): users chose by the label")
    return {"flag": bool(flag), "observed_positive": pos, "audit_positive": apos, "z": z, "strata": table,
            "strata_z_limit": limit,
            "reason": reason if flag else reason.split(":")[0] + ": no evidence that users chose by the label"}


NO_AUDIT_ADVICE = ("with none, rmpipe cannot tell whether users chose by the label; collect feedback on a "
                   "small uniform random sample of responses, mark those rows `audit: true`, and set "
                   "fit.propensity.model: audit (docs/audit.md)")


def label_selection_warning(check: dict, model: str) -> str | None:
    if not check["flag"] or model == "audit":
        return None
    return (f"{check['reason']}; a propensity model of who gave feedback cannot correct that: set "
            f"fit.propensity.model: audit to use the audit rows (docs/audit.md)")


# --- post-hoc calibration on audit rows --------------------------------------------------------
def platt(logits: np.ndarray, a1: np.ndarray, a0: np.ndarray) -> tuple[float, float]:
    """``(a, b)`` minimising ``Σ a1·ℓ(a·f + b, 1) + a0·ℓ(a·f + b, 0)`` — Platt scaling against the
    audit rows' (noise-corrected) coefficients, guarded like the heads' risk: each class part is
    kept non-negative, so noisy coefficients cannot run the fit away. ``a = exp(u) > 0``, so a
    calibration never reverses the head's ranking (a dozen val audit rows did, unconstrained),
    and a weak Gaussian prior ``(u² + b²) / 2n`` pulls a thin audit toward the identity (1, 0)."""
    import torch

    f = torch.as_tensor(np.asarray(logits, dtype=np.float64))
    c1, c0 = (torch.as_tensor(np.asarray(c, dtype=np.float64)) for c in (a1, a0))
    ub = torch.zeros(2, dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS([ub], lr=0.5, max_iter=200, line_search_fn="strong_wolfe")
    prior = 1.0 / (2 * max(len(f), 1))

    def closure():
        opt.zero_grad()
        g = torch.exp(ub[0]) * f + ub[1]
        r1 = (c1 * torch.nn.functional.softplus(-g)).mean()
        r0 = (c0 * torch.nn.functional.softplus(g)).mean()
        loss = torch.clamp(r1, min=0) + torch.clamp(r0, min=0) + prior * (ub ** 2).sum()
        loss.backward()
        return loss

    opt.step(closure)
    a, b = float(torch.exp(ub[0].detach())), float(ub[1].detach())
    if not (math.isfinite(a) and math.isfinite(b)):
        raise RmpipeError("fit.audit.calibrate: the calibration on the val audit rows did not converge")
    return a, b
