"""The randomised audit: π(s, y) by the Bayes identity, the class-weighted losses, and what
else the audit rows give (selection, calibration, the label-free check). docs/audit.md."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
import torch

from pipeline.config import AuditParams, FitParams, HeadParams, NoiseParams, PropensityParams
from pipeline.errors import RmpipeError
from stages.fit.audit import AuditPropensity, label_selection, platt
from stages.fit.core import FitInputs, fit_method, fit_nuisance
from stages.fit.losses import bce_neg, bce_pos
from stages.fit.methods import METHODS, RowInputs

RHO = (0.1, 0.2)
PI = {0: (0.60, 0.05), 1: (0.30, 0.15), 2: (0.90, 0.02)}  # stratum -> (π(s, 1), π(s, 0))


def population(n=300_000, seed=0, audit_share=0.05, hidden=False, noisy_audit=True):
    """Rows in three strata; ``y`` depends on ``x`` and the stratum; ``o`` on ``(s, y)`` — or,
    with ``hidden``, also on ``x`` within each (stratum, class), which no stratum sees. Flips
    after selection; a uniform audit answers with the same flips (or clean)."""
    rng = np.random.default_rng(seed)
    s = rng.integers(0, 3, n)
    x = rng.normal(size=n)
    y = (rng.random(n) < 1 / (1 + np.exp(-(1.5 * x + (s - 1))))).astype(np.int8)
    pi1 = np.array([PI[k][0] for k in range(3)])[s]
    pi0 = np.array([PI[k][1] for k in range(3)])[s]
    p = np.where(y == 1, pi1, pi0)
    if hidden:  # same mean per (s, y), but tilted toward large x: the strata cannot see it
        p = np.clip(p * (1 + 0.9 * np.tanh(2 * x)), 0, 1)
    audit = rng.random(n) < audit_share
    o = audit | (rng.random(n) < p)
    flip = np.where(y == 1, rng.random(n) < RHO[0], rng.random(n) < RHO[1])
    if not noisy_audit:
        flip &= ~audit
    fb = np.where(o, np.where(flip, 1 - y, y), 0).astype(np.int8)
    f = torch.tensor(0.8 * x + 0.3, dtype=torch.float64)  # any fixed head
    return dict(s=s, x=x, y=y, p=p, o=o, fb=fb, audit=audit, f=f, pi=(pi1, pi0),
                noisy=np.where(flip, 1 - y, y).astype(np.int8))


def clean_risk(pop, rows):
    y = torch.tensor(pop["y"][rows], dtype=torch.float64)
    f = pop["f"][rows]
    return float((y * bce_pos(f) + (1 - y) * bce_neg(f)).mean())


def risk(a1, a0, f):
    return float((torch.tensor(a1, dtype=torch.float64) * bce_pos(f) + torch.tensor(a0, dtype=torch.float64) * bce_neg(f)).mean())


def fitted(pop, labels="noisy", strata="covariates"):
    n = len(pop["s"])
    return AuditPropensity(strata=strata, covariates=("s",), smoothing=20, labels=labels, clip_min=0.01).fit(
        pop["x"][:, None], {"s": pop["s"]}, pop["o"], pop["fb"], pop["audit"], np.arange(n), *RHO)


def test_bayes_identity_recovers_the_label_dependent_propensity_per_stratum():
    model = fitted(population())
    for k, (p1, p0) in PI.items():
        assert model.pi1_[k] == pytest.approx(p1, rel=0.15), k
        assert model.pi0_[k] == pytest.approx(p0, rel=0.25), k


def test_a_clean_audit_is_read_without_undoing_flips():
    model = fitted(population(noisy_audit=False), labels="clean")
    assert model.pi1_[0] == pytest.approx(PI[0][0], rel=0.15)
    wrong = fitted(population(noisy_audit=False), labels="noisy")  # treating clean answers as noisy
    assert abs(wrong.pi1_[0] - PI[0][0]) > 0.1


@pytest.mark.parametrize("name", ["causalrm", "causalrm_dr", "ips", "dr"])
def test_class_weighted_losses_are_unbiased_for_the_clean_risk(name):
    noisy = name.startswith("causalrm")
    pop = population(seed=1)
    if not noisy:  # plain ips/dr know nothing of noise: give them clean feedback
        pop["fb"] = np.where(pop["o"], pop["y"], 0).astype(np.int8)
    model = AuditPropensity(strata="covariates", covariates=("s",), labels="noisy" if noisy else "clean",
                            clip_min=0.01).fit(pop["x"][:, None], {"s": pop["s"]}, pop["o"], pop["fb"],
                                               pop["audit"], np.arange(len(pop["s"])), *(RHO if noisy else (0, 0)))
    pi1, pi0 = model.predict(pop["x"][:, None], {"s": pop["s"]})
    pi1, pi0 = np.where(pop["audit"], 1.0, pi1), np.where(pop["audit"], 1.0, pi0)
    g = np.full(len(pop["s"]), 0.3)  # a wrong imputation: DR must not need it right
    rows = RowInputs(pop["o"], pop["fb"], None, g, *(RHO if noisy else (0.0, 0.0)), audit=pop["audit"],
                     audit_clean=not noisy, class_propensity=(pi1, pi0))
    a1, a0 = METHODS[name].coefficients(rows)
    everyone = np.arange(len(pop["s"]))
    assert risk(a1, a0, pop["f"]) == pytest.approx(clean_risk(pop, everyone), abs=0.01)
    one_weight = RowInputs(pop["o"] & ~pop["audit"], pop["fb"], np.clip(pop["o"].mean(), 0.01, 1) * np.ones(len(g)),
                           g, *(RHO if noisy else (0.0, 0.0)))
    assert abs(risk(*METHODS[name].coefficients(one_weight), pop["f"]) - clean_risk(pop, everyone)) > 0.03


def test_class_weighted_causalrm_is_biased_when_selection_follows_what_the_strata_miss():
    pop = population(seed=2, hidden=True)
    model = fitted(pop)
    pi1, pi0 = model.predict(pop["x"][:, None], {"s": pop["s"]})
    rows = RowInputs(pop["o"], pop["fb"], None, None, *RHO, audit=pop["audit"],
                     class_propensity=(np.where(pop["audit"], 1.0, pi1), np.where(pop["audit"], 1.0, pi0)))
    bias = risk(*METHODS["causalrm"].coefficients(rows), pop["f"]) - clean_risk(pop, np.arange(len(pop["s"])))
    assert abs(bias) > 0.03  # the identity is exact only for selection on (stratum, y)


def test_dr_weight_solves_the_flip_system():
    """E[h(ỹ) | y] = 1 / π(x, y) for the per-class DR weight, both classes."""
    pi1, pi0 = np.array([0.4]), np.array([0.1])
    h = {}
    for fb in (0, 1):
        rows = RowInputs(np.array([True]), np.array([fb]), None, None, *RHO, class_propensity=(pi1, pi0))
        h[fb] = float(METHODS["causalrm_dr"]._dr_weight(rows, True)[0])
    assert (1 - RHO[0]) * h[1] + RHO[0] * h[0] == pytest.approx(1 / 0.4)
    assert RHO[1] * h[1] + (1 - RHO[1]) * h[0] == pytest.approx(1 / 0.1)


def test_methods_without_the_audit_propensity_learn_from_the_logs_alone():
    pop = population(n=2000)
    rows = RowInputs(pop["o"], pop["fb"], np.full(2000, 0.3), np.full(2000, 0.4), *RHO, audit=pop["audit"])
    for name in ("naive", "noise", "ips", "causalrm", "causalrm_dr"):
        a1, a0 = METHODS[name].coefficients(rows)
        assert (a1[pop["audit"]] == 0).all() and (a0[pop["audit"]] == 0).all(), name
    a1, _ = METHODS["audit_only"].coefficients(rows)
    assert (a1[~pop["audit"]] == 0).all() and (a1[pop["audit"]] != 0).all()
    a1, a0 = METHODS["logs_plus_audit"].coefficients(rows)
    assert (a1 + a0)[pop["o"]].min() == 1 and (a1 + a0)[~pop["o"]].max() == 0
    with pytest.raises(RmpipeError, match="audit_only learns from a randomised audit, and the table has no audit rows"):
        METHODS["audit_only"].coefficients(dataclasses.replace(rows, audit=None))


def test_label_selection_check_sees_users_choosing_by_the_label_without_clean_labels():
    pop = population(n=40_000)
    check = label_selection(pop["o"], pop["fb"], pop["audit"], np.arange(40_000))
    assert check["flag"] and check["observed_positive"] > check["audit_positive"]
    flat = population(n=40_000)
    flat["o"] = flat["audit"] | (np.random.default_rng(5).random(40_000) < 0.2)  # selection blind to y
    flat["fb"] = np.where(flat["o"], flat["noisy"], 0)
    assert not label_selection(flat["o"], flat["fb"], flat["audit"], np.arange(40_000))["flag"]
    none = label_selection(pop["o"], pop["fb"], np.zeros(40_000, bool), np.arange(40_000))
    assert not none["flag"] and "audit: true" in none["reason"]


def test_label_selection_per_stratum_sees_what_cancels_out_overall():
    """Users of stratum 1 rate what they like, of stratum 2 what they dislike, of stratum 0 at
    random: overall the observed share matches the audit's, within strata 1 and 2 it does not."""
    rng = np.random.default_rng(3)
    n = 60_000
    s = rng.integers(0, 3, n)
    y = rng.random(n) < 0.5
    p = np.choose(s, [np.full(n, 0.3), np.where(y, 0.5, 0.1), np.where(y, 0.1, 0.5)])
    audit = rng.random(n) < 0.05
    o = audit | (rng.random(n) < p)
    fb = np.where(o, y, 0)
    overall = label_selection(o, fb, audit, np.arange(n))
    assert not overall["flag"] and overall["strata"] == []
    check = label_selection(o, fb, audit, np.arange(n), strata=s)
    assert abs(check["z"]) < 2.58  # the global comparison alone would miss it
    assert check["flag"] and [t["stratum"] for t in check["strata"] if t["flag"]] == [1, 2]
    assert "within strata 1, 2" in check["reason"]
    assert check["strata"][1]["observed_positive"] > 0.75 > check["strata"][1]["audit_positive"]


def test_platt_scaling_recovers_a_known_distortion():
    rng = np.random.default_rng(0)
    f = rng.normal(size=20_000) * 2
    y = (rng.random(20_000) < 1 / (1 + np.exp(-f))).astype(float)
    a, b = platt(3 * f - 1, y, 1 - y)  # the head is over-confident and shifted: undo it
    assert a == pytest.approx(1 / 3, rel=0.1) and b == pytest.approx(1 / 3, abs=0.1)


def test_platt_scaling_never_reverses_the_ranking_on_a_thin_audit():
    f = np.array([-2.0, -1.0, 0.0, 1.0, 2.0, 3.0])
    y = np.array([1.0, 1.0, 0.0, 1.0, 0.0, 0.0])  # a dozen rows that happen to disagree with the head
    a, b = platt(f, y, 1 - y)
    assert a > 0  # flattened, never flipped


# --- through the fit, on a Gaussian world with an audit -------------------------------------
def audited_world(share=0.08, seed=0, n=6000):
    from pipeline.synthetic import make_world

    w = make_world(n=n, dim=8, seed=seed)
    keep = w.split != "test"
    rng = np.random.default_rng(seed + 100)
    audit = keep & (rng.random(n) < share)
    flip = np.where(w.label == 1, rng.random(n) < RHO[0], rng.random(n) < RHO[1])
    feedback = np.where(audit, np.where(flip, 1 - w.label, w.label), w.feedback).astype(np.int8)
    observed = w.observed | audit
    return w, FitInputs(w.X[keep], w.split[keep], observed[keep], feedback[keep], where="test",
                        audit=audit[keep])


FAST = FitParams(head=HeadParams(hidden=(16,), max_epochs=8, patience=3, seed=0),
                 propensity=PropensityParams(model="audit", folds=2, clip_min=0.02),
                 noise=NoiseParams(rho_pos=RHO[0], rho_neg=RHO[1]), audit=AuditParams(strata="kmeans", k=3))


def test_fit_with_the_audit_propensity_reports_its_strata_and_trains_every_propensity_method():
    _, data = audited_world()
    methods = [METHODS[m] for m in ("ips", "dr", "causalrm", "causalrm_dr", "audit_only", "logs_plus_audit", "naive")]
    nuisance = fit_nuisance(data, FAST, methods)
    diag = nuisance.diagnostics["audit_propensity"]
    assert diag["k"] == 3 and len(diag["table"]) == 3
    assert diag["audit_rows_train"] == int((data.audit & data.train).sum())
    assert all(t["pi1"] > t["pi0"] for t in diag["table"])  # the world's feedback favours good answers
    json.dumps(nuisance.diagnostics)  # the card stores it
    for m in methods:
        model, result = fit_method(data, nuisance, m, FAST)
        assert np.isfinite(result.best_val_risk), m.name


def test_audit_select_and_calibrate_use_the_val_audit_rows():
    _, data = audited_world()
    params = dataclasses.replace(FAST, audit=dataclasses.replace(FAST.audit, select=True, calibrate=True))
    nuisance = fit_nuisance(data, params, [METHODS["naive"]])
    model, result = fit_method(data, nuisance, METHODS["naive"], params)
    assert result.calibration["rows"] == int((data.audit & data.val).sum())
    plain, _ = fit_method(data, nuisance, METHODS["naive"], FAST)
    assert not torch.allclose(model.logits(data.X[:50]), plain.logits(data.X[:50]))


def test_the_audit_propensity_without_audit_rows_is_refused_in_one_line():
    _, data = audited_world()
    data = dataclasses.replace(data, audit=None)
    with pytest.raises(RmpipeError, match=r"^test: fit\.propensity\.model audit needs audit rows .* has none$"):
        fit_nuisance(data, FAST, [METHODS["causalrm"]])


# --- fit -> evaluate -> report on disk -------------------------------------------------------
def test_fit_evaluate_report_with_an_audit_on_disk(tmp_path):
    import polars as pl

    from pipeline.synthetic import make_world, world_table, write_project
    from pipeline.table import read_table, write_table
    from stages.evaluate.report import report
    from stages.evaluate.run import evaluate
    from stages.fit.run import fit

    params = write_project(tmp_path, make_world(n=3000, dim=8, seed=3), fit=FAST)
    table = read_table(params.table_path)
    rng = np.random.default_rng(0)
    audit = (table["split"] != "test").to_numpy() & (rng.random(table.height) < 0.08)
    table = table.with_columns(pl.Series("audit", audit),
                               pl.when(pl.Series(audit)).then(True).otherwise(pl.col("observed")).alias("observed"),
                               pl.when(pl.Series(audit)).then(pl.col("label")).otherwise(pl.col("feedback")).alias("feedback"))
    write_table(table, params.table_path)
    params = dataclasses.replace(params, embed=dataclasses.replace(params.embed, backbones=("toy",)),
                                 fit=dataclasses.replace(params.fit, methods=("causalrm", "audit_only"),
                                                         audit=dataclasses.replace(params.fit.audit, labels="clean")))
    lines = []
    heads = fit(params, "toy", ["causalrm", "audit_only"], progress=False, log=lines.append)
    card = json.loads((heads["causalrm"] / "card.json").read_text())
    assert card["rows"]["train_audit"] == int((audit & (table["split"] == "train").to_numpy()).sum())
    assert card["diagnostics"]["audit_propensity"]["labels"] == "clean"
    assert any(line.startswith("  audit propensity (kmeans, 3 strata") for line in lines)
    risks = {m: json.loads((heads[m] / "card.json").read_text())["metrics"]["val_audit_risk"] for m in heads}
    choice = next(line for line in lines if line.startswith("  audit choice: "))
    assert choice.startswith(f"  audit choice: {min(risks, key=risks.get)} (lowest risk on the val audit rows")
    reports = evaluate(params, "toy", log=lambda _: None)
    a = reports["causalrm"]["audit_propensity"]
    assert a["pi1"] > a["pi0"] and a["pi1_true"] > a["pi0_true"]  # estimate and truth agree in direction
    md = report(params).read_text()
    assert "Audit propensity (kmeans, 3 strata" in md and "Label-selection check (FLAG)" in md


@pytest.mark.slow
@pytest.mark.parametrize("strata", ["covariates", "kmeans"])
def test_evaluate_sets_each_strata_true_propensity_beside_its_estimate(tmp_path, strata):
    """evaluate reloads the fit's strata and averages the true propensity over each stratum's
    train rows of a class (outside the audit): equal to the same average computed from the table
    (covariate strata), each stratum holding the rows the fit counted, and π̂(s, y) close to it."""
    import polars as pl

    from pipeline.synthetic import make_world, write_project
    from pipeline.table import read_table, write_table
    from stages.evaluate.report import report
    from stages.evaluate.run import evaluate
    from stages.fit.run import fit

    world = make_world(n=12000, dim=8, rho_pos=0.0, rho_neg=0.0, seed=4)  # no flips: a tighter π̂
    fast = dataclasses.replace(FAST, audit=AuditParams(strata=strata, k=3, covariates=("segment",), labels="clean"),
                               noise=NoiseParams(rho_pos=0.0, rho_neg=0.0), methods=("causalrm",))
    params = write_project(tmp_path, world, fit=fast)
    table = read_table(params.table_path)
    audit = (table["split"] != "test").to_numpy() & (np.random.default_rng(1).random(table.height) < 0.2)
    segment = np.array(["low", "mid", "high"])[np.digitize(world.X[:, 0] + world.X[:, 1], [-0.6, 0.6])]
    on_audit = pl.when(pl.Series(audit))
    table = table.with_columns(pl.Series("audit", audit), pl.Series("segment", segment),
                               on_audit.then(True).otherwise(pl.col("observed")).alias("observed"),
                               on_audit.then(pl.col("label")).otherwise(pl.col("feedback")).alias("feedback"))
    write_table(table, params.table_path)
    params = dataclasses.replace(params, embed=dataclasses.replace(params.embed, backbones=("toy",)))
    fit(params, "toy", ["causalrm"], progress=False, log=lambda _: None)
    a = evaluate(params, "toy", log=lambda _: None)["causalrm"]["audit_propensity"]
    logs = table.filter((pl.col("split") == "train") & ~pl.col("audit"))
    assert len(a["by_stratum"]) == 3
    assert sum(t["true_rows"] for t in a["by_stratum"]) == logs.height
    for t in a["by_stratum"]:
        assert t["true_rows"] == t["log_rows"]  # evaluate's strata are the fit's
        for y in (1, 0):
            if strata == "covariates":  # levels are sorted: high, low, mid
                rows = logs.filter((pl.col("segment") == sorted(set(segment))[t["stratum"]]) & (pl.col("label") == y))
                assert t[f"pi{y}_true"] == pytest.approx(rows["propensity_true"].mean(), rel=1e-9)
            assert abs(t[f"pi{y}"] - t[f"pi{y}_true"]) < 0.05, (t, y)
    assert len({round(t["pi1_true"], 2) for t in a["by_stratum"]}) == 3  # the strata differ: the test can tell
    md = report(params).read_text()
    assert "| stratum | audit rows | log rows | π̂(s,1) | π(s,1) true | π̂(s,0) | π(s,0) true |" in md
    t = a["by_stratum"][0]
    assert f"| 0 | {t['audit_rows']} | {t['log_rows']} | {t['pi1']:.3f} | {t['pi1_true']:.3f} |" in md
