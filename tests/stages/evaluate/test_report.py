"""``rmpipe report``: per-backbone JSON reports on disk -> one markdown page and one PNG."""

from __future__ import annotations

from pathlib import Path

import pytest
from PIL import Image

from pipeline.atomic import write_json
from pipeline.config import EmbedParams, EvaluateParams, FitParams, Params
from pipeline.errors import RmpipeError
from stages.evaluate.report import markdown, report


def method_report(method: str, r2: float, bon_pick: float | None, trust: dict | None = None) -> dict:
    """A report in the shape ``rmpipe evaluate`` writes (stages/evaluate/run.py)."""
    metrics = {"rows": 40, "r2": r2, "mae": 0.3, "rmse": 0.4, "mse": 0.16, "auroc": 0.7, "pearson": 0.4,
               "spearman": 0.35}
    if bon_pick is not None:
        metrics.update(bon_pick=bon_pick, bon_random=5.0, bon_best=9.0, bon_gap_closed=(bon_pick - 5) / 4,
                       bon_groups=12, ndcg=0.81)
    out = {"dataset": "d", "backbone": "b", "method": method, "metrics": metrics,
           "fit": {"val_guarded_risk": 0.5, "guard": "nnpu", "runaway": method == "ips", "best_epoch": 7}}
    if trust is not None:
        out["propensity_trust"] = trust
    return out


FLAG = {"flag": True, "auc": 0.52, "ess_ratio": 0.98, "feedback_balance": 0.8,
        "reason": "the propensity model cannot see the selection: its AUC is 0.52 < 0.6"}


@pytest.fixture
def params(tmp_path):
    return Params(dataset="d", embed=EmbedParams(backbones=("minilm", "smol")),
                  fit=FitParams(methods=("naive", "ips", "causalrm")),
                  evaluate=EvaluateParams(reports_dir=str(tmp_path / "reports")))


def tmp_root(params) -> Path:
    return Path(params.evaluate.reports_dir) / params.dataset


def write(params, backbone, *reports):
    for r in reports:
        write_json(tmp_root(params) / backbone / f"{r['method']}.json", r)


def test_report_tabulates_every_backbone_with_best_of_n_and_the_trust_flag(params):
    write(params, "minilm", method_report("naive", 0.10, 6.0), method_report("ips", -0.05, 5.5, FLAG),
          method_report("causalrm", 0.20, 7.0, FLAG))
    write(params, "smol", method_report("naive", 0.30, None), method_report("causalrm", 0.35, None,
                                                                            {**FLAG, "flag": False, "reason": "sees it"}))
    md_path = report(params)
    md = md_path.read_text()
    assert md_path.name == "d.md" and md.index("## minilm") < md.index("## smol")
    minilm, smol = md.split("## smol")
    assert "| bon_pick | bon_gap_closed | ndcg |" in minilm and "bon_pick" not in smol.split("\n\n")[1]
    assert "| causalrm | 0.200 |" in minilm and "| 7.000 | 0.500 | 0.810 |" in minilm
    assert "| nnpu (runaway) | 7 | FLAG |" in minilm and "| naive |" in minilm.split("| ips |")[0]
    assert "Best-of-N over 12 test groups: a random pick's mean rating 5.000, the best possible 9.000." in minilm
    assert "Propensity trust (FLAG): the propensity model cannot see the selection" in minilm
    assert "| nnpu | 7 | ok |" in smol and "Best-of-N" not in smol and "Propensity trust (ok): sees it." in smol
    assert "| naive | 0.300 |" in smol and smol.count("| – |") == 1  # naive does not weight by the propensity
    png = md_path.with_suffix(".png")
    with Image.open(png) as im:
        im.load()
        assert im.format == "PNG" and im.width > 3 * im.height  # three panels: R², MAE, best-of-N


def test_report_without_evaluations_is_one_clear_error(params):
    with pytest.raises(RmpipeError, match=r"no evaluation reports \(run `rmpipe evaluate` first\)"):
        report(params)
    write(params, "minilm", method_report("naive", 0.1, None))
    report(params)
    with Image.open(tmp_root(params).with_suffix(".png")) as im:
        im.load()
        assert im.width < 3 * im.height  # no best-of-N: two panels


def test_markdown_shows_the_nuisance_estimates_beside_the_truth(params):
    r = method_report("causalrm", 0.2, None)
    r["noise_rates"] = {"estimated": {"source": "anchors", "rho_pos": 0.12, "rho_neg": 0.25},
                        "realised": {"rho_pos": 0.1, "rho_neg": 0.2}}
    r["pu"] = {"estimated": {"c": 0.31, "prior": 0.48}, "realised": {"c": 0.3}}
    r["propensity_vs_true"] = {"mae_vs_true": 0.04, "pearson_vs_true": 0.91}
    md = markdown(params, {"minilm": {"naive": method_report("naive", 0.1, None), "causalrm": r}})
    assert ("Noise rates used (anchors): rho_pos 0.120, rho_neg 0.250; realised in the training rows: "
            "rho_pos 0.100, rho_neg 0.200.") in md
    assert "Implicit feedback, estimated (realised in the training rows): c 0.310 (0.300); prior 0.480 (–)." in md
    assert "Propensity vs the simulation's truth: MAE 0.040, Pearson 0.910." in md
    assert "Propensity trust" not in md and "Best-of-N" not in md  # nothing recorded, nothing said
