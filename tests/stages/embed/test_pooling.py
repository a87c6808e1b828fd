"""Every pooling mode x both padding sides, plus edge rows (one token, all padding, NaN pads)."""

import pytest
import torch

from stages.embed.pooling import POOLERS, pool

LENGTHS = [5, 1, 3, 7]


def padded(lengths, side, width=7, dim=4, seed=0):
    """Per-row real states, and the same rows padded on ``side`` with garbage at pad positions."""
    g = torch.Generator().manual_seed(seed)
    rows = [torch.randn(n, dim, generator=g) for n in lengths]
    hidden = torch.full((len(rows), width, dim), 1e6)
    mask = torch.zeros(len(rows), width, dtype=torch.long)
    for i, r in enumerate(rows):
        span = slice(width - len(r), width) if side == "left" else slice(0, len(r))
        hidden[i, span] = r
        mask[i, span] = 1
    return rows, hidden, mask


def expected(rows, mode):
    if mode == "last":
        return torch.stack([r[-1] for r in rows])
    return torch.stack([r.mean(0) for r in rows])


@pytest.mark.parametrize("mode", sorted(POOLERS))
@pytest.mark.parametrize("side", ["left", "right"])
def test_pooling_matches_unpadded_rows(mode, side):
    rows, hidden, mask = padded(LENGTHS, side)
    torch.testing.assert_close(pool(hidden, mask, mode), expected(rows, mode))


@pytest.mark.parametrize("mode", sorted(POOLERS))
@pytest.mark.parametrize("side", ["left", "right"])
def test_single_token_rows(mode, side):
    rows, hidden, mask = padded([1, 1], side, width=3)
    torch.testing.assert_close(pool(hidden, mask, mode), torch.stack([r[0] for r in rows]))


@pytest.mark.parametrize("mode", sorted(POOLERS))
def test_all_padding_row_pools_to_zeros(mode):
    rows, hidden, mask = padded([3, 2], "right")
    mask[1] = 0
    out = pool(hidden, mask, mode)
    torch.testing.assert_close(out[0], expected(rows[:1], mode)[0])
    assert torch.equal(out[1], torch.zeros(4))


@pytest.mark.parametrize("mode", sorted(POOLERS))
@pytest.mark.parametrize("side", ["left", "right"])
def test_nan_at_pad_positions_does_not_leak(mode, side):
    rows, hidden, mask = padded(LENGTHS, side)
    hidden[mask == 0] = float("nan")
    torch.testing.assert_close(pool(hidden, mask, mode), expected(rows, mode))


def test_last_is_not_position_minus_one_under_right_padding():
    rows, hidden, mask = padded([2, 7], "right")
    assert not torch.allclose(pool(hidden, mask, "last")[0], hidden[0, -1])


def test_unknown_mode_is_named():
    with pytest.raises(ValueError, match="cls"):
        pool(torch.zeros(1, 1, 1), torch.ones(1, 1), "cls")
