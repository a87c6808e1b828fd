"""The one training loop: every method, guarded or plain, through the same few lines.

A batch's risk is split into ``R₁, R₀`` (:func:`losses.split_risk`); the non-negative guard
(Kiryo et al. 2017) steps against a part that went below ``−β``. After each epoch the same
coefficients on the validation split give the method's own debiased risk; early stopping and
the returned head use its guarded form ``max(0, R₁) + max(0, R₀)`` — never clean labels.
A *runaway* is a plain validation risk below 0, which no real predictor reaches (both parts
estimate cross-entropies); it is recorded either way.
"""

from __future__ import annotations

import copy
import math
import time
from dataclasses import dataclass, field

import numpy as np
import torch

from pipeline.config import GuardParams, HeadParams
from pipeline.errors import RmpipeError
from pipeline.reward_head import RewardHead
from stages.fit.losses import guarded_risk, split_risk, step_objective


@dataclass
class RiskRows:
    """Rows of one split with non-zero coefficients, and the split's full size ``n`` (risks are
    means over all ``n`` rows; rows whose coefficients are both 0 contribute nothing)."""

    rows: np.ndarray
    a1: np.ndarray
    a0: np.ndarray
    n: int

    @classmethod
    def select(cls, rows: np.ndarray, a1: np.ndarray, a0: np.ndarray) -> "RiskRows":
        keep = (a1 != 0) | (a0 != 0)
        return cls(np.asarray(rows)[keep], a1[keep], a0[keep], len(rows))

    @property
    def scale(self) -> float:
        return len(self.rows) / self.n if self.n else 0.0


@dataclass
class TrainResult:
    best_epoch: int = 0
    epochs_run: int = 0
    stopped: str = "max_epochs"  # max_epochs | patience
    best_val_risk: float = math.inf
    curve: list[dict] = field(default_factory=list)
    guard: dict = field(default_factory=dict)
    runaway: dict = field(default_factory=dict)
    seconds_per_epoch: float = 0.0
    calibration: dict | None = None  # Platt scaling on audit rows (stages.fit.core.calibrate)
    val_audit_risk: float | None = None  # the guarded risk on the val audit rows, comparable across methods


@torch.no_grad()
def validation_risk(model: RewardHead, X: torch.Tensor, val: RiskRows, batch: int = 8192) -> tuple[float, float]:
    """``(R₁, R₀)`` of ``model`` over a whole split."""
    model.eval()
    r1 = r0 = 0.0
    for s in range(0, len(val.rows), batch):
        idx = torch.from_numpy(val.rows[s:s + batch])
        f = model(torch.as_tensor(X[idx]))
        p1, p0 = split_risk(f, torch.from_numpy(val.a1[s:s + batch]), torch.from_numpy(val.a0[s:s + batch]))
        r1 += float(p1) * len(idx)
        r0 += float(p0) * len(idx)
    model.train()
    return r1 / max(val.n, 1), r0 / max(val.n, 1)


def train_head(X: np.ndarray | torch.Tensor, train: RiskRows, val: RiskRows, head: HeadParams,
               guard: GuardParams, progress: bool = False, desc: str = "fit") -> tuple[RewardHead, TrainResult]:
    """Train a head on ``X[train.rows]`` (mini-batches; ``X`` is not copied), stop and select on
    the guarded validation risk. Same seed and thread count give the same head on CPU. ``X``
    may be a :class:`pipeline.store_matrix.StoreMatrix`: its epochs then visit the store a
    window of shards at a time (:meth:`~pipeline.store_matrix.StoreMatrix.epoch_order`)."""
    if len(train.rows) == 0:
        raise RmpipeError("no training rows carry any loss (no observed rows in the train split?)")
    if len(val.rows) == 0:
        raise RmpipeError("no validation rows carry any loss: early stopping needs observed rows "
                          "in the val split")
    streamed = hasattr(X, "epoch_order")
    X = X if streamed else torch.as_tensor(X)
    if head.threads:
        torch.set_num_threads(head.threads)
    torch.manual_seed(head.seed)
    gen = torch.Generator().manual_seed(head.seed)
    model = RewardHead(X.shape[1], head.hidden, head.activation, head.dropout)
    opt = torch.optim.Adam(model.parameters(), lr=head.lr, weight_decay=head.weight_decay)
    rows = torch.from_numpy(train.rows)
    a1, a0 = torch.from_numpy(train.a1), torch.from_numpy(train.a0)
    result = TrainResult()
    best_state, bad_epochs, fired, steps = None, 0, 0, 0
    first_runaway, min_plain = None, math.inf

    bar = None
    if progress:
        from tqdm.auto import tqdm
        bar = tqdm(total=head.max_epochs, desc=desc, unit="epoch", leave=False)
    started = time.perf_counter()
    for epoch in range(1, head.max_epochs + 1):
        epoch_start = time.perf_counter()
        model.train()
        perm = torch.from_numpy(X.epoch_order(train.rows, gen)) if streamed \
            else torch.randperm(len(rows), generator=gen)
        total, batches, epoch_fired = 0.0, 0, 0
        for s in range(0, len(perm), head.batch_size):
            pos = perm[s:s + head.batch_size]
            r1, r0 = split_risk(model(torch.as_tensor(X[rows[pos]])), a1[pos], a0[pos], train.scale)
            loss, hit = step_objective(r1, r0, guard.nonnegative, guard.beta, guard.gamma)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            total += guarded_risk(r1.item(), r0.item())
            batches += 1
            epoch_fired += hit
        fired += epoch_fired
        steps += batches
        v1, v0 = validation_risk(model, X, val)
        val_guarded, val_plain = guarded_risk(v1, v0), v1 + v0
        min_plain = min(min_plain, val_plain)
        if val_plain < 0 and first_runaway is None:
            first_runaway = epoch
        result.curve.append({"epoch": epoch, "train_guarded_risk": total / batches,
                             "val_r1": v1, "val_r0": v0, "val_plain_risk": val_plain,
                             "val_guarded_risk": val_guarded, "guard_fired": epoch_fired,
                             "seconds": time.perf_counter() - epoch_start})
        result.epochs_run = epoch
        if not math.isfinite(val_plain):
            raise RmpipeError(f"{desc}: the validation risk became {val_plain} at epoch {epoch} "
                              "(try a smaller fit.head.lr)")
        if val_guarded < result.best_val_risk:
            result.best_val_risk, result.best_epoch, bad_epochs = val_guarded, epoch, 0
            best_state = copy.deepcopy(model.state_dict())
        else:
            bad_epochs += 1
        if bar is not None:
            bar.set_postfix(val=f"{val_guarded:.4f}", best=result.best_epoch)
            bar.update(1)
        if bad_epochs >= head.patience:
            result.stopped = "patience"
            break
    if bar is not None:
        bar.close()
    result.seconds_per_epoch = (time.perf_counter() - started) / max(result.epochs_run, 1)
    model.load_state_dict(best_state)
    model.eval()
    result.guard = {"mode": "nonnegative" if guard.nonnegative else "plain", "beta": guard.beta,
                    "gamma": guard.gamma, "fired_batches": fired, "batches": steps,
                    "fired_share": fired / max(steps, 1)}
    result.runaway = {"detected": first_runaway is not None, "first_epoch": first_runaway,
                      "min_val_plain_risk": min_plain,
                      "rule": "plain validation risk R1 + R0 below 0, which no real predictor reaches"}
    return model, result
