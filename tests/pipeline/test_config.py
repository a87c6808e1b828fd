"""params.yaml -> typed, frozen dataclasses; mistakes named by their dotted path."""

from pathlib import Path

import pytest

from pipeline.config import Params, load_params
from pipeline.errors import RmpipeError

REPO = Path(__file__).resolve().parents[2]


def test_repo_params_load_and_name_every_default_backbone():
    params = load_params(REPO / "params.yaml")
    assert isinstance(params, Params)
    for name in params.embed.backbones:
        assert params.backbone(name).model
    assert params.table_path == Path(params.data_dir) / params.dataset / "feedback.parquet"


def test_missing_file_gives_defaults(tmp_path):
    assert load_params(tmp_path / "absent.yaml") == Params()


def test_scientific_notation_strings_become_floats(tmp_path):
    path = tmp_path / "params.yaml"
    path.write_text("fit:\n  head:\n    lr: 5e-4\n")
    assert load_params(path).fit.head.lr == pytest.approx(5e-4)


def test_params_are_frozen():
    with pytest.raises(AttributeError):
        Params().dataset = "other"


@pytest.mark.parametrize(
    "text, message",
    [
        ("fit:\n  head:\n    lerning_rate: 0.1\n", r"unknown setting fit\.head\.lerning_rate"),
        ("fit:\n  head:\n    batch_size: many\n", r"fit\.head\.batch_size must be int"),
        ("embed:\n  backbones: minilm\n", r"embed\.backbones must be a list"),
        ("prepare: [1, 2]\n", r"prepare must be a mapping"),
        ("backbones:\n  x:\n    pooling: last\n", r"backbones\.x"),
        ("fit: {head: [\n", r"not valid YAML"),
    ],
)
def test_bad_params_are_named(tmp_path, text, message):
    path = tmp_path / "params.yaml"
    path.write_text(text)
    with pytest.raises(RmpipeError, match=message) as err:
        load_params(path)
    assert str(path) in str(err.value)


def test_unknown_backbone_lists_the_known_ones():
    params = load_params(REPO / "params.yaml")
    with pytest.raises(RmpipeError, match="unknown backbone 'nope'.*minilm"):
        params.backbone("nope")
