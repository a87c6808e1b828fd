"""Tables and a figure from the paper-protocol benchmark's per-draw records (:mod:`bench.paper_protocol`).

Every number is a mean ± standard deviation over seeds; a debiased method's gain is the mean of
its *paired* per-seed differences from naive (same draw, same head seed) with a 95% Student-t
interval, so seed-to-seed variation of the draw itself cancels. ``share of headroom`` is
``(R²_m − R²_naive) / (R²_oracle − R²_naive)`` on the seed means, shown only where the oracle
leaves at least 0.02 of headroom.
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

import numpy as np

from stages.fit.noise import WEAK_AUC

METRICS = ("r2", "auroc", "pearson", "pairwise", "mae", "bon_pick", "bon_gap_closed", "ndcg")
LOWER_IS_BETTER = ("mae",)
LABELS = {"r2": "R²", "auroc": "AUROC", "pearson": "Pearson", "pairwise": "pair acc", "mae": "MAE",
          "bon_pick": "best-of-N pick", "bon_gap_closed": "best-of-N gap closed", "ndcg": "NDCG"}
NOTES = {"oracle": " *(clean labels: no real user)*", "causalrm_true_p": " *(true propensity: no real log)*"}
SETTING = ("part", "world", "dataset", "backbone", "rho", "alpha")
ORDER = ("oracle", "naive", "ips", "dr", "noise", "causalrm", "causalrm_dr", "causalrm_true_p")


def _job(rec: dict) -> dict:
    """A record's job with ``rho`` as text ("0.1/0.2"), as the tables show it."""
    return {**rec["job"], "rho": "/".join(f"{r:g}" for r in rec["job"]["rho"])}


def flatten(records: list[dict]) -> list[dict]:
    return [{**_job(rec), **fit} for rec in records for fit in rec["fits"]]


def _setting(row) -> tuple:
    return tuple(row[k] for k in SETTING)


def _ms(values, digits=3) -> str:
    v = np.array([x for x in values if x is not None], dtype=float)
    if not len(v):
        return "–"
    return f"{v.mean():.{digits}f} ± {v.std(ddof=1):.{digits}f}" if len(v) > 1 else f"{v.mean():.{digits}f}"


def paired(a: dict, b: dict) -> tuple[float, float, int, int] | None:
    """Mean of ``a[s] − b[s]`` over shared seeds, its 95% t half-width, wins, n."""
    from scipy.stats import t

    seeds = sorted(s for s in a if s in b and a[s] is not None and b[s] is not None)
    if not seeds:
        return None
    d = np.array([a[s] - b[s] for s in seeds])
    half = float(t.ppf(0.975, len(d) - 1) * d.std(ddof=1) / np.sqrt(len(d))) if len(d) > 1 else float("nan")
    return float(d.mean()), half, int((d > 0).sum()), len(d)


def _ci(p) -> str:
    if p is None:
        return "–"
    mean, half, wins, n = p
    mark = " **+**" if mean - half > 0 else " **−**" if mean + half < 0 else ""
    return f"{mean:+.3f} [{mean - half:+.3f}, {mean + half:+.3f}]{mark}"


class Results:
    """Per-seed values indexed by (setting, rates, method) -> {metric: {seed: value}}."""

    def __init__(self, records: list[dict]):
        self.records = records
        self.by = defaultdict(lambda: defaultdict(dict))
        for row in flatten(records):
            for m in (*METRICS, "bon_random", "bon_best", "epochs"):
                self.by[(_setting(row), row["rates"], row["method"])][m][row["seed"]] = row.get(m)
        self.settings = list(dict.fromkeys(_setting(r) for r in flatten(records)))

    def get(self, setting, rates, method, metric="r2") -> dict:
        if method == "oracle":
            rates = "clean labels"
        return self.by.get((setting, rates, method), {}).get(metric, {})

    def methods(self, setting, rates) -> list[str]:
        have = {k[2] for k in self.by if k[0] == setting and k[1] in (rates, "clean labels")}
        return [m for m in ORDER if m in have]

    def headroom(self, setting, rates, method) -> str:
        mean = lambda d: np.mean([v for v in d.values() if v is not None]) if d else np.nan  # noqa: E731
        o, n, m = (mean(self.get(setting, rates, x)) for x in ("oracle", "naive", method))
        if method in ("oracle", "naive") or not np.isfinite(o - n) or o - n < 0.02:
            return "–"
        return f"{(m - n) / (o - n):+.0%}"


def _title(s) -> str:
    part, world, dataset, backbone, rho, alpha = s
    return f"{dataset} / {backbone}"


def _graded(res: Results, settings) -> bool:
    """Whether best-of-N was measured in any of ``settings`` (test prompts with several ratings)."""
    return any(res.get(s, "true", "naive", "bon_pick") for s in settings)


def table_methods(res: Results, settings, rates: str) -> list[str]:
    out = []
    groups = defaultdict(list)
    for s in settings:
        groups[_title(s)].append(s)
    for title, ss in groups.items():
        graded = _graded(res, ss)
        head = "| (rho_pos, rho_neg) | method | R² | share of headroom | AUROC | Pearson | pair acc | MAE |"
        keys = ["auroc", "pearson", "pairwise", "mae"]
        if graded:
            head += " best-of-N pick | gap closed | NDCG |"
            keys += ["bon_pick", "bon_gap_closed", "ndcg"]
            rnd, best = (_ms(res.get(ss[0], "true", "naive", k).values(), 2) for k in ("bon_random", "bon_best"))
            out += [f"#### {title}", "", f"Best-of-N on the test prompts: a random pick has mean rating {rnd}, "
                    f"the best response {best}.", ""]
        else:
            out += [f"#### {title}", ""]
        out += [head + " epochs |", "|---" * (head.count("|")) + "|"]
        for s in ss:
            for m in res.methods(s, rates):
                if rates == "estimated" and m in ("ips", "dr"):
                    continue
                name = m + NOTES.get(m, "")
                cells = [_ms(res.get(s, rates, m, k).values()) for k in ("r2",)]
                cells.append(res.headroom(s, rates, m))
                cells += [_ms(res.get(s, rates, m, k).values()) for k in keys]
                cells.append(_ms(res.get(s, rates, m, "epochs").values(), 0))
                out.append(f"| ({s[4].replace('/', ', ')}) | {name} | " + " | ".join(cells) + " |")
        out.append("")
    return out


def gain(res: Results, setting, rates: str, method: str, metric: str):
    """Paired gain of ``method`` over naive on ``metric``, signed so that positive is better."""
    a, b = res.get(setting, rates, method, metric), res.get(setting, rates, "naive", metric)
    return paired(b, a) if metric in LOWER_IS_BETTER else paired(a, b)


def table_paired(res: Results, settings, rates: str,
                 methods=("ips", "dr", "noise", "causalrm", "causalrm_dr", "causalrm_true_p")) -> list[str]:
    out = ["| setting | method | ΔR² [95% CI] | wins | −ΔMAE [95% CI] | ΔAUROC [95% CI] | Δpair acc [95% CI] | "
           "Δbest-of-N pick [95% CI] | ΔNDCG [95% CI] |", "|---|---|---|---|---|---|---|---|---|"]
    for s in settings:
        for m in methods:
            if m not in res.methods(s, rates):
                continue
            ps = {k: gain(res, s, rates, m, k) for k in METRICS}
            wins = f"{ps['r2'][2]}/{ps['r2'][3]}" if ps["r2"] else "–"
            alpha = f", α={s[5]:g}" if s[0] == "alpha" or s[5] != 0.5 else ""
            out.append(f"| {_title(s)} ({s[4]}{alpha}) | {m} | {_ci(ps['r2'])} | {wins} | {_ci(ps['mae'])} | "
                       f"{_ci(ps['auroc'])} | {_ci(ps['pairwise'])} | {_ci(ps['bon_pick'])} | {_ci(ps['ndcg'])} |")
    return out + [""] if len(out) > 2 else []


def table_nuisance(records: list[dict], settings) -> list[str]:
    diags = defaultdict(list)
    for rec in records:
        diags[_setting(_job(rec))].append(rec["diag"])
    out = ["| setting | observed rate | observed train rows | propensity AUC (p̂) | AUC of true p | ESS (share of observed) | clipped | feedback-model AUC | rho_pos: true → est | rho_neg: true → est |",
           "|---|---|---|---|---|---|---|---|---|---|"]
    for s in settings:
        ds = diags[s]
        g = lambda k, digits=3: _ms([d.get(k) for d in ds], digits)  # noqa: E731
        fails = sum("estimation_failed" in d or "error" in d for d in ds)
        tp, tn = s[4].split("/")
        out.append(f"| {_title(s)} ({s[4]}) | {g('obs_rate')} | {g('observed_train', 0)} | {g('prop_auc')} | "
                   f"{g('prop_auc_true_p')} | {g('ess', 0)} ({g('ess_share', 2)}) | {g('clipped', 2)} | {g('feedback_auc')} | "
                   f"{tp} (realised {g('rho_pos_real')}) → {g('rho_pos_hat')} | {tn} (realised {g('rho_neg_real')}) → "
                   f"{g('rho_neg_hat')}{f' ({fails} failed)' if fails else ''} |")
    return out + [""] if len(out) > 2 else []


def table_alpha(res: Results) -> list[str]:
    out = ["| dataset / backbone | α | naive R² | causalrm R² | ΔR² [95% CI] | wins | ΔAUROC [95% CI] |",
           "|---|---|---|---|---|---|---|"]
    rows = [s for s in res.settings if s[1] == "real" and s[4] == "0.1/0.2"]
    if not any(s[0] == "alpha" for s in rows):  # α = 0.5 alone is no sweep
        return []
    for s in sorted(rows, key=lambda s: (s[2], s[3], s[5])):
        n, c = res.get(s, "true", "naive"), res.get(s, "true", "causalrm")
        p = paired(c, n)
        wins = f"{p[2]}/{p[3]}" if p else "–"
        out.append(f"| {_title(s)} | {s[5]:g} | {_ms(n.values())} | {_ms(c.values())} | {_ci(p)} | {wins} | "
                   f"{_ci(paired(res.get(s, 'true', 'causalrm', 'auroc'), res.get(s, 'true', 'naive', 'auroc')))} |")
    return out + [""] if len(out) > 2 else []


def feedback_auc(records: list[dict]) -> dict[tuple, float]:
    """Mean out-of-fold AUC of the feedback classifier per setting (the anchors' quality)."""
    aucs = defaultdict(list)
    for rec in records:
        if rec["diag"].get("feedback_auc") is not None:
            aucs[_setting(_job(rec))].append(rec["diag"]["feedback_auc"])
    return {s: float(np.mean(v)) for s, v in aucs.items()}


def verdicts(res: Results, settings, rates: str = "true") -> list[str]:
    """Where causalrm's paired ΔR² interval lies above 0, below 0, or covers it. With estimated
    rates, a setting whose anchors are weak (the fit's own warning) is marked: there the rates are
    not identified, and a "win" is shrinkage toward the base rate, not a correction."""
    aucs = feedback_auc(res.records) if rates == "estimated" else {}
    out = []
    for s in settings:
        p = paired(res.get(s, rates, "causalrm"), res.get(s, rates, "naive"))
        if p is None:
            continue
        line = f"- {_title(s)} ({s[4]}): causalrm {_word(p)} naive on R² ({_ci(p)}, {p[2]}/{p[3]} seeds)"
        for metric in ("mae", "bon_pick"):
            q = gain(res, s, rates, "causalrm", metric)
            if q is not None:
                line += f"; {_word(q)} naive on {LABELS[metric]} ({_ci(q)})"
        if aucs.get(s, 1.0) < WEAK_AUC:
            line += (f" — *weak anchors* (feedback-model AUC {aucs[s]:.2f} < {WEAK_AUC}): rates not "
                     f"identified")
            if _word(p) == "beats":  # only a win can be mistaken for a correction
                line += ", so the gain is shrinkage toward the base rate, not a correction"
        out.append(line)
    return out


def _word(p) -> str:
    return "beats" if p[0] - p[1] > 0 else "loses to" if p[0] + p[1] < 0 else "ties with"


def trust_flag(records: list[dict], settings) -> list[str]:
    """How well ``rmpipe fit``'s propensity-trust flag (computed without clean labels) separates
    the draws where causalrm beat naive on R² (true rates) from those where it did not; and, where
    the draw also fit ``causalrm_true_p``, the claim the flag itself makes: that p̂ misses a
    correction the true propensity would make (causalrm_true_p beats causalrm on R²)."""
    by = {_setting(_job(r)): [] for r in records}
    for rec in records:
        fits = {f["method"]: f for f in rec["fits"] if f["rates"] == "true"}
        if "trust_flag" in rec["diag"] and "causalrm" in fits and "naive" in fits:
            missed = (fits["causalrm_true_p"]["r2"] > fits["causalrm"]["r2"]) if "causalrm_true_p" in fits else None
            by[_setting(_job(rec))].append((rec["diag"]["trust_flag"], fits["causalrm"]["r2"] > fits["naive"]["r2"], missed))
    rows, cells, claim = [], defaultdict(int), defaultdict(int)
    for s in settings:
        draws = by.get(s, [])
        if not draws:
            continue
        flagged = sum(f for f, _, _ in draws)
        won = sum(w for _, w, _ in draws)
        with_p = [m for _, _, m in draws if m is not None]
        for f, w, m in draws:
            cells[(f, w)] += 1
            if m is not None:
                claim[(f, m)] += 1
        missed = f"{sum(with_p)}/{len(with_p)}" if with_p else "–"
        rows.append(f"| {_title(s)} ({s[4]}) | {flagged}/{len(draws)} | {won}/{len(draws)} | {missed} |")
    n = sum(cells.values())
    if not n:
        return []
    right = cells[(True, False)] + cells[(False, True)]
    out = ["| setting | draws flagged | draws where causalrm beat naive (R²) "
           "| draws where the true propensity beat p̂ (causalrm_true_p > causalrm, R²) |",
           "|---|---|---|---|", *rows, "",
           f"Over {n} draws: flagged and lost {cells[(True, False)]}, flagged but won {cells[(True, True)]}, "
           f"not flagged and won {cells[(False, True)]}, not flagged but lost {cells[(False, False)]}: the flag "
           f"agrees with the outcome in **{right}/{n} = {right / n:.0%}** of draws (a flag is right when "
           f"causalrm then does not beat naive)."]
    m = sum(claim.values())
    if m:
        hit = claim[(True, True)] + claim[(False, False)]
        out.append(f"Against its own claim (p̂ misses what the true propensity corrects), over {m} draws: "
                   f"flagged and missed {claim[(True, True)]}, flagged but p̂ was as good {claim[(True, False)]}, "
                   f"not flagged and p̂ as good {claim[(False, False)]}, not flagged but missed "
                   f"{claim[(False, True)]}: **{hit}/{m} = {hit / m:.0%}**.")
    return [*out, ""]


def figure(res: Results, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    main = [s for s in res.settings if s[0] in ("main", "world")]
    alpha = [s for s in res.settings if s[1] == "real" and s[4] == "0.1/0.2"]
    methods = ("ips", "dr", "noise", "causalrm", "causalrm_dr", "causalrm_true_p")
    fig, axes = plt.subplots(2, 1, figsize=(max(10, 0.9 * len(main)), 9))
    ax = axes[0]
    width = 0.8 / len(methods)
    for j, m in enumerate(methods):
        xs, ys, es = [], [], []
        for i, s in enumerate(main):
            p = paired(res.get(s, "true", m), res.get(s, "true", "naive"))
            if p:
                xs.append(i + (j - len(methods) / 2 + 0.5) * width)
                ys.append(p[0])
                es.append(0 if np.isnan(p[1]) else p[1])
        ax.bar(xs, ys, width, yerr=es, capsize=2, color=f"C{j}", hatch="//" if m in NOTES else None,
               label=m + (" (true p: no real log)" if m in NOTES else ""))
    ax.axhline(0, color="k", lw=0.8)
    ax.set_xticks(range(len(main)), [f"{_title(s)}\n{s[4]}" for s in main], rotation=70, ha="right", fontsize=7)
    ax.set_ylabel("ΔR² vs naive (paired, 95% CI)")
    ax.set_title("Gain over naive on the clean test split (true noise rates, α = 0.5)")
    ax.legend(fontsize=8, ncol=3)
    ax = axes[1]
    lines = defaultdict(list)
    for s in alpha:
        p = paired(res.get(s, "true", "causalrm"), res.get(s, "true", "naive"))
        if p:
            lines[_title(s)].append((s[5], p[0], 0 if np.isnan(p[1]) else p[1]))
    for k, (title, pts) in enumerate(sorted(lines.items())):
        pts.sort()
        a, m, h = (np.array(v) for v in zip(*pts))
        ax.errorbar(a + 0.004 * (k - len(lines) / 2), m, yerr=h, marker="o", capsize=3, label=title, color=f"C{k}")
    ax.axhline(0, color="k", lw=0.8)
    ax.set_xlabel("α (propensity ratio of the two classes = 1 : α⁻⁴)")
    ax.set_ylabel("ΔR² causalrm − naive")
    ax.set_title("α sweep, (rho_pos, rho_neg) = (0.1, 0.2)")
    if lines:
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def section_lines(sections) -> list[str]:
    """``(heading, intro, body)`` sections as lines; a section with no body is left out, heading
    and all (a run without worlds has no worlds' heading). A ``###`` section with a body brings
    its ``##`` heading (and intro) along even when that one's own body is empty."""
    out, parent = [], None
    for heading, intro, body in sections:
        if heading.startswith("## "):
            parent = [heading, "", *([*intro, ""] if intro else [])]
        if not body:
            continue
        if parent is not None:
            out += parent
            parent = None
        if heading.startswith("### "):
            out += [heading, ""]
        out += [*body, *([""] if body[-1] != "" else [])]
    return out


def write(records: list[dict], meta: dict, out: Path) -> Path:
    res = Results(records)
    real = [s for s in res.settings if s[0] == "main"]
    worlds = [s for s in res.settings if s[0] == "world"]
    errors = [r for r in records if "error" in r["diag"]]
    lines = [
        "# rmpipe benchmark: the paper's protocol on real human labels", "",
        f"Command: `{meta['command']}`; wall time {meta['wall_seconds'] / 60:.1f} min for {meta['draws']} draws; "
        f"seeds {meta['seeds']}; heads capped at {meta['settings']['max_epochs']} epochs (patience "
        f"{meta['settings']['patience']}); α = 0.5, target observation rate 0.2 unless stated.", "",
        "Each draw varies the simulation seed, the propensity folds' seed and the head's seed together; the split "
        "(by prompt, 60/20/20) is fixed, so every seed is scored on the same clean, fully observed test rows. "
        "Selection and early stopping use each method's own debiased validation risk, never clean labels. "
        "`oracle` is the same head trained on a copy where every row is observed with its clean label: "
        "what no real user provides; it sets the headroom. `causalrm_true_p` is causalrm with the simulation's "
        "true propensity (clipped alike) in place of p̂: what no real log has; it separates a failing "
        "propensity model from a failing method.", "",
        "Intervals: paired per-seed differences from naive, 95% Student-t; **+**/**−** mark intervals that exclude 0.", "",
    ]
    estimated = verdicts(res, real + worlds, "estimated")
    sections = [
        ("## Verdict: causalrm vs naive (R², true rates)", [],
         verdicts(res, real + worlds) + ([""] + ["With estimated rates:", "", *estimated] if estimated else [])),
        ("## Headline: true noise rates", [], table_methods(res, real, "true")),
        ("## Paired differences from naive (true rates)", [], table_paired(res, real + worlds, "true")),
        ("## Estimated noise rates (anchor quantiles, q = 0.97)", [], table_methods(res, real, "estimated")),
        ("### Paired differences from naive (estimated rates)", [],
         table_paired(res, real + worlds, "estimated", ("noise", "causalrm", "causalrm_dr"))),
        ("## Nuisance models: propensity and noise rates",
         ["Propensity AUC of the cross-fitted model against `o` on the train split, beside the AUC the true "
          "propensity itself reaches (the ceiling); ESS = (Σw)²/Σw² of w = o/p̂ (clip 0.1)."],
         table_nuisance(records, real + worlds)),
        ("## When not to trust the correction: the fit's flag against the outcome",
         ["The flag is `rmpipe fit`'s propensity-trust diagnostic, computed from the training log alone "
          "(no clean labels); the outcome uses the clean test split."], trust_flag(records, real + worlds)),
        ("## α sweep: causalrm vs naive", [], table_alpha(res)),
        ("## Semi-synthetic worlds",
         ["`all shared texts`: every row of the three shared sets, a known five-level reward "
          "`z = e·u + 0.5 tanh(e·v) + ε` on whitened PCA-64 coordinates of the backbone's embedding, cut at "
          "quantiles (.15, .35, .6, .85); `gaussian`: `pipeline.synthetic.make_world`. Same protocol, seeds and heads."],
         table_methods(res, worlds, "true")),
        ("### Estimated rates", [], table_methods(res, worlds, "estimated")),
    ]
    lines += section_lines(sections)
    if errors:
        lines += ["## Draws that failed", "", *[f"- {r['job']}: {r['diag']['error']}" for r in errors], ""]
    lines += ["![benchmark](paper_protocol.png)", ""]
    md = out / "paper_protocol.md"
    md.write_text("\n".join(lines))
    figure(res, out / "paper_protocol.png")
    return md
