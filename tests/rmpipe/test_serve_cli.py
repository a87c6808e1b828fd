"""`rmpipe serve` as a user starts it: the CLI in a subprocess on a free loopback port, called
over HTTP, then stopped with SIGINT (Ctrl-C) and SIGTERM, as a terminal or a supervisor would: the
CLI's options reach the server, no traceback on the way out."""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import numpy as np
import polars as pl
import yaml

from rmpipe.score import score

REPO = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(params_file: Path, head: Path, port: int) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(REPO), "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    return subprocess.Popen(
        [sys.executable, "-m", "rmpipe.cli", "serve", "--head", str(head), "--port", str(port),
         "--params", str(params_file), "--max-request-pairs", "3", "--max-pair-chars", "500",
         "--default-system", "You are a terse assistant."],
        cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def wait_healthy(proc: subprocess.Popen, url: str, limit_s: float = 180) -> None:
    deadline = time.monotonic() + limit_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"rmpipe serve exited {proc.returncode}: {proc.stdout.read()}")
        try:
            if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            time.sleep(0.5)
    raise AssertionError(f"rmpipe serve: no /health within {limit_s} s")


def test_the_serve_command_answers_and_stops_on_a_signal(served, tmp_path):
    params, head = served
    params_file = tmp_path / "params.yaml"
    params_file.write_text(yaml.safe_dump(json.loads(json.dumps(dataclasses.asdict(params)))))
    pairs = [("How do I reset my router?", "Unplug it for thirty seconds."), ("Capital of Peru?", "Lima.")]
    data = tmp_path / "pairs.jsonl"
    pl.DataFrame({"prompt": [p for p, _ in pairs], "response": [r for _, r in pairs]}).write_ndjson(data)
    out, _ = score(params, head, data, tmp_path / "rewards.parquet", progress=False)
    expected = pl.read_parquet(out)["reward"].to_numpy()

    for stop in (signal.SIGINT, signal.SIGTERM):
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        proc = start_server(params_file, head, port)
        try:
            wait_healthy(proc, url)
            reply = httpx.post(f"{url}/rewards", json=[{"prompt": p, "response": r} for p, r in pairs],
                               timeout=60)
            assert reply.status_code == 200, reply.text
            assert np.abs(np.array(reply.json()["rewards"]) - expected).max() < 1e-5
            # the CLI's option reaches the server: 4 pairs are over --max-request-pairs 3
            big = httpx.post(f"{url}/rewards", json=[{"prompt": "a", "response": "b"}] * 4, timeout=60)
            assert big.status_code == 413 and "limit of 3" in big.json()["error"]
            long = httpx.post(f"{url}/rewards", json=[{"prompt": "a", "response": "b" * 600}], timeout=60)
            assert long.status_code == 413 and "limit of 500 a pair" in long.json()["error"]
            info = httpx.get(f"{url}/info", timeout=10).json()
            assert info["backbone"] == "minilm" and "You are a terse assistant." in info["default_systems"]
            proc.send_signal(stop)
            output, _ = proc.communicate(timeout=60)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.communicate()
        # a clean shutdown either way: uvicorn stops serving, then re-raises a SIGTERM it caught
        # so that a supervisor sees the process ended by its signal
        assert proc.returncode in ((0,) if stop == signal.SIGINT else (0, -signal.SIGTERM)), (stop, output)
        assert f"http://127.0.0.1:{port}" in output and "POST /rewards" in output and "POST /classify" in output
        assert "Traceback" not in output
