"""Tiny real things for stage one: a 2-layer random Llama with a chat template, the real MiniLM,
a feedback table with long, multi-turn and repeated pairs, and a params.yaml pointing at them."""

from __future__ import annotations

from pathlib import Path

import pytest
from tests.stages.embed.embed_helpers import make_pairs, write_feedback, write_params

from pipeline.config import load_params


@pytest.fixture
def llama_project(tmp_path, tiny_llama_dir) -> Path:
    """A project folder: a 60-pair table and params for the tiny Llama. Returns params path."""
    write_feedback(tmp_path / "data" / "t" / "feedback.parquet", make_pairs(60))
    return write_params(tmp_path, tiny_llama_dir)


@pytest.fixture
def llama_params(llama_project):
    return load_params(llama_project)
