"""The table's provenance (pipeline.table): one writer and one reader, a round trip through a
real file, and tables prepared before the rename (``simulation.json``) still read."""

from __future__ import annotations

import json

import pytest

from pipeline.errors import RmpipeError
from pipeline.table import PROVENANCE, Provenance, provenance_path, read_provenance, write_provenance

SIMULATED = {"simulated": True, "requested": {"alpha": 0.5, "rho_pos": 0.1},
             "realised": {"observation_rate": 0.2016}}


def test_round_trip_keeps_every_field_and_the_rest_of_the_report(tmp_path):
    table = tmp_path / "d" / "feedback.parquet"
    table.parent.mkdir()
    prov = Provenance(source="builtin", licence="CC0-1.0", feedback_kind="implicit",
                      feedback=SIMULATED, details={"dataset": "d", "rows": {"total": 10}})
    path = write_provenance(prov, table)
    assert path == provenance_path(table) == table.parent / PROVENANCE
    assert read_provenance(table) == prov
    assert read_provenance(table).simulation == SIMULATED
    assert json.loads(path.read_text())["rows"] == {"total": 10}  # the rest sits at the top level


def test_real_logs_have_no_simulation_block(tmp_path):
    table = tmp_path / "feedback.parquet"
    write_provenance(Provenance(source="file:logs.csv", feedback={"simulated": False, "from": "the logs"}), table)
    assert read_provenance(table).simulation is None


def test_an_old_table_with_only_simulation_json_still_reads(tmp_path):
    table = tmp_path / "feedback.parquet"
    (tmp_path / "simulation.json").write_text(json.dumps(
        {"source": "builtin", "license": "MIT", "feedback_kind": "implicit", "feedback": SIMULATED}))
    prov = read_provenance(table)
    assert (prov.source, prov.licence, prov.feedback_kind) == ("builtin", "MIT", "implicit")
    assert prov.simulation == SIMULATED
    write_provenance(Provenance(licence="CC0-1.0"), table)  # the new name wins once written
    assert read_provenance(table).licence == "CC0-1.0"


def test_no_provenance_means_explicit_feedback_and_no_licence(tmp_path):
    prov = read_provenance(tmp_path / "feedback.parquet")
    assert (prov.licence, prov.feedback_kind, prov.simulation) == (None, "explicit", None)


@pytest.mark.parametrize("text", ["{not json", "[1, 2]"])
def test_a_damaged_provenance_is_refused_by_name(tmp_path, text):
    (tmp_path / PROVENANCE).write_text(text)
    with pytest.raises(RmpipeError, match=r"provenance\.json: not a .*provenance file.*rmpipe prepare"):
        read_provenance(tmp_path / "feedback.parquet")
