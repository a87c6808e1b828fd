"""The server's micro-batching policy against the previous one (main @4019d37), interleaved in one
server process, as a table: serve pairs/s, its ratio to `rmpipe score`'s batch rate measured
around each level, latency and micro-batches.

The previous policy held a batch ``max_wait_ms`` from the moment the one before it was sent;
the current one (:meth:`rmpipe.app.Batcher._gather`) holds it until the requests in play when the
worker last finished are back. Each round runs every level with both, in alternating order, so
a drifting machine moves both. Setup and measurement as in bench/serve_throughput.py.

    python bench/serve_batcher_ab.py [--rounds 2] [--levels 1 4 8 16] [--seconds 20]
"""

from __future__ import annotations

import argparse
import asyncio
import os
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


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--levels", type=int, nargs="+", default=[1, 4, 8, 16])
    ap.add_argument("--seconds", type=float, default=20)
    ap.add_argument("--warmup", type=float, default=5)
    ap.add_argument("--pairs", type=int, default=8, help="pairs per request")
    ap.add_argument("--batch-pairs", type=int, default=1024)
    args = ap.parse_args()

    policies = {"previous": previous_gather, "current": Batcher._gather}
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        params, head = project(Path(tmp), "auto")
        model = RewardModel(params, head)
        batch_rate(params, args.batch_pairs)  # the batch path's first shapes, not counted
        with ServerThread(build_app(model, ServeSettings())) as url:
            for round_ in range(args.rounds):
                for level in args.levels:
                    order = list(policies) if (round_ + level) % 2 == 0 else list(policies)[::-1]
                    for name in order:
                        Batcher._gather = policies[name]
                        r = new_pairs_level(params, url, level, args, model.stats)
                        rows.append((level, round_ + 1, name, r["pairs_s"], r["batch"], r))
                        print(f"round {round_ + 1}, concurrency {level}, {name}: {r['pairs_s']:.0f} pairs/s",
                              file=sys.stderr, flush=True)
        Batcher._gather = policies["current"]
    load = " / ".join(f"{x:.2f}" for x in os.getloadavg())
    print(f"\nMicro-batching policies, MiniLM on CPU, {args.pairs} new pairs a request, "
          f"{args.seconds:g} s a level, clients in a process; load average after: {load}\n")
    print("| concurrency | round | policy | serve pairs/s | score pairs/s | serve / score | p50 ms | p95 ms | micro-batches |")
    print("|---:|---:|---|---:|---:|---:|---:|---:|---:|")
    for level, round_, name, pairs, batch, r in sorted(rows, key=lambda row: row[:3]):
        print(f"| {level} | {round_} | {name} | {pairs:.0f} | {batch:.0f} | {pairs / batch:.2f} "
              f"| {r['p50']:.0f} | {r['p95']:.0f} | {r['batches']} |")


if __name__ == "__main__":
    main()
