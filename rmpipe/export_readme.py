"""The README.md written into an exported folder: what it is, what input it expects, how to load
it, and where its numbers come from."""

from __future__ import annotations

from pipeline.config import BackboneSpec
from stages.embed.precision import spec_dtype

NATIVE_LOAD = """\
```python
import torch
from transformers import AutoModelForSequenceClassification, AutoTokenizer

tok = AutoTokenizer.from_pretrained(DIR)
model = AutoModelForSequenceClassification.from_pretrained(DIR).eval()
text = tok.apply_chat_template([{{"role": "user", "content": prompt}},
                                {{"role": "assistant", "content": response}}], tokenize=False)
batch = tok([text], add_special_tokens=False, padding=True, return_tensors="pt")  # ends at end-of-turn
with torch.no_grad():
    logit = model(**batch).logits[:, 0]   # sigmoid(logit) is rmpipe's reward
```

The same folder loads as `AutoModelForTokenClassification` (VERL): read `logits[i, last, 0]` at
row i's last real token. It is {arch} with `num_labels = 1`; its `score` layer is the head's
weight. vLLM (0.32) serves it with the pooling runner: `LLM(DIR, runner="pooling",
pooler_config=PoolerConfig(pooling_type="LAST", use_activation=False))`, then
`llm.classify(texts, pooling_params=PoolingParams(use_activation=False))` for the raw logit
(`outputs[i].outputs.probs[0]`), the texts chat-templated as above.
OpenRLHF (v0.10.2 and later): `--reward.model_name_or_path DIR --ds.value_head_prefix score`
(add `--reward.normalize_enable` to use the recorded mean and std). Which framework path gives
exactly rmpipe's reward, and how far the others are, is in rmpipe's docs/rlhf.md.
"""

REMOTE_LOAD = """\
**This folder contains code**: `modeling_rmpipe.py` (written by rmpipe; torch and transformers
only) reproduces rmpipe's pooling and head exactly, because {why}. Read it before you trust it,
then load with `trust_remote_code=True`:

```python
import torch
from transformers import AutoModelForSequenceClassification, AutoTokenizer

tok = AutoTokenizer.from_pretrained(DIR, trust_remote_code=True)  # reads config.json's auto_map
model = AutoModelForSequenceClassification.from_pretrained(DIR, trust_remote_code=True).eval()
{tokenize}
with torch.no_grad():
    logit = model(**batch).logits[:, 0]   # sigmoid(logit) is rmpipe's reward
```
"""

CHAT_TOKENIZE = """\
text = tok.apply_chat_template([{"role": "user", "content": prompt},
                                {"role": "assistant", "content": response}], tokenize=False)
batch = tok([text], add_special_tokens=False, padding=True, return_tensors="pt")"""

PAIR_TOKENIZE = """\
batch = tok([prompt], [response], padding=True, return_tensors="pt")  # the tokenizer's pair encoding"""


def input_text(spec: BackboneSpec) -> str:
    if spec.chat_template:
        how = ("the sequence a policy samples: the prompt's turns (a plain prompt is one `user` "
               "turn) through the chat template with `add_generation_prompt=True`, then the "
               "response, then the end-of-turn token, and nothing after it; each piece tokenised "
               "with `add_special_tokens=False` (the template writes every special token itself). "
               "The score is read at the end-of-turn token. This folder's chat template renders a "
               "conversation ending in an assistant turn as exactly that text (it stops after the "
               "end-of-turn token), so `apply_chat_template(prompt + [assistant], tokenize=False)` "
               "gives it too")
    else:
        how = ("the tokenizer's pair encoding of `(prompt, response)`; a multi-turn prompt is "
               "flattened to `role: content` blocks joined by blank lines")
    return (f"The input is {how}. Padding may be on either side. Pairs longer than "
            f"{spec.max_tokens} tokens were cut by rmpipe before embedding (the front of the "
            f"prompt first, re-rendering the template, then the response's tail); the tokenizer's "
            f"`model_max_length` is {spec.max_tokens}: keep inputs within it to get rmpipe's "
            f"rewards.")


def readme(arch: str, kind: str, why: str | None, spec: BackboneSpec, card: dict) -> str:
    stats = card["export"]["reward_stats"]
    diag = card.get("diagnostics", {})
    if kind == "native":
        load = NATIVE_LOAD.format(arch=arch)
    else:
        load = REMOTE_LOAD.format(why=why, tokenize=CHAT_TOKENIZE if spec.chat_template else PAIR_TOKENIZE)
    lines = [
        f"# rmpipe reward model: {card['method']} on {card['backbone']}",
        "",
        f"Exported by `rmpipe export` from a head trained with method `{card['method']}` on "
        f"dataset `{card['dataset']}` (licence of the training data: "
        f"{card.get('licence') or 'not recorded'}), backbone `{card['backbone']}` "
        f"(`{spec.model}`, pooling `{spec.pooling}`, {spec_dtype(spec)[0]}).",
        "",
        "The output is one logit per sequence (`num_labels = 1`): the head's `f(e)` on the "
        "backbone's embedding `e` of the pair. `sigmoid(f)` is the probability that the response "
        "is good, as `rmpipe score` reports it.",
        "",
        "## Input",
        "",
        input_text(spec),
        "",
        "## Loading",
        "",
        load,
        "## Normalisation",
        "",
        f"`config.json` records the mean ({stats['mean']:.6g}) and std ({stats['std']:.6g}) of "
        f"the logit on the head's validation split ({stats['rows']} pairs) as `mean` and `std`, "
        f"the fields OpenRLHF reads for reward normalisation.",
        "",
        "## Card",
        "",
        "`config.json`'s `rmpipe` entry is the head's card: backbone key and spec, method, "
        "rows, nuisance diagnostics, guard, validation risks, package versions.",
    ]
    if "propensity" in diag and diag["propensity"].get("auc") is not None:
        lines += ["", f"Propensity model AUC on validation: {diag['propensity']['auc']:.3f}."]
    if "noise" in diag:
        n = diag["noise"]
        lines += ["", f"Noise rates ({n['source']}): rho_pos {n['rho_pos']:.3f}, "
                      f"rho_neg {n['rho_neg']:.3f}."]
    return "\n".join(lines) + "\n"
