"""`dvc repro` on a temporary copy of the repo: the graph runs, caches, and swaps backbones
without disturbing another backbone's heads. Real DVC, a random 2-layer Llama (tests/conftest.py),
a few hundred rows."""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
COPIED = ("pipeline", "stages", "dvc.yaml", "params.yaml", "pyproject.toml", ".dvcignore", ".gitignore")

pytestmark = pytest.mark.slow


def tiny_profile(model: Path) -> dict:
    """The repo's params.yaml shrunk: 600 built-in rows, one tiny backbone, two methods, 3 epochs."""
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params["prepare"]["source"]["rows"] = 600
    spec = {"model": str(model), "pooling": "last", "max_tokens": 64, "chat_template": True,
            "dtype": "float32", "backend": "hf", "batch_tokens": 4096}
    params["backbones"] = {"tiny": spec, "tiny-mean": {**spec, "pooling": "mean"}}
    params["embed"]["backbones"] = ["tiny"]
    params["fit"]["methods"] = ["naive", "causalrm"]
    params["fit"]["propensity"]["folds"] = 2
    params["fit"]["head"].update(hidden=[16], max_epochs=3, patience=2, batch_size=128)
    return params


class Project:
    def __init__(self, root: Path):
        self.root = root
        self.env = {**os.environ, "DVC_NO_ANALYTICS": "1", "HF_HUB_OFFLINE": "1",
                    "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}"}

    def run(self, *args: str) -> str:
        proc = subprocess.run(args, cwd=self.root, env=self.env, capture_output=True, text=True)
        assert proc.returncode == 0, f"{' '.join(args)} failed:\n{proc.stdout}\n{proc.stderr}"
        return proc.stdout + proc.stderr

    def repro(self) -> set[str]:
        """Run `dvc repro`; return the names of the stages that actually ran."""
        out = self.run(str(BIN / "dvc"), "repro")
        return set(re.findall(r"Running stage '([^']+)'", out))

    def edit_params(self, change) -> None:
        path = self.root / "params.yaml"
        params = yaml.safe_load(path.read_text())
        change(params)
        path.write_text(yaml.safe_dump(params, sort_keys=False))

    def digest(self, folder: str) -> dict[str, str]:
        base = self.root / folder
        return {str(p.relative_to(base)): hashlib.sha256(p.read_bytes()).hexdigest()
                for p in sorted(base.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def project(tmp_path_factory, tiny_llama_dir) -> Project:
    root = tmp_path_factory.mktemp("repo")
    for name in COPIED:
        src = REPO / name
        if src.is_dir():
            shutil.copytree(src, root / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(src, root / name)
    (root / "params.yaml").write_text(yaml.safe_dump(tiny_profile(tiny_llama_dir), sort_keys=False))
    p = Project(root)
    p.run("git", "init", "-q")
    p.run(str(BIN / "dvc"), "init", "-q")
    p.run(str(BIN / "dvc"), "config", "core.analytics", "false")
    return p


# The tests below share one project and run in file order, each building on the last.

def test_cold_repro_runs_every_stage_and_declares_metrics(project):
    ran = project.repro()
    assert {"prepare", "embed@tiny", "fit@tiny-naive", "fit@tiny-causalrm", "evaluate@tiny"} <= ran
    for method in ("naive", "causalrm"):
        assert (project.root / "cache/heads/tiny/default" / method / "card.json").exists()
    shown = project.run(str(BIN / "dvc"), "metrics", "show")
    assert "causalrm" in shown and "r2" in shown
    assert "report" in ran
    report = (project.root / "reports/default.md").read_text()
    assert "## tiny" in report and "| naive |" in report and "| causalrm |" in report
    assert (project.root / "reports/default.png").read_bytes()[:4] == b"\x89PNG"


def test_second_repro_runs_nothing(project):
    assert project.repro() == set()


def test_a_code_change_reruns_the_stages_that_import_it(project):
    """dvc.yaml's deps name the modules each stage runs (tests/test_dvc_deps.py): the simulation
    re-runs prepare only (its table comes out the same, so nothing after it re-runs); the store's
    reader re-runs everything that reads a store, and not prepare."""
    def touch(path):
        with open(project.root / path, "a") as f:
            f.write("\n# touched by test_dvc\n")

    touch("pipeline/simulation.py")
    assert project.repro() == {"prepare"}
    touch("pipeline/store.py")
    ran = project.repro()
    assert {"embed@tiny", "fit@tiny-naive", "fit@tiny-causalrm", "evaluate@tiny"} <= ran
    assert "prepare" not in ran


def test_head_param_reruns_only_fit_and_after(project):
    project.edit_params(lambda p: p["fit"]["head"].update(max_epochs=4))
    ran = project.repro()
    assert {"fit@tiny-naive", "fit@tiny-causalrm", "evaluate@tiny"} <= ran
    assert not ran & {"prepare", "embed@tiny"}


def test_new_backbone_runs_only_its_own_stages(project):
    before = project.digest("cache/heads/tiny")
    project.edit_params(lambda p: p["embed"].update(backbones=["tiny", "tiny-mean"]))
    ran = project.repro()
    assert {"embed@tiny-mean", "fit@tiny-mean-naive", "fit@tiny-mean-causalrm"} <= ran
    assert not ran & {"prepare", "embed@tiny", "fit@tiny-naive", "fit@tiny-causalrm"}
    assert project.digest("cache/heads/tiny") == before


def test_removed_then_restored_backbone_embeds_nothing(project):
    store = project.root / "cache/embeddings/tiny-mean"
    shards = sorted(store.glob("*.parquet"))
    project.edit_params(lambda p: p["embed"].update(backbones=["tiny"]))
    project.repro()
    assert store.exists(), "dvc repro must not delete a persisted embedding store"
    project.edit_params(lambda p: p["embed"].update(backbones=["tiny", "tiny-mean"]))
    project.repro()
    assert sorted(store.glob("*.parquet")) == shards


def test_implicit_mode_is_a_params_switch(project):
    """prepare.feedback: implicit on a second dataset: the same graph prepares clicks, embeds
    nothing new (same pairs), fits implicit heads and reports them; the explicit heads stay."""
    before = project.digest("cache/heads/tiny/default")
    project.edit_params(lambda p: (p["prepare"].update(feedback="implicit"), p.update(dataset="default-implicit"),
                                   p["embed"].update(backbones=["tiny"]),
                                   p["fit"].update(methods=["pu_naive", "nnpu"])))
    ran = project.repro()
    assert {"prepare", "fit@tiny-pu_naive", "fit@tiny-nnpu", "evaluate@tiny", "report"} <= ran
    side = yaml.safe_load((project.root / "data/prepared/default-implicit/provenance.json").read_text())
    assert side["feedback_kind"] == "implicit" and side["feedback"]["realised"]["prior"] > 0
    card = yaml.safe_load((project.root / "cache/heads/tiny/default-implicit/nnpu/card.json").read_text())
    assert card["feedback"] == "implicit" and card["guard"]["mode"] == "nonnegative"
    assert "| nnpu |" in (project.root / "reports/default-implicit.md").read_text()
    assert project.digest("cache/heads/tiny/default") == before
