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


def test_only_the_implicit_params_yaml_may_be_missing(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert load_params() == Params()  # no ./params.yaml: the built-in defaults
    with pytest.raises(RmpipeError, match=r"absent\.yaml: no such settings file"):
        load_params(tmp_path / "absent.yaml")
    (tmp_path / "params.yaml").write_text("dataset: mine\n")
    assert load_params().dataset == "mine"


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


def test_the_closed_sets_are_the_ones_the_code_implements():
    """Params and the CLI take their choices from pipeline.config; the code must implement them."""
    from pipeline import config
    from stages.embed.pooling import POOLERS
    from pipeline.reward_head import ACTIVATIONS
    from stages.fit.methods import METHODS, methods_for
    from pipeline.simulation import SHAPES

    assert tuple(METHODS) == config.METHOD_NAMES
    for kind, names in config.METHODS.items():
        assert tuple(methods_for(kind)) == names
    assert tuple(methods_for("explicit", audit=True)) == config.AUDIT_METHODS
    assert tuple(SHAPES) == config.SHAPES
    assert tuple(ACTIVATIONS) == config.ACTIVATIONS
    assert tuple(POOLERS) == config.POOLINGS


def test_a_check_names_the_real_path_of_a_named_section(tmp_path):
    path = tmp_path / "params.yaml"
    path.write_text("backbones:\n  mini:\n    model: x\n    pooling: cls\n")
    with pytest.raises(RmpipeError, match=rf"^{path}: backbones\.mini\.pooling must be one of last, mean, "
                                          r"got 'cls'$"):
        load_params(path)


def test_a_replaced_field_is_checked_too():
    """CLI flags go through dataclasses.replace, which runs the same checks."""
    import dataclasses

    head = Params().fit.head
    with pytest.raises(RmpipeError, match=r"^fit\.head\.batch_size must be a positive integer, got 0$"):
        dataclasses.replace(head, batch_size=0)
    assert dataclasses.replace(head, batch_size=7).batch_size == 7


def test_valid_edge_values_are_accepted(tmp_path):
    path = tmp_path / "params.yaml"
    path.write_text("fit:\n  noise: {rho_pos: 0.0, rho_neg: 0.0, q: 1.0}\n  head: {hidden: [], threads: 0}\n"
                    "  propensity: {clip_min: 1.0, c: null}\n  guard: {beta: 0.0, gamma: 1.0}\n"
                    "prepare:\n  simulate: {alpha: 1.0, target_rate: 1.0}\n"
                    "backbones:\n  b: {model: x, layer: -2, device: 'cuda:1'}\n")
    params = load_params(path)
    assert params.fit.head.hidden == () and params.backbones["b"].layer == -2
