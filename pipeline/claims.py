"""Claims on a store's work, so that concurrent writers split the pairs instead of each
computing all of them. Made and inspected only under the store's lock (pipeline.store)."""

from __future__ import annotations

import json
import os
import uuid
from dataclasses import dataclass
from pathlib import Path

from filelock import FileLock, Timeout

from pipeline.atomic import write_json


@dataclass
class Claim:
    """Pairs one writer is computing: ``.claim-<id>.json`` lists them, and the writer holds
    ``.claim-<id>.lock`` while it works, so a claim whose lock is free belongs to a dead writer."""

    root: Path
    name: str
    lock: FileLock
    pair_ids: list[str]

    @classmethod
    def make(cls, root: Path, pair_ids: list[str]) -> "Claim":
        name = f".claim-{uuid.uuid4().hex[:12]}"
        lock = FileLock(root / f"{name}.lock")
        lock.acquire()
        write_json(root / f"{name}.json", {"pid": os.getpid(), "pair_ids": pair_ids})
        return cls(root, name, lock, pair_ids)

    def release(self) -> None:
        (self.root / f"{self.name}.json").unlink(missing_ok=True)
        self.lock.release()
        (self.root / f"{self.name}.lock").unlink(missing_ok=True)


def live_claims(root: Path) -> set[str]:
    """pair_ids claimed by live writers; claims of dead ones are deleted. Call under the lock."""
    held: set[str] = set()
    for path in root.glob(".claim-*.json"):
        lock = FileLock(path.with_suffix(".lock"))
        try:
            lock.acquire(timeout=0)
        except Timeout:
            try:
                held.update(json.loads(path.read_text())["pair_ids"])
            except (OSError, ValueError, KeyError):
                pass
            continue
        path.unlink(missing_ok=True)
        lock.release()
        path.with_suffix(".lock").unlink(missing_ok=True)
    return held
