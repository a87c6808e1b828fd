"""The evaluation's PNGs: each is written atomically, decodes, and draws what it is given."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from stages.evaluate import plots


def decoded(path):
    with Image.open(path) as im:
        im.load()
        return im.format, im.size


def reports(bon: bool) -> dict:
    out = {}
    for k, name in enumerate(("naive", "ips", "causalrm")):
        m = {"r2": 0.1 * k, "mae": 0.3, "auroc": 0.7}
        if bon:
            m.update(bon_pick=5.5 + k, bon_random=5.0, bon_best=9.0, bon_gap_closed=(0.5 + k) / 4,
                     bon_groups=12, ndcg=0.8)
        out[name] = {"metrics": m}
    return out


def test_method_comparison_has_a_panel_per_metric_present(tmp_path):
    fmt, (w3, h) = decoded(plots.method_comparison(reports(False), tmp_path / "a.png"))
    fmt6, (w6, _) = decoded(plots.method_comparison(reports(True), tmp_path / "b.png"))
    assert fmt == fmt6 == "PNG" and w6 > 1.6 * w3  # r2, mae, auroc  vs  + bon_pick, bon_gap_closed, ndcg


def test_best_of_n_plot_draws_each_head_between_random_and_best(tmp_path):
    ax = plots.best_of_n_figure(reports(True), "toy / minilm").axes[0]
    assert [p.get_height() for p in ax.patches] == pytest.approx([5.5, 6.5, 7.5])
    assert sorted(line.get_ydata()[0] for line in ax.lines) == pytest.approx([5.0, 9.0])  # random, best
    assert ax.get_title() == "toy / minilm: best-of-N over 12 test groups"
    plots.pyplot().close("all")
    path = plots.best_of_n(reports(True), tmp_path / "plots" / "bon.png")
    assert decoded(path)[0] == "PNG" and sorted(p.name for p in path.parent.iterdir()) == ["bon.png"]
    assert not plots.pyplot().get_fignums()  # closed after saving


def test_calibration_and_reward_distribution_plots_decode(tmp_path):
    bins = [{"p_mean": 0.1 * k, "observed_rate": 0.1 * k + 0.02, "rows": 10} for k in range(1, 6)]
    truth = [{"p_mean": 0.1 * k, "true_mean": 0.1 * k, "rows": 10} for k in range(1, 6)]
    assert decoded(plots.propensity_calibration(bins, tmp_path / "c.png", truth))[0] == "PNG"
    rng = np.random.default_rng(0)
    rewards = {m: rng.random(200) for m in ("naive", "ips", "dr", "causalrm")}
    fmt, (w, h) = decoded(plots.reward_distributions(rewards, rng.random(200) < 0.3, tmp_path / "r.png"))
    assert fmt == "PNG" and h > 0.5 * w  # four methods: two rows of three panels
