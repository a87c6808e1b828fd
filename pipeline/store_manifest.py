"""The embedding store's manifest file and its lock: what every reader and writer of a store
shares (:mod:`pipeline.store` reads and writes through them, :mod:`pipeline.store_repair`
rebuilds them)."""

from __future__ import annotations

import contextlib
import hashlib
import json
from pathlib import Path
from typing import Iterator

from filelock import FileLock

from pipeline.errors import RmpipeError

FORMAT = 1
MANIFEST = "manifest.json"
LOCK = ".lock"


def spec_hash(spec: dict) -> str:
    """Stable hash of an embedding function's definition (canonical JSON, SHA-256, 16 hex)."""
    blob = json.dumps(spec, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def read_manifest(path: Path) -> dict:
    try:
        manifest = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        raise RmpipeError(f"{path}: unreadable store manifest; rebuild it from its shards "
                          f"with `rmpipe cache verify --repair`") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        got = manifest.get("format") if isinstance(manifest, dict) else None
        raise RmpipeError(f"{path}: store format {got}, expected {FORMAT}")
    return manifest



@contextlib.contextmanager
def writing(root: Path) -> Iterator[None]:
    """A store that cannot be written (read-only, full disk, quota) is one line, not a traceback;
    the temp files of the write in flight are gone by then (see :func:`atomic_path`)."""
    try:
        yield
    except OSError as exc:
        reason = exc.strerror or str(exc).split(". Detail")[0] or type(exc).__name__
        raise RmpipeError(f"{root}: cannot write the embedding store ({reason}); nothing was "
                          f"half-written, the rows committed so far are kept") from None


@contextlib.contextmanager
def locked(root: Path) -> Iterator[None]:
    """An exclusive lock on the store, held across read-modify-write of the manifest."""
    root.mkdir(parents=True, exist_ok=True)
    with FileLock(root / LOCK):
        yield
