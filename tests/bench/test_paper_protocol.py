"""bench/paper_protocol.py as a user runs it: --resume reuses what a run wrote, and the fits'
warnings are said once per kind, not once per draw."""

from __future__ import annotations

import json
import warnings

import pytest

from bench.notes import OnceNotes

TINY = ["--backbones", "--seeds", "1", "--max-epochs", "2", "--patience", "1", "--alphas", "0.5",
        "--gaussian-n", "600"]


@pytest.mark.slow
def test_resume_reuses_every_draw_a_run_wrote(tmp_path, capsys):
    """The settings written to records.jsonl come back as JSON (tuples as lists) and must still
    match the run's own: a resumed run fits nothing again."""
    from bench.paper_protocol import main

    assert main([*TINY, "--out", str(tmp_path)]) == 0
    first = (tmp_path / "records.jsonl").read_text()
    assert "2 draws (0 reused)" in capsys.readouterr().out
    assert main([*TINY, "--out", str(tmp_path), "--resume"]) == 0
    out = capsys.readouterr().out
    assert "2 draws (2 reused)" in out and "[1/2]" not in out
    assert (tmp_path / "records.jsonl").read_text() == first
    saved = json.loads((tmp_path / "paper_protocol.json").read_text())
    assert [r["job"]["seed"] for r in saved["records"]] == [0, 0]


def test_a_warning_is_said_once_per_kind_and_counted():
    said = []
    notes = OnceNotes(said.append)
    for auc in (0.51, 0.52, 0.53):
        with notes.collect():
            warnings.warn(f"anchor noise-rate estimates are unreliable: AUC {auc}")
            warnings.warn(f"do not trust the propensity correction (ips, dr, causalrm): reason {auc}")
    assert len(said) == 2 and "AUC 0.51" in said[0] and "reason 0.51" in said[1]
    assert all("\n" not in line for line in said)
    assert notes.summary() == ["note, 3 time(s) in all: anchor noise-rate estimates are unreliable",
                               "note, 3 time(s) in all: do not trust the propensity correction (ips, dr, causalrm)"]
