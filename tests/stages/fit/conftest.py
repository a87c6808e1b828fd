"""Fixtures for the fit stage: one torch thread, fast head settings, a toy project on disk."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import torch

from pipeline.config import EmbedParams, EvaluateParams, FitParams, HeadParams, NoiseParams, PropensityParams, load_params
from pipeline.synthetic import make_world, write_project

REPO = Path(__file__).resolve().parents[3]


@pytest.fixture(autouse=True)
def _one_thread():
    torch.set_num_threads(1)


def fast_fit(**head) -> FitParams:
    """Few epochs, small head, a fixed feedback-model C (no grid search): a fit takes seconds."""
    settings = dict(hidden=(32, 16), lr=3e-3, batch_size=128, max_epochs=25, patience=5)
    settings.update(head)
    return FitParams(head=HeadParams(**settings), propensity=PropensityParams(folds=3),
                     noise=NoiseParams(c=1.0))


def small_minilm_project(root: Path):
    """The repo's params shrunk to 240 built-in rows embedded with the real MiniLM, everything
    under ``root`` (a naive head's fast settings, not yet fitted)."""
    from stages.embed.run import embed
    from stages.prepare.run import prepare

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


@pytest.fixture
def project(tmp_path):
    return write_project(tmp_path, make_world(n=1200, dim=8, seed=0), fit=fast_fit())
