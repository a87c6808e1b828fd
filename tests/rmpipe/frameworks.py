"""Each RLHF framework's reward-model input, rebuilt from its source at a pinned release, so the
exported folder can be fed exactly what the framework feeds it without installing it.

Sources read (tags and commits of the upstream repositories):
- OpenRLHF v0.11.0 (3c3be6234e0cb353e76bb8019947db9dfe99fca7): ``openrlhf/datasets/prompts_dataset.py``
  (``preprocess_data``: the chat template with ``add_generation_prompt=True``),
  ``openrlhf/utils/agent.py`` (``SingleTurnAgentExecutor.execute``: prompt ids with
  ``add_special_tokens=False`` + the sampled ids; the remote request ``{"query", "prompts",
  "labels"}`` with ``query = decode(prompt + sampled ids, skip_special_tokens=False)``, one sample
  a request), ``openrlhf/trainer/ppo_utils/experience.py`` (``concat_experiences``: right padding
  with the actor's pad id, mask 0), ``openrlhf/models/model.py`` (``_get_reward_model``: the base
  model plus a bias-free ``score`` Linear, positions ``cumsum - 1`` with 1 at padding, the value
  read at the last mask-1 position, ``(r - mean) / std`` when normalising; bf16 by default).
- VERL v0.7.0 (f9c855f7cf04d603c9546bc01776c74806a879c1): ``verl/experimental/agent_loop/agent_loop.py``
  (prompt ids from ``apply_chat_template(add_generation_prompt=True, tokenize=True)``, left-padded
  to the prompt length, the response right-padded to the response length, positions
  ``clip(cumsum(mask) - 1, 0)``), ``verl/workers/fsdp_workers.py`` (``RewardModelWorker``:
  ``AutoModelForTokenClassification`` with ``num_labels = 1`` in bf16 under bf16 autocast, read at
  ``argmax(position_ids * attention_mask)``; with ``input_tokenizer`` set, ``_switch_chat_template``
  decodes the response, deletes the eos text, re-renders with the reward model's template,
  ``add_generation_prompt=False``, ``add_special_tokens=False``, right padding),
  ``verl/experimental/reward_loop/reward_loop.py`` (``compute_score_disrm``: the same re-rendered
  text, a leading bos text removed, posted to vLLM's ``/classify`` one sequence at a time: the
  stock sequence-classification model read at the sequence's last token).
- TRL v1.9.0 (35def3ee000a87f6839e66f4b7749b06274ed1b3): ``trl/trainer/grpo_trainer.py``
  (``AutoModelForSequenceClassification.from_pretrained(path, num_labels=1)``; the reward
  tokenizer's pad token, or eos if it has none, written into ``config.pad_token_id``;
  completions decoded with ``skip_special_tokens=True``; ``_calculate_rewards``: conversational
  prompts re-rendered as ``prompt + [assistant completion]`` by ``trl/data_utils.py``'s
  ``apply_chat_template`` (the tokenizer's template, no generation prompt), plain prompts joined
  to the completion as text; tokenised with right padding, ``add_special_tokens=False``;
  ``logits[:, 0]``).

A policy's sample is stood in for by the response's own tokens followed by the eos id (vLLM
keeps the stop token in ``token_ids``).
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from pipeline.table import canonical_prompt, prompt_turns


def turns(prompt) -> list[dict]:
    """A prompt as the dataset row holds it (text, or a list of chat turns) as chat turns."""
    return prompt_turns(canonical_prompt(prompt)) if isinstance(prompt, list) else prompt_turns(prompt)


def sampled(tok, response: str) -> list[int]:
    """The ids a policy samples for ``response``: its tokens, then eos (where sampling stops)."""
    return tok(response, add_special_tokens=False)["input_ids"] + [tok.eos_token_id]


def prompt_ids(tok, prompt: str) -> list[int]:
    text = tok.apply_chat_template(turns(prompt), tokenize=False, add_generation_prompt=True)
    return tok(text, add_special_tokens=False)["input_ids"]


def padded(rows: list[list[int]], pad: int, side: str, width: int | None = None):
    width = width or max(len(r) for r in rows)
    ids = torch.full((len(rows), width), pad, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, row in enumerate(rows):
        span = slice(width - len(row), width) if side == "left" else slice(0, len(row))
        ids[i, span] = torch.tensor(row)
        mask[i, span] = 1
    return ids, mask


# --- OpenRLHF ---------------------------------------------------------------------------------
def openrlhf_model(folder, dtype=torch.float32):
    """The reward model as ``get_llm_for_sequence_regression(..., "reward")`` builds it: the
    config's base class (``LlamaModel``) under its prefix and a bias-free ``score`` head, loaded
    from the folder by name; every weight must be found."""
    from transformers import AutoConfig, AutoModel

    config = AutoConfig.from_pretrained(folder)
    base = AutoModel._model_mapping[type(config)]

    class RewardModel(base.__base__):
        def __init__(self, config):
            super().__init__(config)
            setattr(self, self.base_model_prefix, base(config))
            self.score = nn.Linear(config.hidden_size, 1, bias=False)
            self.post_init()

    model, info = RewardModel.from_pretrained(folder, config=config, dtype=dtype, output_loading_info=True)
    assert not info["missing_keys"], info
    return model.eval()


def openrlhf_batch(tok, pairs):
    """Prompt ids + sampled ids per sample, right-padded with the actor's pad id, mask 0 there."""
    return padded([prompt_ids(tok, p) + sampled(tok, r) for p, r in pairs], tok.pad_token_id, "right")


def openrlhf_rewards(model, ids, mask, normalize: bool = False) -> np.ndarray:
    last = mask.shape[1] - 1 - mask.long().fliplr().argmax(dim=1, keepdim=True)
    positions = mask.long().cumsum(-1) - 1
    positions.masked_fill_(mask == 0, 1)
    with torch.no_grad():
        hidden = getattr(model, model.base_model_prefix)(ids, attention_mask=mask, position_ids=positions)
        values = model.score(hidden["last_hidden_state"]).squeeze(-1)
        reward = values.gather(dim=1, index=last).squeeze(1).float()
    if normalize:
        reward = (reward - model.config.mean) / model.config.std
    return reward.numpy()


def openrlhf_requests(tok, pairs) -> list[dict]:
    """The bodies OpenRLHF posts to ``--reward.remote_url``: one sample each."""
    bodies = []
    for p, r in pairs:
        text = tok.apply_chat_template(turns(p), tokenize=False, add_generation_prompt=True)
        ids = tok(text, add_special_tokens=False)["input_ids"] + sampled(tok, r)
        bodies.append({"query": [tok.decode(ids, skip_special_tokens=False)], "prompts": [text],
                       "labels": [""]})
    return bodies


# --- VERL -------------------------------------------------------------------------------------
def verl_rollout(tok, pairs, prompt_length: int = 160, response_length: int = 96):
    """The rollout batch: prompts left-padded, responses right-padded, positions from the mask."""
    p_ids, p_mask = padded([prompt_ids(tok, p) for p, _ in pairs], tok.pad_token_id, "left", prompt_length)
    r_ids, r_mask = padded([sampled(tok, r) for _, r in pairs], tok.pad_token_id, "right", response_length)
    mask = torch.cat([p_mask, r_mask], dim=1)
    return {"input_ids": torch.cat([p_ids, r_ids], dim=1), "attention_mask": mask,
            "position_ids": torch.clip(mask.cumsum(-1) - 1, min=0), "responses": r_ids}


def verl_switch_template(actor_tok, rm_tok, pairs, rollout) -> dict:
    """``_switch_chat_template``: each response decoded, its eos text deleted, the conversation
    re-rendered by the reward model's template, right-padded."""
    rows = []
    length = rollout["responses"].shape[1]
    for i, (p, _) in enumerate(pairs):
        valid = int(rollout["attention_mask"][i, -length:].sum())
        response = actor_tok.decode(rollout["responses"][i, :valid]).replace(actor_tok.eos_token, "")
        chat = [*turns(p), {"role": "assistant", "content": response}]
        text = rm_tok.apply_chat_template(chat, add_generation_prompt=False, tokenize=False)
        rows.append(rm_tok(text, add_special_tokens=False)["input_ids"])
    ids, mask = padded(rows, rm_tok.pad_token_id, "right", rollout["input_ids"].shape[1])
    return {"input_ids": ids, "attention_mask": mask, "position_ids": torch.clip(mask.cumsum(-1) - 1, min=0)}


def verl_token_model(folder, dtype=torch.float32):
    from transformers import AutoConfig, AutoModelForTokenClassification

    config = AutoConfig.from_pretrained(folder)
    config.num_labels, config.classifier_dropout = 1, 0.0
    return AutoModelForTokenClassification.from_pretrained(folder, config=config, dtype=dtype).to(dtype).eval()


def verl_worker_scores(model, batch, bf16: bool) -> np.ndarray:
    """``RewardModelWorker._forward_micro_batch`` (no padding removal)."""
    autocast = torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16)
    with torch.no_grad(), autocast:
        out = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                    position_ids=batch["position_ids"], use_cache=False)
        scores = out.logits.squeeze(-1)
        last = torch.argmax(batch["position_ids"] * batch["attention_mask"], dim=-1)
        return scores[torch.arange(len(last)), last].float().numpy()


def verl_reward_loop_texts(actor_tok, rm_tok, pairs) -> list[str]:
    """``compute_score_disrm``'s input: the re-rendered conversation without a leading bos."""
    texts = []
    for p, r in pairs:
        response = actor_tok.decode(sampled(actor_tok, r)).replace(actor_tok.eos_token, "")
        text = rm_tok.apply_chat_template([*turns(p), {"role": "assistant", "content": response}],
                                          add_generation_prompt=False, tokenize=False)
        if rm_tok.bos_token is not None and text.startswith(rm_tok.bos_token):
            text = text[len(rm_tok.bos_token):]
        texts.append(text)
    return texts


def classify_one_by_one(model, tok, texts) -> np.ndarray:
    """vLLM's ``/classify`` with LAST pooling and no activation: each text alone, tokenised with
    the tokenizer's default special tokens, the logit at its last token."""
    out = []
    with torch.no_grad():
        for text in texts:
            ids = tok(text, return_tensors="pt")["input_ids"]
            out.append(float(model(input_ids=ids).logits[0, 0].float()))
    return np.array(out)


# --- TRL --------------------------------------------------------------------------------------
def trl_model_and_tokenizer(folder, dtype=None):
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    kwargs = {} if dtype is None else {"dtype": dtype}
    model = AutoModelForSequenceClassification.from_pretrained(folder, num_labels=1, **kwargs).eval()
    tok = AutoTokenizer.from_pretrained(folder)
    if tok.pad_token_id is None:
        tok.pad_token = tok.eos_token
    model.config.pad_token_id = tok.pad_token_id
    return model, tok


def trl_texts(actor_tok, rm_tok, pairs, conversational: bool) -> list[str]:
    texts = []
    for p, r in pairs:
        completion = actor_tok.decode(sampled(actor_tok, r), skip_special_tokens=True)
        if conversational:
            messages = [*turns(p), {"role": "assistant", "content": completion}]
            texts.append(rm_tok.apply_chat_template(messages, tokenize=False))
        else:
            texts.append(p + completion)
    return texts


def trl_rewards(model, rm_tok, texts) -> np.ndarray:
    inputs = rm_tok(text=texts, return_tensors="pt", padding=True, padding_side="right", add_special_tokens=False)
    with torch.inference_mode():
        return model(**inputs).logits[:, 0].float().numpy()


# --- the measure --------------------------------------------------------------------------------
def gap(got: np.ndarray, want: np.ndarray) -> dict:
    """How far a framework's rewards are from rmpipe's: |Δlogit| (median, max), against the
    spread of rmpipe's logits, and the rank agreement."""
    from scipy.stats import spearmanr

    delta = np.abs(np.asarray(got, dtype=np.float64) - want)
    return {"median": float(np.median(delta)), "max": float(delta.max()), "std": float(np.std(want)),
            "spearman": float(spearmanr(got, want).statistic)}
