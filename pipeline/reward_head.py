"""The reward head: a small MLP on the frozen embedding, ``D → 256 → 64 → 1`` with LeakyReLU by
default (docs/method.md, "The head"; the reference's architecture). Its output is a logit ``f(e)``;
the reward is ``σ(f)``.

``hidden: []`` makes a *linear* head, ``f(e) = w·e``, with no bias: a Llama-family
``*ForSequenceClassification`` has a bias-free ``score`` layer, so a linear head without one
exports as exactly that layer and the exported model's output equals rmpipe's logit (``rmpipe
export``). An MLP keeps its biases."""

from __future__ import annotations

import warnings
from typing import Sequence

import numpy as np

import torch
from torch import nn

from pipeline.errors import RmpipeError

ACTIVATIONS = {"leaky_relu": nn.LeakyReLU, "relu": nn.ReLU, "gelu": nn.GELU, "tanh": nn.Tanh}


class RewardHead(nn.Module):
    def __init__(self, in_dim: int, hidden: Sequence[int] = (256, 64),
                 activation: str = "leaky_relu", dropout: float = 0.0, bias: bool | None = None):
        super().__init__()
        if in_dim < 1 or any(h < 1 for h in hidden):
            raise RmpipeError(f"fit.head: layer sizes must be positive, got {in_dim} -> {list(hidden)}")
        bias = bool(hidden) if bias is None else bool(bias)  # the output layer's bias
        self.config = {"in_dim": int(in_dim), "hidden": [int(h) for h in hidden],
                       "activation": activation, "dropout": float(dropout), "bias": bias}
        layers: list[nn.Module] = []
        width = in_dim
        for h in hidden:
            layers += [nn.Linear(width, h), ACTIVATIONS[activation]()]
            if dropout:
                layers.append(nn.Dropout(dropout))
            width = h
        layers.append(nn.Linear(width, 1, bias=bias))
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x).squeeze(-1)

    @torch.no_grad()
    def scale_output(self, a: float, b: float) -> None:
        """Make the logit ``a · f + b`` by rewriting the output layer (Platt scaling folded in,
        so a saved, exported or served head needs nothing new); adds the layer's bias if absent."""
        last = self.net[-1]
        out = nn.Linear(last.in_features, 1, bias=True, dtype=last.weight.dtype)
        out.weight.copy_(a * last.weight)
        out.bias.fill_(b + (a * float(last.bias) if last.bias is not None else 0.0))
        self.net[-1] = out
        self.config["bias"] = True

    @torch.no_grad()
    def logits(self, X, batch_size: int = 8192) -> "torch.Tensor":
        """Logits for a float32 array or tensor, in batches, in eval mode; or for anything
        that slices into arrays (a :class:`pipeline.store_matrix.StoreMatrix`), a batch at a time."""
        if isinstance(X, np.ndarray) and not X.flags.writeable:
            with warnings.catch_warnings():  # a store's shard, read without a copy: nothing here writes to it
                warnings.filterwarnings("ignore", "The given NumPy array is not writable")
                X = torch.as_tensor(X)
        elif isinstance(X, (np.ndarray, list)):
            X = torch.as_tensor(X)
        if X.ndim != 2 or X.shape[1] != self.config["in_dim"]:
            raise RmpipeError(f"embeddings have shape {tuple(X.shape)}, the head expects dimension "
                              f"{self.config['in_dim']}")
        was_training = self.training
        self.eval()
        out = torch.cat([self(torch.as_tensor(X[s:s + batch_size])) for s in range(0, len(X), batch_size)]) \
            if len(X) else torch.empty(0)
        self.train(was_training)
        return out
