"""The ``vllm`` backend: vLLM 0.32's pooling runner, LAST pooling, no normalisation.

Written against vLLM 0.32.0's documented API, which moved several times: the runner is chosen
with ``runner="pooling"`` (formerly ``task=``), the pooler with ``pooler_config=PoolerConfig(...)``
(``override_pooler_config`` is gone), and L2 normalisation of ``embed`` outputs is switched off
with ``use_activation=False`` (``normalize`` gave way to it). ``convert="embed"`` makes a causal LM
or a sequence-classification reward model (FsfairX) return its last hidden state. We pass token
ids, not text, so the template and truncation are exactly the hf backend's. vLLM schedules its own
batches; ``batch_tokens`` becomes ``max_num_batched_tokens``. Only the last layer exists here.
"""

from __future__ import annotations

from typing import Callable, Sequence

import numpy as np

from pipeline.errors import RmpipeError


class VLLMBackend:
    name = "vllm"

    def __init__(self, path: str, pooling: str = "last", layer: int = -1,
                 dtype: str = "bfloat16", max_tokens: int = 4096, batch_tokens: int = 65536,
                 revision: str | None = None, device: str = "auto"):
        if layer != -1:
            raise RmpipeError(f"vllm backend: only the last layer (-1) is available, not {layer}")
        try:
            from vllm import LLM
            from vllm.config import PoolerConfig
        except ImportError:
            raise RmpipeError("backend vllm needs vLLM: pip install '.[gpu]' (the gpu extra), "
                              "or set backend: hf") from None
        from transformers import AutoTokenizer

        self.batch_tokens = batch_tokens
        self.tokenizer = AutoTokenizer.from_pretrained(path, revision=revision)
        self.llm = LLM(
            model=path, revision=revision, tokenizer=path, dtype=dtype,
            runner="pooling", convert="embed",
            pooler_config=PoolerConfig(pooling_type=pooling.upper(), use_activation=False),
            max_model_len=max_tokens, max_num_batched_tokens=max(batch_tokens, max_tokens),
            enable_prefix_caching=False,
        )
        from transformers import AutoConfig

        config = AutoConfig.from_pretrained(path, revision=revision)
        self.dim = int(getattr(config, "text_config", config).hidden_size)
        self._device = device

    def exec_info(self) -> dict:
        import vllm

        return {"backend": "vllm", "vllm": vllm.__version__, "device": self._device,
                "batch_tokens": self.batch_tokens}

    def encode(self, ids: Sequence[Sequence[int]], type_ids=None,
               on_batch: Callable[[int, int], None] | None = None) -> np.ndarray:
        from vllm import PoolingParams

        prompts = [{"prompt_token_ids": list(row)} for row in ids]
        outputs = self.llm.embed(prompts, pooling_params=PoolingParams(use_activation=False),
                                 use_tqdm=False)
        out = np.asarray([o.outputs.embedding for o in outputs], dtype=np.float32)
        if on_batch:
            on_batch(len(ids), sum(len(r) for r in ids))
        return out
