"""The ``hf`` backend: transformers on CPU or CUDA, length-sorted batches to a token budget.

Sorting by length before batching (as sentence-transformers' ``encode`` does) means almost no
compute is spent on padding; batches hold up to ``batch_tokens`` padded tokens, so short pairs go
many at a time and long ones few. The original order is restored at the end. Each pair's result
does not depend on its batchmates: padding is masked, and positions are counted from the first
real token whichever side the padding is on.
"""

from __future__ import annotations

from typing import Callable, Sequence

import numpy as np

from stages.embed.backbones import load_error
from stages.embed.pooling import pool


def pick_device(device: str) -> str:
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return device


def default_batch_tokens(device: str) -> int:
    """The padded-token budget when params leave it unset. A GPU wants big batches; on a 2-core
    CPU, 2,048 ran SmolLM2-135M 2.5x and MiniLM 1.25x faster than 16,384, whose activations
    spill out of cache (bench/embed_throughput.py)."""
    return 16384 if device.startswith("cuda") else 2048


def token_batches(lengths: Sequence[int], batch_tokens: int) -> list[list[int]]:
    """Indices grouped longest first, each group's padded size (rows x longest) within budget
    (a single over-budget row still gets a batch of its own)."""
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
    batches: list[list[int]] = []
    for i in order:
        if batches and (len(batches[-1]) + 1) * lengths[batches[-1][0]] <= batch_tokens:
            batches[-1].append(i)
        else:
            batches.append([i])
    return batches


class HFBackend:
    """Loads the model once; :meth:`encode` embeds token ids in their order."""

    name = "hf"

    def __init__(self, path: str, pooling: str = "last", layer: int = -1,
                 dtype: str = "float32", device: str = "auto", batch_tokens: int | None = None,
                 revision: str | None = None, padding_side: str = "right"):
        import torch
        from transformers import AutoModel, AutoTokenizer
        from transformers.utils import logging as hf_logging

        verbosity = hf_logging.get_verbosity()
        hf_logging.set_verbosity_error()  # a causal LM's unused lm_head is expected, not news
        hf_logging.disable_progress_bar()  # loading is seconds; our bar is the one that matters
        try:
            tokenizer = AutoTokenizer.from_pretrained(path, revision=revision)
            model = AutoModel.from_pretrained(path, revision=revision, dtype=getattr(torch, dtype))
        except (OSError, ValueError) as exc:  # a hub id that is not there, no network
            raise load_error(path, exc) from None
        finally:
            hf_logging.set_verbosity(verbosity)
            hf_logging.enable_progress_bar()
        self._setup(model, tokenizer, pooling, layer, device, batch_tokens, padding_side)

    @classmethod
    def from_model(cls, model, tokenizer=None, pooling: str = "last", layer: int = -1,
                   device: str = "auto", batch_tokens: int | None = None,
                   padding_side: str = "right") -> "HFBackend":
        """Wrap a model already in memory (benchmarks build one from a config, no download)."""
        self = cls.__new__(cls)
        self._setup(model, tokenizer, pooling, layer, device, batch_tokens, padding_side)
        return self

    def _setup(self, model, tokenizer, pooling, layer, device, batch_tokens, padding_side):
        self.pooling, self.layer = pooling, layer
        self.padding_side = padding_side
        self.device = pick_device(device)
        self.batch_tokens = batch_tokens or default_batch_tokens(self.device)
        self.tokenizer = tokenizer
        self.model = model.to(self.device).eval()
        pad = getattr(tokenizer, "pad_token_id", None)
        self.pad_id = pad if pad is not None else (getattr(tokenizer, "eos_token_id", None) or 0)
        self.dim = int(model.config.hidden_size)

    def exec_info(self) -> dict:
        return {"backend": "hf", "device": self.device, "batch_tokens": self.batch_tokens}

    def encode(self, ids: Sequence[Sequence[int]], type_ids: Sequence[Sequence[int]] | None = None,
               on_batch: Callable[[int, int], None] | None = None) -> np.ndarray:
        """Embeddings (n, dim) float32 for token-id lists ``ids``, in their order. ``on_batch``
        is told (pairs, tokens) after each batch, for a progress bar."""
        import torch

        out = np.empty((len(ids), self.dim), dtype=np.float32)
        with torch.inference_mode():
            for batch in token_batches([len(i) for i in ids], self.batch_tokens):
                rows = [ids[i] for i in batch]
                types = [type_ids[i] for i in batch] if type_ids is not None else None
                vectors = self._forward(rows, types)
                out[batch] = vectors.float().cpu().numpy()
                if on_batch:
                    on_batch(len(batch), sum(len(r) for r in rows))
        return out

    def _forward(self, rows: list[Sequence[int]], types: list[Sequence[int]] | None):
        import torch

        width = max(len(r) for r in rows)
        input_ids = torch.full((len(rows), width), self.pad_id, dtype=torch.long)
        mask = torch.zeros((len(rows), width), dtype=torch.long)
        token_types = torch.zeros((len(rows), width), dtype=torch.long) if types else None
        for j, row in enumerate(rows):
            span = slice(width - len(row), width) if self.padding_side == "left" else slice(0, len(row))
            input_ids[j, span] = torch.as_tensor(row)
            mask[j, span] = 1
            if token_types is not None:
                token_types[j, span] = torch.as_tensor(types[j])
        positions = (mask.cumsum(dim=1) - 1).clamp(min=0)
        kwargs = {"input_ids": input_ids, "attention_mask": mask, "position_ids": positions}
        if token_types is not None:
            kwargs["token_type_ids"] = token_types
        kwargs = {k: v.to(self.device) for k, v in kwargs.items()}
        hidden_layers = self.layer != -1
        result = self.model(**kwargs, output_hidden_states=hidden_layers, use_cache=False) \
            if _accepts_cache(self.model) else self.model(**kwargs, output_hidden_states=hidden_layers)
        hidden = result.hidden_states[self.layer] if hidden_layers else result.last_hidden_state
        return pool(hidden, kwargs["attention_mask"], self.pooling)


def _accepts_cache(model) -> bool:
    """Decoder models build a KV cache by default; an embedding pass never reuses it."""
    return bool(getattr(model.config, "use_cache", False))
