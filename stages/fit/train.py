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
def risk_sums(model: RewardHead, X, val: RiskRows, at: np.ndarray | None = None,
              batch: int = 8192) -> tuple[float, float]:
    """``R₁, R₀`` of ``model`` summed over rows ``val.rows[at]`` (all of them by default), not yet
    divided by ``val.n``; ``model`` is left in eval mode."""
    model.eval()
    at = np.arange(len(val.rows)) if at is None else at
    r1 = r0 = 0.0
    for s in range(0, len(at), batch):
        part = at[s:s + batch]
        f = model(torch.as_tensor(X[torch.from_numpy(val.rows[part])]))
        p1, p0 = split_risk(f, torch.from_numpy(val.a1[part]), torch.from_numpy(val.a0[part]))
        r1 += float(p1) * len(part)
        r0 += float(p0) * len(part)
    return r1, r0


def validation_risk(model: RewardHead, X: torch.Tensor, val: RiskRows, batch: int = 8192) -> tuple[float, float]:
    """``(R₁, R₀)`` of ``model`` over a whole split."""
    r1, r0 = risk_sums(model, X, val, batch=batch)
    model.train()
    return r1 / max(val.n, 1), r0 / max(val.n, 1)


class InPassRisk:
    """The validation risk of a frozen copy of a model, scored window by window during the next
    epoch's pass over a streamed store, while each window's shards are cached: an epoch then reads
    the store once rather than once for its batches and again for its validation risk."""

    def __init__(self, model: RewardHead, X, val: RiskRows):
        self.model, self.X, self.val = copy.deepcopy(model).eval(), X, val
        self.shards = X.shard[val.rows]
        self.left = np.ones(len(val.rows), dtype=bool)
        self.r1 = self.r0 = 0.0

    def score(self, shards: np.ndarray) -> None:
        """Add the validation rows that live in ``shards``."""
        self._add(np.flatnonzero(self.left & np.isin(self.shards, shards)))

    def finish(self) -> tuple[float, float]:
        """``(R₁, R₀)`` over the whole split, the rows of shards no window held included."""
        self._add(np.flatnonzero(self.left))
        return self.r1 / max(self.val.n, 1), self.r0 / max(self.val.n, 1)

    def _add(self, at: np.ndarray) -> None:
        r1, r0 = risk_sums(self.model, self.X, self.val, at)
        self.r1, self.r0 = self.r1 + r1, self.r0 + r0
        self.left[at] = False


class EarlyStop:
    """Each epoch's validation risk in turn: the curve, the best epoch and its weights, patience
    and the runaway record."""

    def __init__(self, result: TrainResult, patience: int, desc: str, bar=None):
        self.result, self.patience, self.desc, self.bar = result, patience, desc, bar
        self.best_state, self.bad_epochs = None, 0
        self.first_runaway, self.min_plain = None, math.inf
        self.fired = self.batches = 0  # guarded batches, and all batches, of the settled epochs

    def settle(self, epoch: int, train_risk: float, fired: int, batches: int, seconds: float,
               v1: float, v0: float, state: dict) -> bool:
        """Record epoch ``epoch`` (``fired`` of its ``batches`` guarded; ``state``: its weights);
        True when patience says stop."""
        result = self.result
        self.fired, self.batches = self.fired + fired, self.batches + batches
        val_guarded, val_plain = guarded_risk(v1, v0), v1 + v0
        self.min_plain = min(self.min_plain, val_plain)
        if val_plain < 0 and self.first_runaway is None:
            self.first_runaway = epoch
        result.curve.append({"epoch": epoch, "train_guarded_risk": train_risk,
                             "val_r1": v1, "val_r0": v0, "val_plain_risk": val_plain,
                             "val_guarded_risk": val_guarded, "guard_fired": fired, "seconds": seconds})
        result.epochs_run = epoch
        if not math.isfinite(val_plain):
            raise RmpipeError(f"{self.desc}: the validation risk became {val_plain} at epoch {epoch} "
                              "(try a smaller fit.head.lr)")
        if val_guarded < result.best_val_risk:
            result.best_val_risk, result.best_epoch, self.bad_epochs = val_guarded, epoch, 0
            self.best_state = copy.deepcopy(state)
        else:
            self.bad_epochs += 1
        if self.bar is not None:
            self.bar.set_postfix(val=f"{val_guarded:.4f}", best=result.best_epoch)
            self.bar.update(1)
        if self.bad_epochs >= self.patience:
            result.stopped = "patience"
            return True
        return False


def train_head(X: np.ndarray | torch.Tensor, train: RiskRows, val: RiskRows, head: HeadParams,
               guard: GuardParams, progress: bool = False, desc: str = "fit",
               validate_in_pass: bool | None = None) -> tuple[RewardHead, TrainResult]:
    """Train a head on ``X[train.rows]`` (mini-batches; ``X`` is not copied), stop and select on
    the guarded validation risk. Same seed and thread count give the same head on CPU. ``X``
    may be a :class:`pipeline.store_matrix.StoreMatrix`: its epochs then visit the store a
    window of shards at a time (:meth:`~pipeline.store_matrix.StoreMatrix.epoch_windows`), and
    (``validate_in_pass``, its default) epoch e's validation risk is scored during epoch e + 1's
    pass (:class:`InPassRisk`), one last pass scoring the final epoch: the same heads and curve
    as validating after each epoch, up to the rounding of the risk's sums, for about half the
    reads. Stopping on patience after epoch e then costs epoch e + 1's training, discarded."""
    if len(train.rows) == 0:
        raise RmpipeError("no training rows carry any loss (no observed rows in the train split?)")
    if len(val.rows) == 0:
        raise RmpipeError("no validation rows carry any loss: early stopping needs observed rows "
                          "in the val split")
    streamed = hasattr(X, "epoch_windows")
    in_pass = streamed if validate_in_pass is None else validate_in_pass
    if in_pass and not streamed:
        raise ValueError("validate_in_pass needs a streamed X (a StoreMatrix)")
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

    def one_epoch(pending: InPassRisk | None) -> tuple[float, int, int]:
        """A pass of mini-batches over the train rows: ``(mean guarded risk, guard hits,
        batches)``. ``pending`` scores each window's validation rows before its first batch."""
        model.train()
        if streamed:
            windows = X.epoch_windows(train.rows, gen)
            perm = torch.from_numpy(np.concatenate([pos for _, pos in windows]) if windows
                                    else np.empty(0, dtype=np.int64))
            starts = np.cumsum([0] + [len(pos) for _, pos in windows])[:-1]
        else:
            perm = torch.randperm(len(rows), generator=gen)
        total, batches, hits, scored = 0.0, 0, 0, 0
        for s in range(0, len(perm), head.batch_size):
            while pending is not None and scored < len(windows) and starts[scored] < s + head.batch_size:
                pending.score(windows[scored][0])
                scored += 1
            pos = perm[s:s + head.batch_size]
            r1, r0 = split_risk(model(torch.as_tensor(X[rows[pos]])), a1[pos], a0[pos], train.scale)
            loss, hit = step_objective(r1, r0, guard.nonnegative, guard.beta, guard.gamma)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            total += guarded_risk(r1.item(), r0.item())
            batches += 1
            hits += hit
        return total / batches, hits, batches

    bar = None
    if progress:
        from tqdm.auto import tqdm
        bar = tqdm(total=head.max_epochs, desc=desc, unit="epoch", leave=False)
    stop = EarlyStop(result, head.patience, desc, bar)
    started = time.perf_counter()
    if in_pass:
        pending, previous = None, None  # epoch e's frozen copy, and (e, risk, hits, batches, seconds)
        for epoch in range(1, head.max_epochs + 1):
            epoch_start = time.perf_counter()
            trained = one_epoch(pending)
            if pending is not None and stop.settle(*previous, *pending.finish(), pending.model.state_dict()):
                break  # epoch e + 1's training is discarded: the best weights are an earlier epoch's
            pending = InPassRisk(model, X, val)
            previous = (epoch, *trained, time.perf_counter() - epoch_start)
        else:
            stop.settle(*previous, *pending.finish(), pending.model.state_dict())  # the last epoch's own pass
    else:
        for epoch in range(1, head.max_epochs + 1):
            epoch_start = time.perf_counter()
            trained = one_epoch(None)
            v1, v0 = validation_risk(model, X, val)
            if stop.settle(epoch, *trained, time.perf_counter() - epoch_start, v1, v0, model.state_dict()):
                break
    if bar is not None:
        bar.close()
    result.seconds_per_epoch = (time.perf_counter() - started) / max(result.epochs_run, 1)
    model.load_state_dict(stop.best_state)
    model.eval()
    fired, steps = stop.fired, stop.batches
    result.guard = {"mode": "nonnegative" if guard.nonnegative else "plain", "beta": guard.beta,
                    "gamma": guard.gamma, "fired_batches": fired, "batches": steps,
                    "fired_share": fired / max(steps, 1)}
    result.runaway = {"detected": stop.first_runaway is not None, "first_epoch": stop.first_runaway,
                      "min_val_plain_risk": stop.min_plain,
                      "rule": "plain validation risk R1 + R0 below 0, which no real predictor reaches"}
    return model, result
