"""Splits by prompt: every response to one prompt lands in one split, so nothing a model is
scored on was seen (as a prompt or as a response to it) during training (docs/method.md, simulation step 6)."""

from __future__ import annotations

import numpy as np



def split_groups(groups, fractions, seed: int, names=("train", "val", "test")) -> np.ndarray:
    """Assign each row the split of its group: distinct groups are sorted, shuffled with
    ``seed`` and cut at the cumulative ``fractions`` (of groups, not rows)."""
    groups = np.asarray(groups, dtype=object)
    uniq, inverse = np.unique(groups.astype(str), return_inverse=True)
    order = np.random.default_rng(seed).permutation(uniq.size)
    cuts = np.round(np.cumsum(fractions)[:-1] * uniq.size).astype(int)
    rank = np.empty(uniq.size, dtype=int)
    rank[order] = np.arange(uniq.size)
    which = np.searchsorted(cuts, rank, side="right")
    return np.asarray(names, dtype=object)[which][inverse]


def assign_splits(groups, source_split, fractions, val_share: float, seed: int) -> np.ndarray:
    """The split of each row. ``source_split`` (per row "train"/"test", or None) is the
    source's own split: its test rows stay test and its train rows go ``1 - val_share`` /
    ``val_share`` into train/val by group; without one, groups go ``fractions`` train/val/test."""
    if source_split is None:
        return split_groups(groups, fractions, seed)
    source_split = np.asarray(source_split, dtype=object)
    out = np.array(source_split, dtype=object)
    is_train = source_split != "test"
    out[is_train] = split_groups(np.asarray(groups, dtype=object)[is_train],
                                 (1 - val_share, val_share), seed, names=("train", "val"))
    return out


def straddling(groups, splits) -> int:
    """How many groups occur in more than one split (0 is the invariant)."""
    pairs = {(g, s) for g, s in zip(groups, splits)}
    seen: dict = {}
    for g, _ in pairs:
        seen[g] = seen.get(g, 0) + 1
    return sum(1 for n in seen.values() if n > 1)
