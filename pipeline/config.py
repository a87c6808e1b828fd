"""Settings: ``params.yaml`` into typed, frozen dataclasses, once. Nothing else reads YAML.

Each stage has its section; CLI flags override fields with :func:`dataclasses.replace`
(:mod:`pipeline.options`). Every dataclass checks its own values in ``__post_init__``, so a bad
value, an unknown key or a wrong type is refused at load, before any work, named by its dotted
path (:mod:`pipeline.checks`); a replaced field is checked the same way.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

import yaml

from pipeline import checks as check
from pipeline.checks import from_dict
from pipeline.errors import RmpipeError

DEFAULT_PARAMS = Path("params.yaml")

# The closed sets settings choose from. The methods registry (stages/fit/methods.py) and the
# stage code implement exactly these names (tests/pipeline/test_config.py holds them equal);
# they live here so that loading params and the CLI's help need no torch.
METHODS = {"explicit": ("naive", "ips", "dr", "noise", "causalrm", "causalrm_dr"),
           "implicit": ("pu_naive", "scar", "upu", "nnpu", "sar", "sar_noise")}
# Heads only a randomised audit makes possible (docs/audit.md): explicit feedback, not the paper's six.
AUDIT_METHODS = ("audit_only", "logs_plus_audit")
METHOD_NAMES = METHODS["explicit"] + AUDIT_METHODS + METHODS["implicit"]
FEEDBACK_KINDS = tuple(METHODS)
SOURCE_KINDS = ("builtin", "hub", "shared", "file")
SHAPES = ("monotone", "extremes")  # pipeline/simulation.py
POOLINGS = ("last", "mean")  # stages/embed/pooling.py
DTYPES = ("auto", "float32", "bfloat16", "float16")  # auto: stages/embed/precision.py
STORE_DTYPES = ("float32", "float16")  # pipeline/shards.py
BACKENDS = ("hf", "vllm")
CLASSIFIERS = ("logistic", "lightgbm")  # pipeline/nuisance.py
PROPENSITY_MODELS = CLASSIFIERS + ("audit",)  # audit: π(s, y) from a randomised audit (stages/fit/audit.py)
STRATA = ("none", "kmeans", "covariates")  # stages/fit/audit.py
AUDIT_LABELS = ("noisy", "clean")  # an audit answered by users (same noise) or by annotators
TARGETS = ("clean", "noisy")  # stages/fit/imputation.py
ACTIVATIONS = ("leaky_relu", "relu", "gelu", "tanh")  # pipeline/reward_head.py


# --- prepare -------------------------------------------------------------------------------
@dataclass(frozen=True)
class SourceParams:
    """Where the feedback comes from. ``kind``: builtin | hub | shared | file."""

    kind: str = "builtin"
    name: str | None = None  # hub id, or shared set name (hh-rlhf | pandalm | llmbar)
    path: str | None = None  # kind=file: the user's log file; kind=hub: optional local folder
    config: str | None = None  # hub config name or data_dir (PKU's alpaca-7b, hh-rlhf's subsets)
    columns: dict[str, str] = field(default_factory=dict)  # kind=file: contract -> user column
    rows: int = 12000  # kind=builtin: number of responses generated
    seed: int = 0
    split: str | None = None  # kind=hub: load only this split (then 60/20/20)
    licence: str | None = None  # kind=file: the licence of your logs, recorded beside the table
    audit_share: float | None = None  # shared:coat: share of each train/val shopper's random ratings kept
    #                                   as audit rows (None: a quarter); seeded by ``seed``

    section: ClassVar[str] = "prepare.source"

    def __post_init__(self):
        check.one_of(self, "kind", SOURCE_KINDS)
        check.integer(self, "rows", 10)
        check.integer(self, "seed", 0)
        check.within(self, "audit_share", "[0, 1]", optional=True)


@dataclass(frozen=True)
class ImplicitSimParams:
    """Implicit mode's simulation (docs/method.md, "Implicit feedback"): the good responses are acted
    on with the explicit protocol's propensity; ``rho_neg`` adds mis-clicks on bad ones."""

    rho_neg: float = 0.0  # P(a = 1 | y = 0)
    log_propensity: bool = False  # write the true labelling propensity as propensity_logged

    section: ClassVar[str] = "prepare.simulate.implicit"

    def __post_init__(self):
        check.within(self, "rho_neg", "[0, 1)")


@dataclass(frozen=True)
class SimulateParams:
    """The paper's protocol (docs/method.md): propensity from the rating, then label noise."""

    enabled: bool = True
    alpha: float = 0.5
    target_rate: float = 0.2
    rho_pos: float = 0.1
    rho_neg: float = 0.2
    shape: str = "monotone"
    seed: int = 0
    audit_share: float = 0.0  # share of the non-test rows drawn into a randomised audit (0: none)
    audit_labels: str = "noisy"  # noisy: users answer the audit (same flips) | clean: annotators
    implicit: ImplicitSimParams = field(default_factory=ImplicitSimParams)  # prepare.feedback: implicit

    section: ClassVar[str] = "prepare.simulate"

    def __post_init__(self):
        check.within(self, "alpha", "(0, 1]")
        check.within(self, "target_rate", "(0, 1]")
        check.within(self, "rho_pos", "[0, 1)")
        check.within(self, "rho_neg", "[0, 1)")
        if self.rho_pos + self.rho_neg >= 1:
            check.bad(self, "rho_pos", f"+ rho_neg must be < 1 (labels would carry no signal), got "
                      f"{self.rho_pos} + {self.rho_neg} = {self.rho_pos + self.rho_neg:g}")
        check.one_of(self, "shape", SHAPES)
        check.integer(self, "seed", 0)
        check.within(self, "audit_share", "[0, 1)")
        check.one_of(self, "audit_labels", AUDIT_LABELS)


@dataclass(frozen=True)
class SplitParams:
    seed: int = 0
    fractions: tuple[float, float, float] = (0.6, 0.2, 0.2)  # one-split sources: train/val/test
    val_share: float = 0.2  # a source with its own test split: share of train prompts -> val

    section: ClassVar[str] = "prepare.split"

    def __post_init__(self):
        fr = self.fractions
        if len(fr) != 3 or not all(isinstance(f, (int, float)) and 0 < f < 1 for f in fr) \
                or abs(sum(fr) - 1) > 1e-6:
            check.bad(self, "fractions", f"must be three positive numbers (train, val, test) summing "
                      f"to 1, got {list(fr)}")
        check.within(self, "val_share", "(0, 1)")
        check.integer(self, "seed", 0)


@dataclass(frozen=True)
class PrepareParams:
    source: SourceParams = field(default_factory=SourceParams)
    simulate: SimulateParams = field(default_factory=SimulateParams)
    split: SplitParams = field(default_factory=SplitParams)
    feedback: str = "explicit"  # explicit (observed + 0/1 feedback) | implicit (clicks: 1 acted, 0 not)

    section: ClassVar[str] = "prepare"

    def __post_init__(self):
        check.one_of(self, "feedback", FEEDBACK_KINDS)


# --- embed ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class BackboneSpec:
    """One backbone. The fields above ``backend`` define the embedding *function* (they go into
    the store's hash); ``backend``, ``batch_tokens`` and ``device`` are execution settings."""

    model: str  # pypi:<package> | local folder | hub id
    revision: str | None = None
    pooling: str = "last"  # last | mean
    layer: int = -1  # -1: final (normed) output; k: hidden_states[k] (0 = embeddings), hf only
    max_tokens: int = 512  # longer pairs lose the front of the prompt, then the response's tail
    chat_template: bool = True  # false: the tokenizer's (prompt, response) pair encoding
    dtype: str = "auto"  # auto (bfloat16 where native, else float32) | float32 | bfloat16 | float16
    backend: str = "hf"  # hf | vllm
    batch_tokens: int | None = None  # padded tokens per batch (hf), max_num_batched_tokens (vllm);
    #                                  None: by device (stages.embed.hf_backend.default_batch_tokens)
    device: str = "auto"  # auto | cpu | cuda | cuda:N

    section: ClassVar[str] = "backbones.<name>"  # the loader names the backbone

    def __post_init__(self):
        check.one_of(self, "pooling", POOLINGS)
        check.integer(self, "layer", None)
        check.integer(self, "max_tokens", 8)
        check.one_of(self, "dtype", DTYPES)
        check.one_of(self, "backend", BACKENDS)
        check.integer(self, "batch_tokens", optional=True)
        if not re.fullmatch(r"auto|cpu|mps|cuda(:\d+)?", str(self.device)):
            check.bad(self, "device", f"must be auto, cpu, cuda or cuda:N, got {self.device!r}")
        if self.backend == "vllm" and self.layer != -1:
            check.bad(self, "layer", f"must be -1 with backend vllm (it gives only the last layer), got "
                      f"{self.layer}; use backend: hf for another layer")


@dataclass(frozen=True)
class EmbedParams:
    backbones: tuple[str, ...] = ("minilm",)
    store_dir: str = "cache/embeddings"
    models_dir: str = "cache/models"  # dequantised GGUF weights, made once
    commit_rows: int = 2048  # rows per committed shard: what a crash can cost at most
    store_dtype: str = "float32"  # float32 | float16: half the disk of the store

    section: ClassVar[str] = "embed"

    def __post_init__(self):
        check.integer(self, "commit_rows")
        check.one_of(self, "store_dtype", STORE_DTYPES)


# --- fit -----------------------------------------------------------------------------------
@dataclass(frozen=True)
class PropensityParams:
    model: str = "logistic"  # logistic | lightgbm | audit (π(s, y) by the Bayes identity: fit.audit)
    folds: int = 5
    clip_min: float = 0.1
    pca_dim: int | None = None  # project embeddings for the nuisance models (LightGBM on wide D)
    covariates: tuple[str, ...] = ()
    use_logged: bool = True  # a propensity_logged column, where present, is used as given
    c: float | None = 1.0  # logistic inverse regularisation (standardised features); None: by CV log loss
    seed: int = 0  # folds and LightGBM

    section: ClassVar[str] = "fit.propensity"

    def __post_init__(self):
        check.one_of(self, "model", PROPENSITY_MODELS)
        check.integer(self, "folds", 2)
        check.within(self, "clip_min", "(0, 1]")
        check.integer(self, "pca_dim", optional=True)
        check.within(self, "c", "(0, inf)", optional=True)
        check.integer(self, "seed", 0)


@dataclass(frozen=True)
class NoiseParams:
    """Known rates, or None to estimate them by anchor quantiles at ``q``."""

    rho_pos: float | None = None
    rho_neg: float | None = None
    q: float = 0.97
    model: str = "logistic"  # classifier of the observed feedback (anchors and imputation)
    c: float | None = None  # logistic inverse regularisation; None: by cross-validated log loss

    section: ClassVar[str] = "fit.noise"

    def __post_init__(self):
        check.within(self, "rho_pos", "[0, 1)", optional=True)
        check.within(self, "rho_neg", "[0, 1)", optional=True)
        if (self.rho_pos is None) != (self.rho_neg is None):
            check.bad(self, "rho_pos", "and rho_neg: give both, or neither (to estimate them)")
        if self.rho_pos is not None and self.rho_pos + self.rho_neg >= 1:
            check.bad(self, "rho_pos", f"+ rho_neg must be < 1 (the feedback would carry no signal), "
                      f"got {self.rho_pos} + {self.rho_neg} = {self.rho_pos + self.rho_neg:g}")
        check.within(self, "q", "(0.5, 1]")
        check.one_of(self, "model", CLASSIFIERS)
        check.within(self, "c", "(0, inf)", optional=True)


@dataclass(frozen=True)
class AuditParams:
    """A randomised audit (rows with ``audit`` true): how ``fit.propensity.model: audit`` estimates
    ``π(s, y)`` and what else the audit rows are used for (docs/audit.md)."""

    strata: str = "kmeans"  # none | kmeans (of the nuisance features) | covariates
    k: int | None = None  # kmeans strata; None: one per 50 train audit rows, 1..20
    covariates: tuple[str, ...] = ()  # strata = the values of these table columns (strata: covariates)
    smoothing: float = 20.0  # pseudo-rows pulling a thin stratum toward the global rates
    labels: str = "noisy"  # noisy: the audit's answers carry the users' flips | clean: annotators
    select: bool = False  # early stopping on the val audit rows' (noise-corrected) risk
    calibrate: bool = False  # Platt-scale each head on the val audit rows

    section: ClassVar[str] = "fit.audit"

    def __post_init__(self):
        check.one_of(self, "strata", STRATA)
        check.integer(self, "k", 1, optional=True)
        check.within(self, "smoothing", "[0, inf)")
        check.one_of(self, "labels", AUDIT_LABELS)
        if self.strata == "covariates" and not self.covariates:
            check.bad(self, "covariates", "must name at least one column when strata is covariates")


@dataclass(frozen=True)
class ImputationParams:
    target: str = "clean"  # clean (rmpipe) | noisy (the reference)

    section: ClassVar[str] = "fit.imputation"

    def __post_init__(self):
        check.one_of(self, "target", TARGETS)


@dataclass(frozen=True)
class HeadParams:
    hidden: tuple[int, ...] = (256, 64)
    activation: str = "leaky_relu"
    dropout: float = 0.0
    lr: float = 5e-4
    batch_size: int = 512
    max_epochs: int = 100
    patience: int = 10
    weight_decay: float = 1e-6
    seed: int = 0
    threads: int = 0  # torch CPU threads; 0 = torch's default

    section: ClassVar[str] = "fit.head"

    def __post_init__(self):
        for i, width in enumerate(self.hidden):
            if isinstance(width, bool) or not isinstance(width, int) or width < 1:
                check.bad(self, f"hidden[{i}]", f"must be a positive integer, got {width!r}")
        check.one_of(self, "activation", ACTIVATIONS)
        check.within(self, "dropout", "[0, 1)")
        check.within(self, "lr", "(0, inf)")
        check.integer(self, "batch_size")
        check.integer(self, "max_epochs")
        check.integer(self, "patience")
        check.within(self, "weight_decay", "[0, inf)")
        check.integer(self, "seed", 0)
        check.integer(self, "threads", 0)


@dataclass(frozen=True)
class GuardParams:
    """Non-negative risk correction (Kiryo et al. 2017) against a runaway surrogate."""

    nonnegative: bool = True
    beta: float = 0.0  # the guard fires when a class risk falls below -beta
    gamma: float = 1.0  # the step taken back along that risk's gradient

    section: ClassVar[str] = "fit.guard"

    def __post_init__(self):
        check.within(self, "beta", "[0, inf)")
        check.within(self, "gamma", "(0, 1]")


@dataclass(frozen=True)
class PUParams:
    """Implicit mode's nuisance quantities (docs/method.md, "Implicit feedback"): each given, or None
    to estimate it. ``c``: the constant labelling frequency of scar (Elkan & Noto's e1 on a
    held-out classifier of the action); ``prior``: the class prior π of upu/nnpu (from ``c``:
    π = P(a = 1) / c); ``rho_neg``: the mis-click rate of sar_noise (None: the low quantile
    ``q`` of that classifier, an anchor estimate)."""

    c: float | None = None
    prior: float | None = None
    rho_neg: float | None = 0.0
    q: float = 0.03
    model: str = "logistic"  # the classifier g(x) ≈ P(a = 1 | x)
    propensity_columns: tuple[str, ...] = ()  # sar without propensity_logged: the columns e(x) depends on (SAR-EM)

    section: ClassVar[str] = "fit.pu"

    def __post_init__(self):
        if len(set(self.propensity_columns)) != len(self.propensity_columns) or not all(self.propensity_columns):
            raise RmpipeError(f"fit.pu.propensity_columns must be distinct column names, got {list(self.propensity_columns)!r}")
        check.within(self, "c", "(0, 1]", optional=True)
        check.within(self, "prior", "(0, 1]", optional=True)
        check.within(self, "rho_neg", "[0, 1)", optional=True)
        check.within(self, "q", "(0, 0.5)")
        check.one_of(self, "model", CLASSIFIERS)


@dataclass(frozen=True)
class FitParams:
    methods: tuple[str, ...] = METHODS["explicit"]
    heads_dir: str = "cache/heads"
    propensity: PropensityParams = field(default_factory=PropensityParams)
    noise: NoiseParams = field(default_factory=NoiseParams)
    imputation: ImputationParams = field(default_factory=ImputationParams)
    head: HeadParams = field(default_factory=HeadParams)
    guard: GuardParams = field(default_factory=GuardParams)
    pu: PUParams = field(default_factory=PUParams)
    audit: AuditParams = field(default_factory=AuditParams)
    stream_gb: float = 8.0  # embeddings above this (float32 GiB) are read shard by shard, not loaded

    section: ClassVar[str] = "fit"

    @property
    def row_columns(self) -> tuple[str, ...]:
        """Table columns beside the contract that the nuisance models read (propensity
        covariates, SAR-EM's propensity columns): prepare keeps them, fit passes them on."""
        return tuple(dict.fromkeys((*self.propensity.covariates, *self.pu.propensity_columns,
                                    *self.audit.covariates)))

    def __post_init__(self):
        check.each_one_of(self, "methods", METHOD_NAMES)
        check.within(self, "stream_gb", "[0, inf)")


# --- evaluate ------------------------------------------------------------------------------
@dataclass(frozen=True)
class EvaluateParams:
    reports_dir: str = "reports"


# --- all -----------------------------------------------------------------------------------
@dataclass(frozen=True)
class Params:
    dataset: str = "default"
    data_dir: str = "data/prepared"
    prepare: PrepareParams = field(default_factory=PrepareParams)
    embed: EmbedParams = field(default_factory=EmbedParams)
    backbones: dict[str, BackboneSpec] = field(default_factory=dict)
    fit: FitParams = field(default_factory=FitParams)
    evaluate: EvaluateParams = field(default_factory=EvaluateParams)

    @property
    def table_path(self) -> Path:
        return Path(self.data_dir) / self.dataset / "feedback.parquet"

    def store_path(self, backbone: str) -> Path:
        """Where ``backbone``'s embedding store lives (every stage reads it here)."""
        return Path(self.embed.store_dir) / backbone

    def backbone(self, name: str) -> BackboneSpec:
        if name not in self.backbones:
            known = ", ".join(sorted(self.backbones)) or "none"
            raise RmpipeError(f"params: unknown backbone {name!r} (known: {known})")
        return self.backbones[name]


def load_params(path: str | Path | None = None) -> Params:
    """Read a settings file into :class:`Params`. ``None`` is the implicit ``params.yaml`` of the
    working folder, and only it falls back to the built-in defaults when absent (the CLI says
    so, :func:`pipeline.options.load`); a file the user named must exist: running a typo'd
    ``--params`` on the defaults would overwrite their prepared table with built-in rows."""
    if path is None:
        if not DEFAULT_PARAMS.exists():
            return Params()
        path = DEFAULT_PARAMS
    path = Path(path)
    if not path.is_file():
        what = "is a folder, not a settings file" if path.is_dir() else "no such settings file"
        raise RmpipeError(f"{path}: {what} (leave out --params to use ./{DEFAULT_PARAMS} or, "
                          f"without one, the built-in defaults)")
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except UnicodeDecodeError:
        raise RmpipeError(f"{path}: not valid YAML (not UTF-8 text)") from None
    except yaml.YAMLError as exc:
        raise RmpipeError(f"{path}: {yaml_problem(exc)}") from None
    return from_dict(Params, raw, where=str(path))


def yaml_problem(exc: yaml.YAMLError) -> str:
    """A YAML error as one line with its line and column (1-based), and what to do about a tab."""
    mark = getattr(exc, "problem_mark", None)
    where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
    problem = getattr(exc, "problem", None) or exc.__class__.__name__
    if "'\\t'" in problem:  # PyYAML: "found character '\\t' that cannot start any token"
        problem = "a tab character; YAML indents with spaces"
    return f"not valid YAML{where} ({problem})"
