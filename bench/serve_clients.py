"""Load for bench/serve_throughput.py: ``concurrency`` HTTP clients posting back to back.

Run as a script, the clients live in their own process, as an RLHF trainer's do: in the server's
process their Python work would take the server's interpreter lock (GIL) away from its scoring
thread, a cost no real deployment has. bench/serve_throughput.py runs one such process for all
clients (their threads then share that process's GIL), or one a client (``--clients processes``:
as a trainer's rollout workers call the server). Imported, they run on threads of the caller
(``--clients thread``). Either way only requests that end inside the window count.

    echo '{"url": ..., "concurrency": 16, "warmup": 5, "seconds": 20, "pairs": 8, "first": 1000000}' \\
        | python bench/serve_clients.py
"""

from __future__ import annotations

import json
import sys
import threading
import time

import httpx


class Bodies:
    """Request bodies of ``pairs`` pairs: new ones numbered from ``first`` (never sent before, all
    of one shape, ~34 MiniLM tokens), or ``stored`` pairs in turn."""

    def __init__(self, pairs: int, first: int = 0, stored: list | None = None):
        self.pairs, self.next, self.stored = pairs, first, stored
        self.lock = threading.Lock()

    def __call__(self) -> list[dict]:
        with self.lock:
            ks = range(self.next, self.next + self.pairs)
            self.next += self.pairs
        if self.stored:
            return [self.stored[k % len(self.stored)] for k in ks]
        return [{"prompt": f"Bench question {k}: how should I plan my week?",
                 "response": f"Answer {k}: list the tasks, then block time for each."} for k in ks]


def load(url: str, bodies: Bodies, concurrency: int, warmup: float, seconds: float,
         on_window=lambda start, end: None, start: float | None = None) -> tuple[list[float], list[float]]:
    """Clients run ``warmup`` seconds (or until ``start``, given by a caller that runs several
    client processes), then on to the end of a ``seconds`` window; returns the end times and
    latencies of the requests that end inside it. ``on_window(start, end)`` is told the window's
    ``time.perf_counter`` bounds (CLOCK_MONOTONIC: the same clock in every process)."""
    ends, latencies, lock = [], [], threading.Lock()
    start = time.perf_counter() + warmup if start is None else start
    end = start + seconds
    on_window(start, end)

    def client():
        with httpx.Client(base_url=url, timeout=300) as c:
            while time.perf_counter() < end:
                body = bodies()
                t = time.perf_counter()
                c.post("/rewards", json=body).raise_for_status()
                done = time.perf_counter()
                if start <= done <= end:
                    with lock:
                        ends.append(done)
                        latencies.append(done - t)

    threads = [threading.Thread(target=client) for _ in range(concurrency)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return ends, latencies


def main() -> None:
    job = json.loads(sys.stdin.read())
    bodies = Bodies(job["pairs"], job.get("first", 0), job.get("stored"))

    def window(start, end):
        print(json.dumps({"start": start, "end": end}), flush=True)

    ends, latencies = load(job["url"], bodies, job["concurrency"], job["warmup"], job["seconds"], window,
                           job.get("start"))
    print(json.dumps({"ends": ends, "latencies": latencies}), flush=True)


if __name__ == "__main__":
    main()
