"""The head folder: ``cache/heads/<backbone>/<dataset>/<method>/``, written by fit and read by
evaluate, score, rerank, serve and export.

- ``weights.safetensors``: the head's tensors (its architecture in the metadata);
- ``nuisance/``: the frozen nuisance models, loadable without pickle — logistic folds and the
  PCA projection as safetensors arrays, LightGBM folds as LightGBM's own text models, the audit
  propensity's strata (k-means centres as an array, covariate levels in the card);
- ``card.json``: a :class:`HeadCard` — format version, backbone and embedding key + dimension,
  dataset (and its licence when known), method, params, diagnostics, training curve, metrics,
  package versions, and the SHA-256 and size of every other file in the folder.

Like the store's shards, every file is checked against its recorded checksum when read, so a
flipped byte or a truncated file is refused by name instead of giving garbage rewards. The folder
is written beside its target and renamed into place, so a crash leaves the old head.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from pipeline.atomic import write_json
from pipeline.errors import RmpipeError
from pipeline.shards import file_sha256

FORMAT_VERSION = 1
CARD = "card.json"
WEIGHTS = "weights.safetensors"
NUISANCE = "nuisance"
PACKAGES = ("rmpipe", "torch", "numpy", "scikit-learn", "lightgbm", "polars", "safetensors")
REFIT = "refit the head with `rmpipe fit`"


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


# --- the card ------------------------------------------------------------------------------
@dataclass(frozen=True)
class EmbeddingRef:
    """The store key the head was trained on: scores on any other embeddings mean nothing."""

    spec_hash: str | None
    dim: int
    store: str = ""


@dataclass(frozen=True)
class Uses:
    """Which nuisance estimates the method consumed."""

    propensity: bool = False
    noise_rates: bool = False
    imputation: bool = False


@dataclass(frozen=True)
class HeadCard:
    """``card.json`` as a typed object. The nested records of a run (diagnostics, guard,
    training curve) stay plain JSON: they are reports, read by key where they are shown.

    ``from_dict`` refuses a card that lacks a key every head has had (naming it and saying to
    refit), fills the keys later versions added (``feedback``, ``licence``, ``files`` …) with
    their old meaning, and keeps keys it does not know in ``extra`` so they are written back."""

    backbone: str
    embedding: EmbeddingRef
    dataset: str
    method: str
    uses: Uses = Uses()
    head: dict = field(default_factory=dict)  # the architecture (also in the weights' metadata)
    params: dict = field(default_factory=dict)
    rows: dict = field(default_factory=dict)
    diagnostics: dict = field(default_factory=dict)
    guard: dict = field(default_factory=dict)
    runaway: dict = field(default_factory=dict)
    training: dict = field(default_factory=dict)
    metrics: dict = field(default_factory=dict)
    feedback: str = "explicit"  # cards before implicit feedback were all explicit
    licence: str | None = None
    method_doc: str = ""
    imputation_target: str | None = None
    nuisance: dict = field(default_factory=dict)
    package_versions: dict = field(default_factory=dict)
    files: dict = field(default_factory=dict)  # relative path -> {"sha256", "bytes"}; {} before checksums
    format_version: int = FORMAT_VERSION
    extra: dict = field(default_factory=dict)

    REQUIRED = ("backbone", "embedding", "dataset", "method", "uses", "head", "params", "rows",
                "diagnostics", "guard", "runaway", "training", "metrics")

    def to_dict(self) -> dict:
        out = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "extra"}
        out["embedding"] = dataclasses.asdict(self.embedding)
        out["uses"] = dataclasses.asdict(self.uses)
        return {**self.extra, **out}

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True) + "\n"

    @classmethod
    def from_dict(cls, obj: dict, where: str | Path = CARD) -> "HeadCard":
        if not isinstance(obj, dict):
            raise RmpipeError(f"{where}: not a head card (a JSON object); {REFIT}")
        version = obj.get("format_version")
        if isinstance(version, int) and not isinstance(version, bool) and version > FORMAT_VERSION:
            raise RmpipeError(f"{where}: head format {version} was written by a newer rmpipe (this "
                              f"one reads format {FORMAT_VERSION}); upgrade rmpipe to load it")
        if version != FORMAT_VERSION:
            raise RmpipeError(f"{where}: head format {version}, expected {FORMAT_VERSION}; {REFIT}")
        missing = [k for k in cls.REQUIRED if k not in obj]
        if missing:
            raise RmpipeError(f"{where}: head card lacks {', '.join(missing)} (written by another "
                              f"rmpipe?); {REFIT}")
        known = {f.name for f in dataclasses.fields(cls)} - {"extra"}
        values = {k: v for k, v in obj.items() if k in known}
        values["embedding"] = _record(EmbeddingRef, obj["embedding"], f"{where}: embedding")
        values["uses"] = _record(Uses, obj["uses"], f"{where}: uses")
        return cls(**values, extra={k: v for k, v in obj.items() if k not in known})

    @classmethod
    def from_json(cls, text: str, where: str | Path = CARD) -> "HeadCard":
        try:
            return cls.from_dict(json.loads(text), where)
        except json.JSONDecodeError:
            raise RmpipeError(f"{where}: unreadable head card (not JSON); {REFIT}") from None


def _record(cls, obj, where: str):
    """A small record from its JSON object (keys it does not know are ignored)."""
    if not isinstance(obj, dict):
        raise RmpipeError(f"{where}: not a JSON object; {REFIT}")
    names = {f.name for f in dataclasses.fields(cls)}
    try:
        return cls(**{k: v for k, v in obj.items() if k in names})
    except TypeError:
        missing = sorted(f.name for f in dataclasses.fields(cls) if f.name not in obj)
        raise RmpipeError(f"{where}: lacks {', '.join(missing)}; {REFIT}") from None


def read_card(folder: str | Path) -> HeadCard:
    path = Path(folder) / CARD
    if not path.exists():
        raise RmpipeError(f"{folder}: not a head folder (no {CARD}; run `rmpipe fit`)")
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as exc:
        raise RmpipeError(f"{path}: unreadable head card ({type(exc).__name__}); {REFIT}") from None
    return HeadCard.from_json(text, path)


# --- integrity -----------------------------------------------------------------------------
def checksums(folder: Path) -> dict[str, dict]:
    """``{relative path: {"sha256", "bytes"}}`` for every file in ``folder`` but the card."""
    out = {}
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        rel = path.relative_to(folder).as_posix()
        if rel != CARD:
            out[rel] = {"sha256": file_sha256(path), "bytes": path.stat().st_size}
    return out


def verify_file(folder: Path, card: HeadCard, rel: str) -> Path:
    """``folder/rel``, refused unless it matches the card's size and checksum (cards written
    before checksums carry none: their files are read unchecked)."""
    path = folder / rel
    if not path.exists():
        raise RmpipeError(f"{path}: head file missing; {REFIT}")
    want = card.files.get(rel)
    if want is None and card.files:
        raise RmpipeError(f"{path}: not listed in the head's card; {REFIT}")
    if want is not None and (path.stat().st_size != want["bytes"] or file_sha256(path) != want["sha256"]):
        raise RmpipeError(f"{path}: head file is truncated or corrupted (checksum mismatch); {REFIT}")
    return path


# --- nuisance models -----------------------------------------------------------------------
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
    audit = getattr(nuisance, "audit_model", None)
    if audit is not None:  # its strata, so evaluate can set the simulation's truth beside each π̂(s, y)
        desc["audit_strata"] = {"strata": audit.strata, "k": audit.n_strata_, "covariates": list(audit.covariates),
                                "levels": None if audit.levels_ is None else [str(v) for v in audit.levels_],
                                "files": []}
        if audit.centers_ is not None:
            save_file({"centers": np.ascontiguousarray(audit.centers_)}, folder / "audit_strata.safetensors")
            desc["audit_strata"]["files"] = ["audit_strata.safetensors"]
    return desc


def load_nuisance(folder: str | Path, card: HeadCard):
    """``(features, propensity, feedback_model)`` from a head folder (each None if absent)."""
    from safetensors.numpy import load_file

    from pipeline.nuisance import CrossFitClassifier, Features

    folder = Path(folder)
    desc = card.nuisance

    def arrays_of(file: str) -> dict:
        path = verify_file(folder, card, f"{NUISANCE}/{file}")
        try:
            return load_file(path)
        except Exception as exc:  # safetensors raises its own error types
            raise RmpipeError(f"{path}: unreadable nuisance file ({type(exc).__name__}); {REFIT}") from None

    features = None
    if "features" in desc:
        d = desc["features"]
        features = Features(d["pca_dim"], tuple(d["covariates"]))
        features.categories_ = d["categories"]
        features.pca_ = arrays_of("pca.safetensors") if d["pca_dim"] else None

    def classifier(name: str):
        if name not in desc:
            return None
        d = desc[name]
        arrays, texts = {}, {}
        for file in d["files"]:
            if file.endswith(".safetensors"):
                arrays.update(arrays_of(file))
            else:
                texts[file.split(".")[1]] = verify_file(folder, card, f"{NUISANCE}/{file}").read_text()
        return CrossFitClassifier.restore(d["kind"], d["folds"], arrays, texts)

    return features, classifier("propensity"), classifier("feedback_model")


def load_audit_strata(folder: str | Path, card: HeadCard) -> dict | None:
    """The audit propensity's strata from a head folder (``{strata, k, covariates, levels,
    centers}``), or None when the fit had no audit propensity."""
    from safetensors.numpy import load_file

    d = card.nuisance.get("audit_strata")
    if d is None:
        return None
    centers = None
    for file in d["files"]:
        path = verify_file(Path(folder), card, f"{NUISANCE}/{file}")
        try:
            centers = load_file(path)["centers"]
        except Exception as exc:  # safetensors raises its own error types
            raise RmpipeError(f"{path}: unreadable nuisance file ({type(exc).__name__}); {REFIT}") from None
    return {**{k: d[k] for k in ("strata", "k", "covariates", "levels")}, "centers": centers}


# --- the head ------------------------------------------------------------------------------
def save_head(folder: str | Path, model, card: HeadCard, nuisance=None) -> Path:
    """Write weights, nuisance models and card (with every file's checksum) into ``folder``,
    atomically as a whole."""
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
        desc = save_nuisance(tmp / NUISANCE, nuisance) if nuisance is not None else {}
        card = dataclasses.replace(card, format_version=FORMAT_VERSION, head=model.config,
                                   nuisance=desc, package_versions=package_versions(),
                                   files=checksums(tmp))
        write_json(tmp / CARD, card.to_dict())
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
    card: HeadCard

    @property
    def backbone(self) -> str:
        return self.card.backbone

    @property
    def spec_hash(self) -> str | None:
        return self.card.embedding.spec_hash

    @property
    def dim(self) -> int:
        return int(self.card.embedding.dim)

    @property
    def method(self) -> str:
        return self.card.method

    def check_key(self, spec_hash: str | None, where: str) -> None:
        """Refuse an embedding function (``where``: what gives it) other than the head's."""
        if spec_hash != self.spec_hash:
            raise RmpipeError(
                f"head {self.folder} was trained on backbone {self.backbone!r} with embedding spec "
                f"{self.spec_hash}, but {where} gives spec {spec_hash}; use a head trained on this "
                f"backbone's settings, or restore them")

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
    """The head in ``folder``, its weights checked against the card's checksum."""
    from safetensors import safe_open
    from safetensors.torch import load_file

    from pipeline.reward_head import RewardHead

    folder = Path(folder)
    card = read_card(folder)
    path = verify_file(folder, card, WEIGHTS)
    try:
        with safe_open(str(path), framework="pt") as f:
            config = json.loads(f.metadata()["config"])
        state = load_file(path)
        # heads written before "bias" was recorded always had an output bias
        model = RewardHead(config["in_dim"], config["hidden"], config["activation"], config["dropout"],
                           bias=config.get("bias", True))
        model.load_state_dict(state)
    except (RmpipeError, KeyboardInterrupt):
        raise
    except Exception as exc:  # an unchecked (pre-checksum) file that does not parse
        raise RmpipeError(f"{path}: unreadable head weights ({type(exc).__name__}); {REFIT}") from None
    model.eval()
    return Head(folder, model, card)
