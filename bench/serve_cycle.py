"""Where the server's time goes between two forward passes on new pairs, as a table: the worker's
share of the wall time, and the gap after each micro-batch split at the moments the answered
clients' next requests pass through the server.

Each cycle is timed from the moment the worker finishes a micro-batch (its call of
:meth:`rmpipe.serve.RewardModel.logits`: key, tokenise, forward pass, head) to when the last answer
is sent, the first and last next requests are received, the last is decoded (enters the batcher),
and the worker's next call starts. The clients run as in bench/serve_throughput.py (a process of
their own, 8 new pairs a request); the first quarter of the cycles is left out as warm-up.

    python bench/serve_cycle.py [--levels 4 8] [--seconds 15] [--max-wait-ms 5]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from serve_throughput import fresh, project, run_level  # noqa: E402

from rmpipe.app import Batcher  # noqa: E402
from rmpipe.serve import RewardModel, ServerThread, ServeSettings, build_app  # noqa: E402

EVENTS: list[tuple] = []  # (kind, perf_counter) or ("call", start, end, pairs)
MILESTONES = [("sent", max, "last answer sent"), ("received", min, "first next request received"),
              ("received", max, "last next request received"), ("decoded", max, "last one decoded")]


def record(kind: str) -> None:
    EVENTS.append((kind, time.perf_counter()))


def instrument() -> None:
    """Wrap the batcher's entry and the worker's call with clocks."""
    score, logits = Batcher.score, RewardModel.logits

    async def timed_score(self, prompts, responses):
        record("decoded")
        return await score(self, prompts, responses)

    def timed_logits(self, prompts, responses):
        start = time.perf_counter()
        out = logits(self, prompts, responses)
        EVENTS.append(("call", start, time.perf_counter(), len(prompts)))
        return out

    Batcher.score, RewardModel.logits = timed_score, timed_logits


def clocked(app):
    """The ASGI app with a clock on each request body received and each answer sent."""

    async def asgi(scope, receive, send):
        async def timed_receive():
            message = await receive()
            if message["type"] == "http.request":
                record("received")
            return message

        async def timed_send(message):
            if message["type"] == "http.response.body":
                record("sent")
            await send(message)

        await app(scope, timed_receive, timed_send)

    return asgi


def cycles(events: list[tuple], pairs: int) -> dict:
    """Per-cycle milestones (ms after the worker finished) and the worker's figures."""
    forwards = [e for e in events if e[0] == "call"]
    forwards = forwards[len(forwards) // 4:]
    out = {"busy": sum(f[2] - f[1] for f in forwards) / (forwards[-1][2] - forwards[0][1]),
           "requests": statistics.mean(f[3] for f in forwards) / pairs,
           "call_ms": statistics.median(f[2] - f[1] for f in forwards) * 1000,
           **{label: [] for *_, label in MILESTONES}, "next call starts": []}
    for done, nxt in zip(forwards, forwards[1:]):
        inside = [e for e in events if len(e) == 2 and done[2] < e[1] < nxt[1]]
        times = {kind: [t for k, t in inside if k == kind] for kind, *_ in MILESTONES}
        if all(times.values()):
            for kind, pick, label in MILESTONES:
                out[label].append((pick(times[kind]) - done[2]) * 1000)
            out["next call starts"].append((nxt[1] - done[2]) * 1000)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--levels", type=int, nargs="+", default=[4, 8])
    ap.add_argument("--seconds", type=float, default=15)
    ap.add_argument("--warmup", type=float, default=3)
    ap.add_argument("--pairs", type=int, default=8, help="pairs per request")
    ap.add_argument("--max-wait-ms", type=float, default=ServeSettings.max_wait_ms)
    args = ap.parse_args()

    instrument()
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        params, head = project(Path(tmp), "auto")
        model = RewardModel(params, head)
        app = clocked(build_app(model, ServeSettings(max_wait_ms=args.max_wait_ms)))
        with ServerThread(app) as url:
            for level in args.levels:
                EVENTS.clear()
                run_level(url, fresh(args.pairs), level, args.seconds, args.warmup, model.stats)
                results[level] = cycles(list(EVENTS), args.pairs)
    print(f"\nA micro-batch cycle on new pairs, MiniLM on CPU, {args.pairs} pairs a request, "
          f"--max-wait-ms {args.max_wait_ms:g}; milestones in ms after the worker finished, median (mean)\n")
    print("| | " + " | ".join(f"concurrency {level}" for level in results) + " |")
    print("|---|" + "---:|" * len(results))
    print("| worker busy, share of wall time | " + " | ".join(f"{r['busy']:.1%}" for r in results.values()) + " |")
    print("| requests a micro-batch (mean) | " + " | ".join(f"{r['requests']:.2f}" for r in results.values()) + " |")
    print("| the worker's call, ms (median) | " + " | ".join(f"{r['call_ms']:.1f}" for r in results.values()) + " |")
    for label in [label for *_, label in MILESTONES] + ["next call starts"]:
        cells = [f"{statistics.median(r[label]):.2f} ({statistics.mean(r[label]):.2f})" for r in results.values()]
        print(f"| {label} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
