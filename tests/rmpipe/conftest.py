"""One small real project for the application layer: 240 built-in rows embedded with the real
MiniLM and a naive head fitted on them (module-scoped: the server tests share it)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from pipeline.config import EmbedParams, EvaluateParams, load_params
from stages.embed.run import embed
from stages.fit.run import fit
from stages.prepare.run import prepare
from tests.stages.fit.conftest import fast_fit

REPO = Path(__file__).resolve().parents[2]


def small_minilm_project(root: Path):
    """The repo's params shrunk to 240 built-in rows, everything under ``root``."""
    params = load_params(REPO / "params.yaml")
    source = dataclasses.replace(params.prepare.source, kind="builtin", rows=240)
    params = dataclasses.replace(
        params, dataset="s", data_dir=str(root / "data"),
        prepare=dataclasses.replace(params.prepare, source=source),
        embed=EmbedParams(backbones=("minilm",), store_dir=str(root / "emb"),
                          models_dir=str(root / "models")),
        fit=dataclasses.replace(fast_fit(max_epochs=5), heads_dir=str(root / "heads"), methods=("naive",)),
        evaluate=EvaluateParams(reports_dir=str(root / "reports")))
    prepare(params)
    embed(params, "minilm", progress=False)
    return params


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """``(params, head folder)`` of a fitted MiniLM head."""
    import torch

    torch.set_num_threads(1)
    params = small_minilm_project(tmp_path_factory.mktemp("project"))
    head = fit(params, "minilm", ["naive"], progress=False, log=lambda _: None)["naive"]
    return params, head
