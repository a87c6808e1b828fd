"""The audit benchmark's report: paired intervals against naive and audit_only, the share of
the true-propensity gap closed, and the audit's cost, from per-seed records."""

from bench.audit_report import index, section


def _records(gains, gap_truth=0.2):
    out = []
    for seed, gain in enumerate(gains):
        naive = 0.1 + 0.01 * seed
        fits = [dict(method="naive", rates="true", r2=naive, mae=0.4, bon_pick=3.0, ndcg=0.8, auroc=0.7),
                dict(method="causalrm_audit", rates="true", r2=naive + gain, mae=0.4 - gain, bon_pick=3.0, ndcg=0.8, auroc=0.7),
                dict(method="audit_only", rates="true", r2=naive - 0.05, mae=0.45, bon_pick=2.9, ndcg=0.8, auroc=0.6),
                dict(method="causalrm_true_p", rates="true", r2=naive + gap_truth, mae=0.3, bon_pick=3.1, ndcg=0.8, auroc=0.7)]
        diag = {"audit_rows": 120, "rows_train": 6000, "observed_logs_train": 1200, "audit_choice": "causalrm_audit",
                "label_selection": {"flag": True, "observed_positive": 0.8, "audit_positive": 0.5, "z": 6.0}}
        out.append({"job": dict(dataset="w", share=0.02, rho=[0.1, 0.2], seed=seed), "fits": fits, "diag": diag})
    return out


def test_section_pairs_each_head_with_naive_and_audit_only_and_measures_the_gap_closed():
    res, diags = index(_records([0.1, 0.1, 0.1]))
    (setting,) = res
    text = "\n".join(section(setting, res[setting], diags[setting]))
    row = next(line for line in text.splitlines() if line.startswith("| causalrm_audit |") and "[" in line)
    assert "+0.100 [+0.100, +0.100] **+**" in row  # R² against naive, interval excludes 0
    assert "+0.150 [+0.150, +0.150] **+**" in row  # against audit_only (naive − 0.05)
    assert row.endswith("| 50% |")  # 0.1 of the 0.2 the true propensity gains
    assert "cost: 120 audited rows" in text and "flagged 3/3" in text


def test_a_loss_is_reported_as_a_loss():
    res, diags = index(_records([-0.1, -0.12, -0.08]))
    (setting,) = res
    row = next(line for line in "\n".join(section(setting, res[setting], diags[setting])).splitlines()
               if line.startswith("| causalrm_audit |") and "[" in line)
    assert row.split("|")[2].strip().startswith("-0.100") and "**−**" in row.split("|")[2]
