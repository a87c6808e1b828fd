"""The common flags: folder overrides land in the loaded params; a bad flag value is named."""

from pathlib import Path

import pytest
from typer.testing import CliRunner

from pipeline.errors import RmpipeError
from pipeline.options import load
from rmpipe.cli import app


def test_folder_flags_replace_their_fields(tmp_path):
    params = tmp_path / "params.yaml"
    params.write_text("dataset: d\nembed: {store_dir: s}\n")
    p = load(params, data_dir=Path("D"), store_dir=Path("S"), heads_dir=Path("H"), reports_dir=Path("R"))
    assert (p.data_dir, p.embed.store_dir, p.fit.heads_dir, p.evaluate.reports_dir, p.dataset) == ("D", "S", "H", "R", "d")
    assert load(params, dataset="x").embed.store_dir == "s"  # what no flag names stays as the file says


def test_prepare_writes_under_the_data_dir_flag(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "params.yaml").write_text("prepare: {source: {rows: 60}}\n")
    result = CliRunner().invoke(app, ["prepare", "--data-dir", "elsewhere", "--dataset", "small"])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "elsewhere" / "small" / "feedback.parquet").exists()
    assert not (tmp_path / "data").exists()


def test_the_same_flags_on_every_command():
    from typer.main import get_command

    group = get_command(app)
    for name in ("prepare", "embed", "fit", "evaluate", "report", "score", "export", "serve", "rerank"):
        flags = {opt for param in group.commands[name].params for opt in param.opts}
        assert {"--params", "--dataset", "--data-dir", "--store-dir", "--heads-dir", "--reports-dir"} <= flags, name
    for name in ("embed", "fit", "score", "rerank"):
        assert "--no-progress" in {o for p in group.commands[name].params for o in p.secondary_opts}, name


def test_a_bad_override_is_named_as_a_flag(tmp_path):
    import dataclasses

    from pipeline.checks import SettingError
    from pipeline.options import flag_error

    (tmp_path / "empty.yaml").write_text("")
    p = load(tmp_path / "empty.yaml")
    with pytest.raises(SettingError) as err:
        dataclasses.replace(p.fit.head, lr=0.0)
    assert str(flag_error(Path("params.yaml"), err.value)) == "params.yaml + flags: fit.head.lr must be > 0, got 0.0"
    assert isinstance(err.value, RmpipeError)


def test_only_the_implicit_params_yaml_falls_back_to_the_defaults_and_says_so(tmp_path, monkeypatch):
    """Without --params and without ./params.yaml, a command runs on the built-in defaults and
    says so on stderr; with ./params.yaml it says nothing (a named file that is missing is a
    refusal: tests/test_invalid_input.py)."""
    monkeypatch.chdir(tmp_path)
    runner = CliRunner()
    bare = runner.invoke(app, ["cache", "ls"])
    assert bare.exit_code == 0, bare.output
    assert "no params.yaml in" in bare.stderr and "built-in defaults" in bare.stderr
    (tmp_path / "params.yaml").write_text("embed: {store_dir: stores}\n")
    own = runner.invoke(app, ["cache", "ls"])
    assert own.exit_code == 0 and "built-in defaults" not in own.stderr, own.output
