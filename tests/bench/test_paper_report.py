"""The paper-protocol report's verdicts: paired intervals, and weak anchors called out."""

from bench.paper_report import Results, verdicts


def _records(dataset: str, feedback_auc: float, gains: list[float]) -> list[dict]:
    out = []
    for seed, gain in enumerate(gains):
        job = dict(part="main", world="real", dataset=dataset, backbone="minilm", rho=[0.1, 0.2],
                   alpha=0.5, seed=seed)
        naive = -0.4 + 0.01 * seed
        fits = [dict(method="naive", rates=r, r2=naive) for r in ("true", "estimated")]
        fits += [dict(method="causalrm", rates="true", r2=naive - 0.1),
                 dict(method="causalrm", rates="estimated", r2=naive + gain)]
        out.append({"job": job, "fits": fits, "diag": {"feedback_auc": feedback_auc}})
    return out


def test_verdicts_mark_weak_anchors_only_with_estimated_rates():
    records = _records("weak", 0.5, [0.40, 0.42, 0.38]) + _records("strong", 0.8, [0.10, 0.12, 0.08])
    res = Results(records)
    estimated = dict(zip(("weak", "strong"), verdicts(res, res.settings, "estimated")))
    assert "causalrm beats naive" in estimated["weak"] and "weak anchors" in estimated["weak"]
    assert "AUC 0.50 < 0.6" in estimated["weak"]
    assert "causalrm beats naive" in estimated["strong"] and "weak anchors" not in estimated["strong"]
    true = verdicts(res, res.settings, "true")
    assert all("loses to naive" in line and "weak anchors" not in line for line in true)


def test_a_loss_on_weak_anchors_is_not_called_a_gain():
    res = Results(_records("weak", 0.5, [-0.20, -0.22, -0.18]))
    line = verdicts(res, res.settings, "estimated")[0]
    assert "causalrm loses to naive" in line and "weak anchors" in line and "rates not identified" in line
    assert "gain" not in line


def test_a_run_without_worlds_or_a_sweep_leaves_no_empty_heading(tmp_path):
    """Every heading the report writes has something under it before the next heading."""
    from bench.paper_report import write

    records = _records("d", 0.8, [0.1, 0.12, 0.08])
    meta = {"command": "test", "wall_seconds": 1.0, "draws": 3, "seeds": [0, 1, 2],
            "settings": {"max_epochs": 2, "patience": 1}}
    text = write(records, meta, tmp_path).read_text()
    lines = [line for line in text.splitlines() if line.strip()]
    headings = [i for i, line in enumerate(lines) if line.startswith("#")]
    for i in headings:
        nxt = lines[i + 1] if i + 1 < len(lines) else ""
        assert not nxt.startswith("#") or nxt.count("#") > lines[i].split()[0].count("#"), (lines[i], nxt)
    assert "Semi-synthetic" not in text and "α sweep" not in text and "trust the correction" not in text
    assert "## Verdict" in text and "## Headline" in text


def test_mae_gain_is_signed_so_lower_error_wins():
    records = []
    for seed in range(3):
        job = dict(part="main", world="real", dataset="graded", backbone="minilm", rho=[0.1, 0.2], alpha=0.5, seed=seed)
        fits = [dict(method="naive", rates="true", r2=0.1, mae=0.40 + 0.01 * seed, bon_pick=5.0 + seed),
                dict(method="causalrm", rates="true", r2=0.2 + 0.01 * seed, mae=0.30, bon_pick=4.0 + seed)]
        records.append({"job": job, "fits": fits, "diag": {}})
    res = Results(records)
    line = verdicts(res, res.settings, "true")[0]
    assert "causalrm beats naive on R²" in line
    assert "beats naive on MAE" in line and "loses to naive on best-of-N pick" in line


def _flag_report(draws) -> str:
    """The flag table of one setting's draws, each (flag, causalrm R², causalrm_true_p R² or None)
    against naive at R² 0."""
    from bench.paper_report import trust_flag

    records = []
    for seed, (flag, r2, r2_true_p) in enumerate(draws):
        job = dict(part="main", world="real", dataset="d", backbone="b", rho=[0.1, 0.2], alpha=0.5, seed=seed)
        fits = [dict(method="naive", rates="true", r2=0.0), dict(method="causalrm", rates="true", r2=r2)]
        if r2_true_p is not None:
            fits.append(dict(method="causalrm_true_p", rates="true", r2=r2_true_p))
        records.append({"job": job, "fits": fits, "diag": {"trust_flag": flag}})
    return "\n".join(trust_flag(records, Results(records).settings))


def test_trust_flag_agreement_counts_draws():
    # (flag, did causalrm beat naive)
    text = _flag_report([(f, 0.1 if won else -0.1, None) for f, won in
                         [(True, False), (True, False), (True, True), (False, True), (False, False)]])
    assert "| d / b (0.1/0.2) | 3/5 | 2/5 | – |" in text
    assert "flagged and lost 2, flagged but won 1, not flagged and won 1, not flagged but lost 1" in text
    assert "3/5 = 60%" in text
    assert "own claim" not in text  # no draw fit causalrm_true_p


def test_trust_flag_is_also_scored_against_the_true_propensity():
    # (flag, did the true propensity beat p̂): right, right, wrong, right
    text = _flag_report([(f, -0.1, 0.2 if missed else -0.2) for f, missed in
                         [(True, True), (True, True), (True, False), (False, False)]])
    assert "| d / b (0.1/0.2) | 3/4 | 0/4 | 2/4 |" in text
    assert "flagged and missed 2, flagged but p̂ was as good 1, not flagged and p̂ as good 1, not flagged but missed 0" in text
    assert "**3/4 = 75%**" in text


def _run(folder, seeds, settings, backbone="minilm"):
    import json

    records = [{"job": dict(part="main", world="real", dataset="d", backbone=backbone, rho=[0.1, 0.2], alpha=0.5,
                            seed=s), "settings": settings,
                "fits": [dict(method="naive", rates="true", r2=0.0), dict(method="causalrm", rates="true", r2=0.1)],
                "diag": {}} for s in seeds]
    meta = {"command": f"run {folder.name}", "wall_seconds": 60.0, "draws": len(records), "settings": settings,
            "seeds": list(seeds), "alphas": [0.5], "backbones": [backbone], "datasets": ["d"]}
    folder.mkdir()
    (folder / "paper_protocol.json").write_text(json.dumps({"meta": meta, "records": records}))
    return folder


def test_merge_joins_runs_and_refuses_what_would_mix_two_experiments(tmp_path):
    import pytest

    from bench.paper_protocol import merge_runs
    from pipeline.errors import RmpipeError

    old = {"max_epochs": 60, "fit": {"propensity": {"model": "logistic"}}}
    new = {"max_epochs": 60, "fit": {"propensity": {"model": "logistic"}, "pu": {"propensity_columns": []}}}
    a = _run(tmp_path / "a", [0, 1], old)
    b = _run(tmp_path / "b", [0, 1], new, backbone="smollm2")  # a field added since run a: no difference
    meta, records = merge_runs([a, b])
    assert len(records) == 4 and meta["draws"] == 4 and meta["wall_seconds"] == 120.0
    assert meta["backbones"] == ["minilm", "smollm2"] and meta["command"] == "run a + run b"

    c = _run(tmp_path / "c", [1, 2], old)  # seed 1 on minilm is also in a
    with pytest.raises(RmpipeError, match=r"c/paper_protocol.json: draw .*\"seed\": 1.* is also in"):
        merge_runs([a, c])
    d = _run(tmp_path / "d", [5], {"max_epochs": 60, "fit": {"propensity": {"model": "lightgbm"}}})
    with pytest.raises(RmpipeError, match="d/paper_protocol.json: fitted under other settings"):
        merge_runs([a, d])
    with pytest.raises(RmpipeError, match="no such file"):
        merge_runs([a, tmp_path / "missing"])
