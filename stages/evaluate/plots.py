"""The evaluation's PNGs: method comparison, propensity calibration, reward distributions of
observed vs unobserved rows (where shapes matter, a table is not enough)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from pipeline.atomic import atomic_path
from stages.evaluate.metrics import present


def pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_png(fig, path: Path) -> Path:
    """Write ``fig`` atomically (a crash leaves no half-written PNG) and close it."""
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110, bbox_inches="tight")
    pyplot().close(fig)
    return path


def method_comparison(reports: dict[str, dict], path: Path, title: str = "") -> Path:
    """One panel per metric, one bar per method."""
    plt = pyplot()
    metrics = present(reports.values())
    names = list(reports)
    fig, axes = plt.subplots(1, max(len(metrics), 1), figsize=(2.6 * max(len(metrics), 1), 3.2), squeeze=False)
    for ax, metric in zip(axes[0], metrics):
        values = [reports[n]["metrics"].get(metric) for n in names]
        ax.bar(range(len(names)), [v if v is not None else 0 for v in values], color="C0")
        ax.set_xticks(range(len(names)), names, rotation=60, ha="right", fontsize=8)
        ax.set_title(metric, fontsize=9)
    fig.suptitle(title or "methods on the clean test split", fontsize=10)
    return save_png(fig, path)


def propensity_calibration(bins: list[dict], path: Path, truth: list[dict] | None = None, title: str = "") -> Path:
    """Mean predicted ``p̂`` per bin against the observed rate (out-of-fold, from the card) and,
    in simulation, against the true propensity."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(4.2, 4))
    hi = max([b["p_mean"] for b in bins] + [b["observed_rate"] for b in bins] + [0.05])
    ax.plot([0, hi], [0, hi], color="grey", lw=0.8, ls="--", label="perfect")
    ax.plot([b["p_mean"] for b in bins], [b["observed_rate"] for b in bins], "o-", label="observed rate (out-of-fold)")
    if truth:
        ax.plot([b["p_mean"] for b in truth], [b["true_mean"] for b in truth], "s-", label="true propensity")
    ax.set_xlabel("predicted propensity p̂")
    ax.set_ylabel("rate")
    ax.legend(fontsize=8)
    ax.set_title(title or "propensity calibration", fontsize=10)
    return save_png(fig, path)


def reward_distributions(rewards: dict[str, np.ndarray], observed: np.ndarray, path: Path, title: str = "") -> Path:
    """Histograms of ``σ(f)`` on training rows, observed vs unobserved, one panel per method."""
    plt = pyplot()
    names = list(rewards)
    cols = min(3, len(names))
    rows = int(np.ceil(len(names) / cols))
    fig, axes = plt.subplots(rows, cols, figsize=(3.4 * cols, 2.6 * rows), squeeze=False)
    bins = np.linspace(0, 1, 31)
    for ax, name in zip(axes.ravel(), names):
        r = rewards[name]
        ax.hist(r[observed], bins=bins, alpha=0.6, density=True, label="observed")
        ax.hist(r[~observed], bins=bins, alpha=0.6, density=True, label="unobserved")
        ax.set_title(name, fontsize=9)
    for ax in axes.ravel()[len(names):]:
        ax.axis("off")
    axes[0, 0].legend(fontsize=7)
    fig.suptitle(title or "reward distributions on training rows", fontsize=10)
    fig.tight_layout()
    return save_png(fig, path)


def best_of_n(reports: dict[str, dict], path: Path, title: str = "") -> Path:
    """Mean clean rating of each head's best-of-N pick, between the random pick and the best
    possible (the same test groups for every method, so two lines)."""
    return save_png(best_of_n_figure(reports, title), path)


def best_of_n_figure(reports: dict[str, dict], title: str = ""):
    plt = pyplot()
    names = [n for n, r in reports.items() if r["metrics"].get("bon_groups")]
    m = [reports[n]["metrics"] for n in names]
    fig, ax = plt.subplots(figsize=(max(3.2, 0.7 * len(names) + 1.5), 3.4))
    ax.bar(range(len(names)), [x["bon_pick"] for x in m], color="C0", label="head's pick")
    for key, style, label in (("bon_random", "--", "random pick"), ("bon_best", "-", "best possible")):
        ax.axhline(m[0][key], color="k", ls=style, lw=1, label=label)
    lo = min([m[0]["bon_random"]] + [x["bon_pick"] for x in m])
    ax.set_ylim(lo - 0.15 * (m[0]["bon_best"] - lo + 1e-9), m[0]["bon_best"] + 0.05 * (m[0]["bon_best"] - lo + 1e-9))
    ax.set_xticks(range(len(names)), names, rotation=60, ha="right", fontsize=8)
    ax.set_ylabel("mean clean rating of the pick")
    ax.legend(fontsize=7)
    ax.set_title(f"{title + ': ' if title else ''}best-of-N over {m[0]['bon_groups']} test groups", fontsize=10)
    return fig
