"""The head folder: ``cache/heads/<backbone>/<dataset>/<method>/``.

- ``weights.safetensors``: the head's tensors (its architecture in the metadata);
- ``nuisance/``: the frozen nuisance models, loadable without pickle — logistic folds and the
  PCA projection as safetensors arrays, LightGBM folds as LightGBM's own text models;
- ``card.json``: format version, backbone and embedding spec hash + dimension, dataset (and its
  licence when known), method, params, diagnostics, training curve, metrics, package versions.
The folder is written beside its target and renamed into place, so a crash leaves the old head.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pipeline.atomic import write_json
from pipeline.errors import RmpipeError

FORMAT_VERSION = 1
CARD = "card.json"
WEIGHTS = "weights.safetensors"
PACKAGES = ("rmpipe", "torch", "numpy", "scikit-learn", "lightgbm", "polars", "safetensors")


def package_versions() -> dict[str, str | None]:
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for name in PACKAGES:
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            out[name] = None
    return out


def head_dir(heads_dir: str | Path, backbone: str, dataset: str, method: str) -> Path:
    return Path(heads_dir) / backbone / dataset / method


def _save_classifier(folder: Path, name: str, model) -> dict:
    from safetensors.numpy import save_file

    arrays, texts = model.export()
    files = []
    if arrays:
        save_file({k: np.ascontiguousarray(v) for k, v in arrays.items()}, folder / f"{name}.safetensors")
        files.append(f"{name}.safetensors")
    for key, text in texts.items():
        (folder / f"{name}.{key}.lgb.txt").write_text(text)
        files.append(f"{name}.{key}.lgb.txt")
    return {"kind": model.kind, "folds": len(model.models_), "files": files}


def save_nuisance(folder: Path, nuisance) -> dict:
    """Write the nuisance models into ``folder``; return their description for the card."""
    from safetensors.numpy import save_file

    folder.mkdir(parents=True, exist_ok=True)
    desc: dict = {}
    if nuisance.features is not None:
        f = nuisance.features
        desc["features"] = {"pca_dim": f.pca_dim, "covariates": list(f.covariates),
                            "categories": f.categories_}
        if f.pca_ is not None:
            save_file(f.pca_, folder / "pca.safetensors")
    if nuisance.propensity_model is not None:
        desc["propensity"] = _save_classifier(folder, "propensity", nuisance.propensity_model.classifier_)
        desc["propensity"]["clip_min"] = nuisance.propensity_model.clip_min
    if nuisance.feedback_model is not None:
        desc["feedback_model"] = _save_classifier(folder, "feedback", nuisance.feedback_model)
    if nuisance.rates is not None:
        desc["rates"] = {"rho_pos": nuisance.rates.rho_pos, "rho_neg": nuisance.rates.rho_neg,
                         "source": nuisance.rates.source}
    return desc


def load_nuisance(folder: str | Path, card: dict):
    """``(features, propensity, feedback_model)`` from a head folder (each None if absent)."""
    from safetensors.numpy import load_file

    from stages.fit.nuisance import CrossFitClassifier, Features

    folder = Path(folder) / "nuisance"
    desc = card.get("nuisance", {})
    features = None
    if "features" in desc:
        d = desc["features"]
        features = Features(d["pca_dim"], tuple(d["covariates"]))
        features.categories_ = d["categories"]
        features.pca_ = load_file(folder / "pca.safetensors") if d["pca_dim"] else None

    def classifier(name: str):
        if name not in desc:
            return None
        d = desc[name]
        arrays, texts = {}, {}
        for file in d["files"]:
            if file.endswith(".safetensors"):
                arrays.update(load_file(folder / file))
            else:
                texts[file.split(".")[1]] = (folder / file).read_text()
        return CrossFitClassifier.restore(d["kind"], d["folds"], arrays, texts)

    return features, classifier("propensity"), classifier("feedback_model")


def save_head(folder: str | Path, model, card: dict, nuisance=None) -> Path:
    """Write weights, nuisance models and card into ``folder`` atomically (as a whole)."""
    from safetensors.torch import save_file

    folder = Path(folder)
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", dir=folder.parent))
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o777 & ~umask)  # mkdtemp makes it private; a head folder is not
    try:
        state = {k: v.detach().contiguous() for k, v in model.state_dict().items()}
        save_file(state, tmp / WEIGHTS, metadata={"config": json.dumps(model.config)})
        card = {"format_version": FORMAT_VERSION, "head": model.config, **card,
                "package_versions": package_versions()}
        if nuisance is not None:
            card["nuisance"] = save_nuisance(tmp / "nuisance", nuisance)
        write_json(tmp / CARD, card)
        old = None
        if folder.exists():
            old = folder.with_name(f".{folder.name}.old-{os.getpid()}")
            os.replace(folder, old)
        os.replace(tmp, folder)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return folder


@dataclass
class Head:
    """A loaded head: the model, its card, and the embedding function it was trained on."""

    folder: Path
    model: object
    card: dict

    @property
    def backbone(self) -> str:
        return self.card["backbone"]

    @property
    def spec_hash(self) -> str | None:
        return self.card["embedding"]["spec_hash"]

    @property
    def dim(self) -> int:
        return int(self.card["embedding"]["dim"])

    @property
    def method(self) -> str:
        return self.card["method"]

    def check_store(self, store) -> None:
        """Refuse a store whose backbone or embedding function differs from the head's: scores
        on other embeddings mean nothing."""
        if store.backbone != self.backbone or store.spec_hash != self.spec_hash:
            raise RmpipeError(
                f"head {self.folder} was trained on backbone {self.backbone!r} (embedding spec "
                f"{self.spec_hash}), but the store {store.root} holds backbone {store.backbone!r} "
                f"(spec {store.spec_hash}); use a head trained on this store, or re-embed")
        if store.dim != self.dim:
            raise RmpipeError(f"dimension mismatch: head {self.folder} expects {self.dim}, "
                              f"store {store.root} has {store.dim}")

    def logits(self, X: np.ndarray) -> np.ndarray:
        return self.model.logits(np.asarray(X, dtype=np.float32)).numpy()

    def rewards(self, X: np.ndarray) -> np.ndarray:
        """``σ(f(e))``: the reward, a probability that the response is good."""
        return sigmoid(self.logits(X))


def sigmoid(logits: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-logits))


def load_head(folder: str | Path) -> Head:
    from safetensors import safe_open
    from safetensors.torch import load_file

    from stages.fit.head import RewardHead

    folder = Path(folder)
    if not (folder / CARD).exists() or not (folder / WEIGHTS).exists():
        raise RmpipeError(f"{folder}: not a head folder (no {CARD} / {WEIGHTS}; run `rmpipe fit`)")
    try:
        card = json.loads((folder / CARD).read_text())
    except json.JSONDecodeError:
        raise RmpipeError(f"{folder / CARD}: unreadable head card") from None
    if card.get("format_version") != FORMAT_VERSION:
        raise RmpipeError(f"{folder}: head format {card.get('format_version')}, expected {FORMAT_VERSION}")
    with safe_open(str(folder / WEIGHTS), framework="pt") as f:
        config = json.loads(f.metadata()["config"])
    # heads written before "bias" was recorded always had an output bias
    model = RewardHead(config["in_dim"], config["hidden"], config["activation"], config["dropout"],
                       bias=config.get("bias", True))
    model.load_state_dict(load_file(folder / WEIGHTS))
    model.eval()
    return Head(folder, model, card)
