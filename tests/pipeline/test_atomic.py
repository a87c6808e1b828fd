"""Write-then-rename: a failure inside the block leaves the old file as it was and no temp file."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import numpy as np
import pytest

from pipeline.atomic import atomic_path, write_json


def test_success_replaces_the_target_with_the_usual_mode_and_leaves_nothing_beside_it(tmp_path):
    target = tmp_path / "out" / "table.txt"  # the parent is created
    with atomic_path(target) as tmp:
        assert tmp.parent == target.parent and tmp != target and not target.exists()
        tmp.write_text("new")
    assert target.read_text() == "new"
    assert [p.name for p in target.parent.iterdir()] == ["table.txt"]
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE(target.stat().st_mode) == 0o666 & ~umask  # not mkstemp's 0600


def test_an_exception_inside_leaves_the_old_file_intact_and_no_partial_file(tmp_path):
    target = tmp_path / "report.md"
    target.write_text("old")
    with pytest.raises(RuntimeError, match="disk on fire"):
        with atomic_path(target) as tmp:
            tmp.write_text("half of the new")
            raise RuntimeError("disk on fire")
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["report.md"]


def test_an_exception_with_no_old_file_leaves_nothing(tmp_path):
    target = tmp_path / "report.md"
    with pytest.raises(KeyboardInterrupt):
        with atomic_path(target) as tmp:
            tmp.write_bytes(b"\x00" * 100)
            raise KeyboardInterrupt
    assert list(tmp_path.iterdir()) == []


def test_write_json_is_sorted_indented_and_takes_numpy_and_paths(tmp_path):
    target = tmp_path / "card.json"
    write_json(target, {"b": np.float32(0.5), "a": np.arange(3), "path": Path("x/y"), "n": np.int64(7)})
    text = target.read_text()
    assert text.endswith("}\n") and text.index('"a"') < text.index('"b"') < text.index('"n"')
    assert json.loads(text) == {"a": [0, 1, 2], "b": 0.5, "n": 7, "path": "x/y"}


def test_write_json_of_something_unserialisable_keeps_the_old_file(tmp_path):
    target = tmp_path / "card.json"
    write_json(target, {"ok": 1})
    with pytest.raises(TypeError, match="not JSON-serialisable: object"):
        write_json(target, {"ok": 2, "bad": object()})
    assert json.loads(target.read_text()) == {"ok": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["card.json"]
