"""What one huge pair costs the other clients of the reward server: a 4 MB pair sent while a
small request and ``/health`` are timed, with the pair-length cap on (the default,
``--max-pair-chars 65536``: refused at once) and lifted (the pair is scored).

A real server (uvicorn, loopback) on a 240-row built-in MiniLM project in a temporary folder.
Ratios are the small request's latency against its latency on an idle server, same run.

    python bench/serve_abuse.py [--mb 4]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from rmpipe.serve import RewardModel, ServerThread, ServeSettings, build_app  # noqa: E402
from serve_throughput import project  # noqa: E402


def timed(fn) -> tuple[float, int]:
    start = time.perf_counter()
    code = fn().status_code
    return time.perf_counter() - start, code


def run(model, settings: ServeSettings, huge: str | None, n: int) -> dict:
    out = {}
    with ServerThread(build_app(model, settings)) as url, httpx.Client(base_url=url, timeout=600) as client:
        if huge is not None:
            def big():
                out["big"] = timed(lambda: httpx.post(f"{url}/rewards", json=[{"prompt": "Summarise:",
                                                                               "response": huge}], timeout=600))
            thread = threading.Thread(target=big)
            thread.start()
            time.sleep(0.3)  # the big request is being read or scored
        body = [{"prompt": f"Small question {n}?", "response": f"A small answer {n}."}]  # new: a forward pass
        out["small"] = timed(lambda: client.post("/rewards", json=body))
        out["health"] = timed(lambda: client.get("/health"))
        if huge is not None:
            thread.join()
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mb", type=float, default=4.0)
    args = parser.parse_args()
    import torch

    torch.set_num_threads(1)
    huge = "word " * int(args.mb * (1 << 20) / 5)
    with tempfile.TemporaryDirectory() as tmp:
        params, head = project(Path(tmp))
        model = RewardModel(params, head)
        rows = [("idle server", ServeSettings(), None),
                ("4 MB pair, cap 65536 chars (default)", ServeSettings(), huge),
                ("4 MB pair, cap lifted", ServeSettings(max_pair_chars=1 << 30), huge)]
        results = [(name, run(model, s, big, i)) for i, (name, s, big) in enumerate(rows)]
    base = results[0][1]["small"][0]
    print(f"\n| case | big pair: status, s | small request s | × idle | /health s |\n|---|---|---|---|---|")
    for name, r in results:
        big = f"{r['big'][1]}, {r['big'][0]:.2f}" if "big" in r else "-"
        print(f"| {name} | {big} | {r['small'][0]:.3f} | {r['small'][0] / base:.1f} | {r['health'][0]:.3f} |")


if __name__ == "__main__":
    main()
