"""``rmpipe export --head HEAD --out DIR``: a trained head as a Hugging Face reward model.

Two shapes, chosen by what the head is:

- **native**: a decoder backbone (Llama-shaped: its transformers ``*ForSequenceClassification``
  reads the score at the last non-pad token) with ``pooling: last`` on the final layer and a
  linear head (``fit.head.hidden: []``, trained without a bias, as Llama-family ``score`` layers
  have none) becomes that class with ``num_labels = 1`` and the head's weight as ``score``. It
  loads with plain ``from_pretrained``, also as ``*ForTokenClassification`` (its ``score`` is
  bias-free too, ``token_classification_bias: false``), in TRL, OpenRLHF, VERL and vLLM.
- **remote code**: anything else (an MLP head, mean pooling, an inner layer, an encoder) gets
  ``modeling_rmpipe.py`` (:mod:`rmpipe.remote_model`) beside its weights and loads with
  ``trust_remote_code=True``.

Either way the output is rmpipe's logit ``f(e)`` for the same token ids (``σ(f)`` is ``rmpipe
score``'s reward), read at a chat pair's end-of-turn token. The pad token is never that token
(the stock classes read the last id that is not ``pad_token_id``), and the tokenizer's chat
template is wrapped so that a conversation ending in an assistant turn renders up to its
end-of-turn token and no further: frameworks that re-render the conversation (TRL, VERL with
``input_tokenizer``, VERL's reward loop) then read the position rmpipe reads (docs/rlhf.md), the config records the mean and std of that logit on the head's validation
split under OpenRLHF's names (``mean``, ``std``), and ``rmpipe`` holds the head's card. The
folder is built beside ``--out`` and renamed into place: a failure leaves nothing behind.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np
import polars as pl

from pipeline.config import BackboneSpec, Params
from pipeline.errors import RmpipeError
from pipeline.store import EmbeddingStore
from pipeline.table import read_table
from stages.embed import backbones
from stages.embed.precision import spec_dtype
from pipeline.heads import Head, load_head

REMOTE_FILE = "modeling_rmpipe.py"
CARD_KEYS = ("backbone", "embedding", "dataset", "licence", "method", "method_doc", "uses",
             "imputation_target", "rows", "diagnostics", "guard", "runaway", "metrics", "head",
             "package_versions")


@dataclasses.dataclass
class Exported:
    folder: Path
    kind: str  # "native" | "remote"
    architecture: str
    why_remote: str | None
    mean: float
    std: float
    val_rows: int


def check_out(out: Path) -> None:
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise RmpipeError(f"--out {out}: already exists and is not an empty folder; "
                          f"choose a new path or remove it")


def validation_stats(params: Params, head: Head) -> tuple[float, float, int]:
    """Mean and std of the head's logits on its validation split (what OpenRLHF normalises by)."""
    params = dataclasses.replace(params, dataset=head.card.dataset)
    path = params.table_path
    if not path.exists():
        raise RmpipeError(f"{path}: the head's dataset table is missing; its validation rewards "
                          f"are recorded for normalisation (run `rmpipe prepare`)")
    ids = read_table(path, ["pair_id", "split"]).filter(pl.col("split") == "val")["pair_id"].to_list()
    if not ids:
        raise RmpipeError(f"{path}: no validation rows to record the reward mean and std on")
    store = EmbeddingStore(params.store_path(head.backbone))
    head.check_store(store)
    logits = head.logits(store.read(ids)).astype(np.float64)
    return float(logits.mean()), float(logits.std()), len(ids)


def resolve_backbone(params: Params, head: Head) -> tuple[BackboneSpec, str]:
    """The head's backbone on disk, checked to be the very function the head was trained on."""
    spec = params.backbone(head.backbone)
    # the key first: a GGUF backbone is dequantised (tens of seconds) only for a head that fits it
    head.check_key(backbones.store_key(spec, head.backbone), f"params (backbones.{head.backbone})")
    resolved = backbones.resolve(spec, params.embed.models_dir, head.backbone)
    try:
        _auto_config(resolved.path, spec.revision)
    except (OSError, ValueError) as exc:  # a hub id that is not there, no network
        raise backbones.load_error(resolved.path, exc, resolved.where) from None
    return spec, resolved.path


def _auto_config(path: str, revision: str | None):
    from transformers import AutoConfig

    return AutoConfig.from_pretrained(path, revision=revision)


def native_classes(config):
    """``(SequenceClassification, TokenClassification)`` classes for a decoder whose stock
    classes read the last non-pad token, else None."""
    import transformers
    from transformers.modeling_layers import GenericForSequenceClassification, GenericForTokenClassification
    from transformers.models.auto import modeling_auto as auto

    kind = config.model_type
    if kind not in auto.MODEL_FOR_CAUSAL_LM_MAPPING_NAMES:
        return None
    names = (auto.MODEL_FOR_SEQUENCE_CLASSIFICATION_MAPPING_NAMES.get(kind),
             auto.MODEL_FOR_TOKEN_CLASSIFICATION_MAPPING_NAMES.get(kind))
    classes = tuple(getattr(transformers, n, None) if n else None for n in names)
    if classes[0] is None or classes[1] is None:
        return None
    if not (issubclass(classes[0], GenericForSequenceClassification)
            and issubclass(classes[1], GenericForTokenClassification)):
        return None
    return classes


def why_remote(spec: BackboneSpec, head: Head, config) -> str | None:
    """None when the head exports as the backbone's own class; else the reason it cannot."""
    cfg = head.model.config
    reasons = []
    if cfg["hidden"]:
        reasons.append(f"an MLP head (hidden {cfg['hidden']}; fit.head.hidden: [] is linear)")
    elif cfg.get("bias", True):
        reasons.append("a linear head with a bias (the stock score layer has none)")
    if spec.pooling != "last":
        reasons.append(f"pooling {spec.pooling}")
    if spec.layer != -1:
        reasons.append(f"layer {spec.layer} (not the final, normed output)")
    if native_classes(config) is None:
        reasons.append(f"a {config.model_type} backbone (no stock class reading the last token)")
    return "; ".join(reasons) or None


def pick_pad_id(tokenizer, spec: BackboneSpec) -> int:
    """A pad id that never ends a rendered pair: the stock classes find the last real token as
    the rightmost id != pad_token_id, so a pad equal to the end-of-turn token (SmolLM2 pads with
    <|im_end|>) would move the score to the token before it."""
    from stages.embed.text import PairEncoder

    probe = PairEncoder(tokenizer, 1 << 20, spec.chat_template).encode(["Hi?"], ["Hello."]).ids[0]
    candidates = [tokenizer.pad_token_id, tokenizer.eos_token_id, tokenizer.unk_token_id,
                  *tokenizer.all_special_ids]
    for pad in candidates:
        if pad is not None and pad != probe[-1]:
            return int(pad)
    raise RmpipeError(f"tokenizer of {tokenizer.name_or_path}: no special token can serve as a pad "
                      f"distinct from the template's last token")


def ending_at_end_of_turn(template: str, eot: str) -> str:
    """``template`` wrapped so that, for messages ending in an assistant turn and no generation
    prompt, the text stops right after that turn's end-of-turn token ``eot`` (ChatML's trailing
    newline is dropped); every other rendering is the template's own."""
    return ("{% set rmpipe_text %}" + template + "{% endset %}"
            "{% set rmpipe_eot = " + json.dumps(eot) + " %}"
            "{% if not (add_generation_prompt is defined and add_generation_prompt) and messages "
            "and messages[-1]['role'] == 'assistant' and rmpipe_eot in rmpipe_text %}"
            "{{ rmpipe_text[:rmpipe_text.rfind(rmpipe_eot) + rmpipe_eot|length] }}"
            "{% else %}{{ rmpipe_text }}{% endif %}")


def wrap_template(tokenizer) -> bool:
    """Wrap the tokenizer's template (:func:`ending_at_end_of_turn`) if the wrapped one renders a
    whole conversation as exactly rmpipe's text and a prompt as the template did; else leave it
    and return False (re-rendering frameworks then read after the end-of-turn token)."""
    from stages.embed.text import PairEncoder

    encoder = PairEncoder(tokenizer, 1 << 20, True)
    original = tokenizer.chat_template
    probes = [[{"role": "user", "content": "Hi?"}],
              [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi?"},
               {"role": "assistant", "content": "Hello."}, {"role": "user", "content": "And?"}]]
    checked = []
    for turns in probes:
        try:
            checked.append((turns, encoder.prompt_text(turns)))
        except Exception:  # a template that refuses a system turn (Gemma's): probe without it
            continue
    tokenizer.chat_template = ending_at_end_of_turn(original, encoder.end_of_turn)
    try:
        ok = bool(checked) and all(
            encoder.prompt_text(t) == p and tokenizer.apply_chat_template(
                [*t, {"role": "assistant", "content": "Fine, thanks."}], tokenize=False)
            == p + "Fine, thanks." + encoder.end_of_turn for t, p in checked)
    except Exception:  # a template the wrapper breaks (jinja is the template's author's language)
        ok = False
    if not ok:
        tokenizer.chat_template = original
    return ok


def card_for_config(head: Head, spec: BackboneSpec, kind: str, stats: tuple[float, float, int]) -> dict:
    card = {k: v for k, v in head.card.to_dict().items() if k in CARD_KEYS}
    card["backbone_spec"] = {f: getattr(spec, f) for f in backbones.FUNCTION_FIELDS}
    card["export"] = {"kind": kind, "output": "logit f(e); sigmoid(f) is rmpipe's reward",
                      "reward_stats": {"split": "val", "rows": stats[2], "mean": stats[0],
                                       "std": stats[1]}}
    return card


def _quiet():
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()


def build_native(tmp: Path, path: str, spec: BackboneSpec, head: Head, config, card: dict,
                 stats, tokenizer) -> str:
    import torch

    seq_cls, _ = native_classes(config)
    pad = pick_pad_id(tokenizer, spec)
    config.num_labels = 1
    config.id2label, config.label2id = {0: "reward"}, {"reward": 0}
    config.architectures = [seq_cls.__name__]
    config.pad_token_id = pad
    config.token_classification_bias = False  # *ForTokenClassification: the same bias-free score
    config.classifier_dropout = 0.0
    config.mean, config.std = stats[0], stats[1]
    config.rmpipe = card
    dtype = getattr(torch, spec_dtype(spec)[0])  # the dtype its store was computed in
    model = seq_cls.from_pretrained(path, config=config, revision=spec.revision, dtype=dtype)
    weight = head.model.state_dict()["net.0.weight"]
    with torch.no_grad():
        model.score.weight.copy_(weight.to(model.score.weight.dtype))
    model.save_pretrained(tmp)
    _save_tokenizer(tokenizer, tmp, spec, pad)
    return seq_cls.__name__


def build_remote(tmp: Path, path: str, spec: BackboneSpec, head: Head, config, card: dict,
                 stats, tokenizer) -> str:
    import torch
    from transformers import AutoModel

    from rmpipe.remote_model import RmpipeRewardConfig, RmpipeRewardModel

    cfg = head.model.config
    pad = pick_pad_id(tokenizer, spec)
    remote = RmpipeRewardConfig(
        backbone_config=config, pooling=spec.pooling, layer=spec.layer, head_hidden=cfg["hidden"],
        head_activation=cfg["activation"], head_dropout=cfg["dropout"],
        head_bias=cfg.get("bias", True), num_labels=1, id2label={0: "reward"},
        label2id={"reward": 0}, pad_token_id=pad,
        architectures=["RmpipeRewardModel"],
        auto_map={"AutoConfig": "modeling_rmpipe.RmpipeRewardConfig",
                  "AutoModelForSequenceClassification": "modeling_rmpipe.RmpipeRewardModel"},
        mean=stats[0], std=stats[1], rmpipe=card)
    dtype = getattr(torch, spec_dtype(spec)[0])  # the dtype its store was computed in
    model = RmpipeRewardModel(remote)
    model.backbone = AutoModel.from_pretrained(path, revision=spec.revision, dtype=dtype)
    model.head.load_state_dict(head.model.state_dict())
    model.head.to(torch.float32)  # rmpipe runs the head in float32 on float32 embeddings
    model.save_pretrained(tmp)
    shutil.copyfile(Path(__file__).with_name("remote_model.py"), tmp / REMOTE_FILE)
    _save_tokenizer(tokenizer, tmp, spec, pad)
    return "RmpipeRewardModel"


def _save_tokenizer(tokenizer, tmp: Path, spec: BackboneSpec, pad: int | None) -> None:
    if pad is not None and tokenizer.pad_token_id != pad:
        tokenizer.pad_token = tokenizer.convert_ids_to_tokens(pad)
    if spec.chat_template and tokenizer.bos_token and not _adds_specials(tokenizer):
        # the template writes it (SmolLM2's bos is <|im_start|>): VERL's reward loop strips a
        # leading bos text before vLLM tokenises, which would then lose the template's first token
        tokenizer.bos_token = None
    tokenizer.model_max_length = spec.max_tokens  # rmpipe cut longer pairs (see README.md)
    tokenizer.save_pretrained(tmp)


def open_to_all(folder: Path) -> None:
    """Modes as a plain ``open``/``mkdir`` under the umask gives them: mkdtemp makes the folder
    private and safetensors wrote the weights 0600, but the export is meant to be shared."""
    umask = os.umask(0)
    os.umask(umask)
    for path in [folder, *folder.rglob("*")]:
        os.chmod(path, (0o777 if path.is_dir() else 0o666) & ~umask)


def _adds_specials(tokenizer) -> bool:
    return tokenizer("x")["input_ids"] != tokenizer("x", add_special_tokens=False)["input_ids"]


def export(params: Params, head_dir: str | Path, out: str | Path) -> Exported:
    """Write ``head_dir``'s head and its backbone as a reward model folder at ``out``."""
    from transformers import AutoTokenizer

    from rmpipe.export_readme import readme

    out = Path(out)
    check_out(out)
    head = load_head(head_dir)
    spec, path = resolve_backbone(params, head)
    stats = validation_stats(params, head)
    _quiet()
    config = _auto_config(path, spec.revision)
    reason = why_remote(spec, head, config)
    kind = "remote" if reason else "native"
    card = card_for_config(head, spec, kind, stats)
    tokenizer = AutoTokenizer.from_pretrained(path, revision=spec.revision)
    if spec.chat_template:
        from stages.embed.text import end_of_turn

        card["export"]["end_of_turn"] = end_of_turn(tokenizer)
        card["export"]["template_ends_at_end_of_turn"] = wrap_template(tokenizer)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    try:
        build = build_remote if reason else build_native
        arch = build(tmp, path, spec, head, config, card, stats, tokenizer)
        (tmp / "README.md").write_text(readme(arch, kind, reason, spec, card))
        open_to_all(tmp)
        if out.exists():
            out.rmdir()  # empty (checked above)
        os.replace(tmp, out)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return Exported(out, kind, arch, reason, stats[0], stats[1], stats[2])
