"""An rmpipe head as a TRL reward function: ``GRPOTrainer(reward_funcs=[RmpipeReward(...)])``.

TRL (v1.9.0, ``trl/trainer/grpo_trainer.py``, ``GRPOTrainer._calculate_rewards``) calls a
plain callable as ``reward_func(prompts=..., completions=..., completion_ids=..., **columns)``
and wants one float per completion, ``None`` for "no reward" (it becomes NaN and is left out of
the group's statistics). ``prompts``/``completions`` are strings for a plain-text dataset, and
lists of chat turns for a conversational one (the completion: the turns the policy produced).

Either form becomes rmpipe's pair, by the same rule as every server route
(:class:`rmpipe.protocol.Canon`): a conversation is its turns (a default system turn dropped, a
lone user turn its text), and the response is the last assistant turn, the turns before it part of
the prompt. The pair is then rendered by the backbone as in training; TRL's own reward-model path
instead joins plain-text prompt and completion with no template (docs/serving.md).

Two ways to score: ``RmpipeReward(head=DIR)`` loads the head in this process (the store's pairs
cost nothing, new ones one forward pass); ``RmpipeReward(url=URL)`` asks a running
``rmpipe serve`` (``POST /rewards``), so one GPU-held backbone serves many trainers.
A pair a vectors backbone has no vector for gets ``None``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from pipeline.errors import RmpipeError


class RmpipeReward:
    """A TRL reward function over an rmpipe head (in process) or server (``url``). Returns the
    reward σ(logit) by default, the logit with ``logits=True``. ``params``: a params.yaml path
    or a loaded :class:`pipeline.config.Params`."""

    __name__ = "rmpipe_reward"  # TRL names the reward's logged metrics by it

    def __init__(self, head: str | Path | None = None, *, params: Any = "params.yaml",
                 url: str | None = None, logits: bool = False, timeout_s: float = 300,
                 default_systems: tuple[str, ...] = ()):
        if (head is None) == (url is None):
            raise RmpipeError("RmpipeReward: give a head folder or a server url, one of the two")
        self.logits, self.url, self.timeout = logits, url, timeout_s
        if url is None:
            from pipeline.config import Params, load_params
            from rmpipe.serve import RewardModel, ServeSettings

            self.model = RewardModel(params if isinstance(params, Params) else load_params(params), head)
            self.canon = self.model.canon(ServeSettings(default_systems=tuple(default_systems)))
        else:
            self.url = url.rstrip("/")

    def __call__(self, prompts: list, completions: list, **_columns: Any) -> list[float | None]:
        if len(prompts) != len(completions):
            raise RmpipeError(f"RmpipeReward: {len(prompts)} prompts for {len(completions)} completions")
        if self.url is not None:
            return self._remote(prompts, completions)
        pairs = [self._pair(p, c, i) for i, (p, c) in enumerate(zip(prompts, completions))]
        values = self.model.logits([p for p, _ in pairs], [r for _, r in pairs])
        if not self.logits:
            values = 1.0 / (1.0 + np.exp(-values.astype(np.float64)))
        return [None if np.isnan(v) else float(v) for v in values]

    def _pair(self, prompt, completion, i: int) -> tuple[str, str]:
        from rmpipe.protocol import BadRequest, chat_turns, conversation_pair

        try:
            if isinstance(prompt, str) and isinstance(completion, str):
                return self.canon.text_prompt(prompt), completion
            turns = chat_turns(prompt, f"prompts[{i}]") + chat_turns(completion, f"completions[{i}]")
            return conversation_pair(turns, self.canon, f"completions[{i}]")
        except BadRequest as exc:
            raise RmpipeError(f"RmpipeReward: {exc}") from None

    def _remote(self, prompts: list, completions: list) -> list[float | None]:
        import httpx

        body = []
        for p, c in zip(prompts, completions):
            if isinstance(c, list):  # the last turn is the response, the turns before it prompt
                if not c or not isinstance(c[-1], dict) or c[-1].get("role") != "assistant":
                    raise RmpipeError("RmpipeReward: a conversational completion must end with an "
                                      "assistant turn (the response to score)")
                p = (list(p) if isinstance(p, list) else [{"role": "user", "content": p}]) + list(c[:-1])
                c = c[-1].get("content")
            body.append({"prompt": p, "response": c})
        reply = httpx.post(f"{self.url}/rewards", json=body, timeout=self.timeout)
        if reply.status_code != 200:
            raise RmpipeError(f"RmpipeReward: {self.url}/rewards answered {reply.status_code}: "
                              f"{reply.text[:300]}")
        return reply.json()["logits" if self.logits else "rewards"]
