"""The front door (rmpipe/cli.py): every command is listed, a user mistake is one line on stderr
and exit 2, and a bug in rmpipe keeps its traceback."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from pipeline.errors import RmpipeError
from rmpipe.cli import app, user_errors_exit_2

REPO = Path(__file__).resolve().parents[1]
COMMANDS = {"prepare", "embed", "fit", "evaluate", "report", "score", "export", "serve", "rerank", "cache"}


def run_cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(REPO))
    return subprocess.run([sys.executable, "-m", "rmpipe.cli", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=120)


@pytest.fixture
def bad_params(tmp_path) -> Path:
    path = tmp_path / "params.yaml"
    path.write_text("fit:\n  bogus: 1\n")
    return path


def registered() -> set[str]:
    return ({c.name for c in app.registered_commands} | {g.name for g in app.registered_groups})


def test_help_lists_every_command_and_each_command_has_its_own_help():
    assert registered() >= COMMANDS
    runner = CliRunner()
    result = runner.invoke(app, ["--help"], terminal_width=200)
    assert result.exit_code == 0
    listed = {line.strip("│ ").split()[0] for line in result.output.split("Commands")[1].splitlines()
              if line.startswith("│ ") and line[2] != " "}
    assert listed == registered()
    for name in sorted(registered()):
        sub = runner.invoke(app, [name, "--help"], terminal_width=200)
        assert sub.exit_code == 0 and "Usage:" in sub.output, name


def test_a_user_mistake_is_one_line_on_stderr_and_exit_2(bad_params, tmp_path):
    proc = run_cli("cache", "verify", "--params", str(bad_params), cwd=tmp_path)
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr == f"rmpipe: error: {bad_params}: unknown setting fit.bogus\n"


@pytest.mark.parametrize("command", [["report"], ["fit", "--backbone", "minilm", "--all"], ["cache", "ls"]])
def test_a_user_mistake_is_one_line_and_exit_2_in_every_kind_of_command(bad_params, command):
    result = CliRunner().invoke(app, [*command, "--params", str(bad_params)])
    assert result.exit_code == 2 and result.stdout == ""
    assert result.stderr == f"rmpipe: error: {bad_params}: unknown setting fit.bogus\n"


def test_the_wrapper_turns_only_rmpipe_errors_into_exit_2(capsys):
    def mistake():
        raise RmpipeError("x.yaml:\n  fit.head.batch_size: 0")  # any message prints as one line

    def bug():
        return 1 / 0

    with pytest.raises(typer.Exit) as info:
        user_errors_exit_2(mistake)()
    assert info.value.exit_code == 2
    assert capsys.readouterr().err == "rmpipe: error: x.yaml: fit.head.batch_size: 0\n"
    with pytest.raises(ZeroDivisionError):
        user_errors_exit_2(bug)()
    assert capsys.readouterr().err == ""
    assert user_errors_exit_2(bug).__name__ == "bug"  # typer names commands after the function


def test_a_bug_through_the_real_app_keeps_its_traceback(tmp_path):
    script = textwrap.dedent("""
        from rmpipe.cli import app, user_errors_exit_2

        def broken() -> None:
            {}["missing"]

        app.command()(user_errors_exit_2(broken))
        app()
    """)
    env = dict(os.environ, PYTHONPATH=str(REPO))
    proc = subprocess.run([sys.executable, "-c", script, "broken"], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1 and "rmpipe: error" not in proc.stderr
    assert "Traceback (most recent call last)" in proc.stderr and "KeyError: 'missing'" in proc.stderr
    assert 'in broken' in proc.stderr  # the frame that failed, not a one-line summary
