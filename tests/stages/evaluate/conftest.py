"""Fixtures for the evaluate stage: one torch thread, fast head settings, a toy project on disk."""

from __future__ import annotations

import pytest
import torch

from pipeline.config import FitParams, HeadParams, NoiseParams, PropensityParams
from stages.fit.synthetic import make_world, write_project


@pytest.fixture(autouse=True)
def _one_thread():
    torch.set_num_threads(1)


def fast_fit(**head) -> FitParams:
    """Few epochs, small head, a fixed feedback-model C (no grid search): a fit takes seconds."""
    settings = dict(hidden=(32, 16), lr=3e-3, batch_size=128, max_epochs=25, patience=5)
    settings.update(head)
    return FitParams(head=HeadParams(**settings), propensity=PropensityParams(folds=3),
                     noise=NoiseParams(c=1.0))


@pytest.fixture
def project(tmp_path):
    return write_project(tmp_path, make_world(n=1200, dim=8, seed=0), fit=fast_fit())
