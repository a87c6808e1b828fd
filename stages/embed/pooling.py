"""Token states to one vector per sequence: a closed set of named modes, each a few lines.

``last`` takes the last *real* token, found from the attention mask, so it is right for left and
right padding alike (position -1 is a pad token under right padding: docs/method.md). ``mean``
averages real tokens only. A row with no real token (all padding) pools to zeros in both modes
rather than to whatever a pad position holds. Padded positions are masked with ``where``, not
multiplied by 0, so a NaN or inf at a pad position (left padding can produce them) cannot leak.
"""

from __future__ import annotations

import torch


def pool_last(hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """hidden (B, T, H), mask (B, T) -> (B, H): the state at each row's last mask == 1."""
    mask = mask.bool()
    steps = torch.arange(mask.shape[1], device=mask.device).expand_as(mask)
    last = torch.where(mask, steps, -1).amax(dim=1)  # -1 where a row is all padding
    out = hidden[torch.arange(hidden.shape[0], device=hidden.device), last.clamp(min=0)]
    return torch.where((last >= 0)[:, None], out, torch.zeros_like(out))


def pool_mean(hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """hidden (B, T, H), mask (B, T) -> (B, H): mean over real tokens, summed in float32."""
    mask = mask.bool()
    real = torch.where(mask[..., None], hidden.float(), 0.0)
    count = mask.sum(dim=1, keepdim=True).clamp(min=1)
    return (real.sum(dim=1) / count).to(hidden.dtype)


POOLERS = {"last": pool_last, "mean": pool_mean}


def pool(hidden: torch.Tensor, mask: torch.Tensor, mode: str) -> torch.Tensor:
    try:
        return POOLERS[mode](hidden, mask)
    except KeyError:
        raise ValueError(f"unknown pooling {mode!r} (known: {', '.join(POOLERS)})") from None
