"""The server against an earlier version of itself, interleaved in one server process, as a table:
serve pairs/s, its ratio to `rmpipe score`'s batch rate measured around each level, latency and
micro-batches.

``--against`` picks the earlier version:
- ``tokenising`` (default; main @dded523): each micro-batch was tokenised by the worker thread,
  between forward passes. Now each request is tokenised as it arrives, on a thread of its own
  (:meth:`rmpipe.serve.RewardModel.prepare`); the worker only runs forward passes.
- ``batching`` (main @4019d37): a batch was held ``max_wait_ms`` from the moment the one before
  it was sent. Now (:meth:`rmpipe.app.Batcher._gather`) it is held until the requests in play
  when the worker last finished are back.

Each round runs every level with both, in alternating order, so a drifting machine moves both.
Setup and measurement as in bench/serve_throughput.py.

    python bench/serve_batcher_ab.py [--against tokenising] [--rounds 2] [--levels 1 4 8 16] [--seconds 20]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from serve_throughput import batch_rate, new_pairs_level, project  # noqa: E402

from rmpipe.app import Batcher  # noqa: E402
from rmpipe.serve import RewardModel, ServerThread, ServeSettings, build_app  # noqa: E402


async def previous_gather(self, loop, inflight) -> None:
    """main @4019d37: hold until ``max_batch`` pairs wait, or ``max_wait_ms`` after this gather
    began (while the previous batch was being sent) has passed and the worker is free."""
    deadline = loop.time() + self.wait
    while sum(len(p) for p, _, _ in self.pending) < self.max_batch:
        busy = [t for t in inflight if not t.done()]
        left = deadline - loop.time()
        if left <= 0 and not busy:
            return
        self.arrived.clear()
        waits = [asyncio.ensure_future(self.arrived.wait()), *busy]
        done, _ = await asyncio.wait(waits, timeout=max(left, 0) if not busy else None,
                                     return_when=asyncio.FIRST_COMPLETED)
        waits[0].cancel()
        if not done:
            return


def worker_tokenises(self, prompts, responses, tokenise=True):
    """main @dded523: the request is keyed here but tokenised by the worker with its batch."""
    return CURRENT_PREPARE(self, prompts, responses, tokenise=False)


CURRENT_PREPARE = RewardModel.prepare
EARLIER = {"tokenising": (RewardModel, "prepare", worker_tokenises),
           "batching": (Batcher, "_gather", previous_gather)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--against", choices=list(EARLIER), default="tokenising")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--levels", type=int, nargs="+", default=[1, 4, 8, 16])
    ap.add_argument("--seconds", type=float, default=20)
    ap.add_argument("--warmup", type=float, default=5)
    ap.add_argument("--pairs", type=int, default=8, help="pairs per request")
    ap.add_argument("--batch-pairs", type=int, default=1024)
    args = ap.parse_args()

    owner, name, earlier = EARLIER[args.against]
    versions = {"previous": earlier, "current": getattr(owner, name)}
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        params, head = project(Path(tmp), "auto")
        model = RewardModel(params, head)
        batch_rate(params, args.batch_pairs)  # the batch path's first shapes, not counted
        with ServerThread(build_app(model, ServeSettings())) as url:
            for round_ in range(args.rounds):
                for level in args.levels:
                    order = list(versions) if (round_ + level) % 2 == 0 else list(versions)[::-1]
                    for version in order:
                        setattr(owner, name, versions[version])
                        r = new_pairs_level(params, url, level, args, model.stats)
                        rows.append((level, round_ + 1, version, r["pairs_s"], r["batch"], r))
                        print(f"round {round_ + 1}, concurrency {level}, {version}: {r['pairs_s']:.0f} pairs/s",
                              file=sys.stderr, flush=True)
        setattr(owner, name, versions["current"])
    load = " / ".join(f"{x:.2f}" for x in os.getloadavg())
    print(f"\nThe server against its previous {args.against}, MiniLM on CPU, {args.pairs} new pairs a request, "
          f"{args.seconds:g} s a level, clients in a process; load average after: {load}\n")
    print("| concurrency | round | version | serve pairs/s | score pairs/s | serve / score | p50 ms | p95 ms | micro-batches |")
    print("|---:|---:|---|---:|---:|---:|---:|---:|---:|")
    for level, round_, version, pairs, batch, r in sorted(rows, key=lambda row: row[:3]):
        print(f"| {level} | {round_} | {version} | {pairs:.0f} | {batch:.0f} | {pairs / batch:.2f} "
              f"| {r['p50']:.0f} | {r['p95']:.0f} | {r['batches']} |")
    for level in args.levels:
        for version in versions:
            ratios = [pairs / batch for lv, _, v, pairs, batch, _ in rows if (lv, v) == (level, version)]
            print(f"| {level} | mean | {version} | | | {statistics.mean(ratios):.3f} | | | |")


if __name__ == "__main__":
    main()
