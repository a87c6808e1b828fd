"""One small real project for the application layer: 240 built-in rows embedded with the real
MiniLM and a naive head fitted on them (module-scoped: the server tests share it)."""

from __future__ import annotations

import pytest

from stages.fit.run import fit
from tests.stages.fit.conftest import small_minilm_project


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """``(params, head folder)`` of a fitted MiniLM head."""
    import torch

    torch.set_num_threads(1)
    params = small_minilm_project(tmp_path_factory.mktemp("project"))
    head = fit(params, "minilm", ["naive"], progress=False, log=lambda _: None)["naive"]
    return params, head
