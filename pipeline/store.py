"""The embedding store: one folder per backbone, Parquet shards plus a manifest.

Stage one writes it, stage two reads it; they meet nowhere else. The manifest carries the hash
of the embedding *function* (model, weights, pooling, layer, max tokens, template, dtype), so
embeddings of one function are never mixed with another's. Shards are immutable: written under
a temporary name, renamed, then listed in the manifest (also replaced atomically), all under a
file lock, so a crash or a second concurrent run never leaves a half-written or duplicated row.
A process killed between rename and manifest update leaves an unlisted shard (or a temp file):
each shard carries its own checks (row count, content hash, function key in its Parquet
metadata), so the next writer adopts an unlisted shard that passes them and deletes the rest, and
a lost or truncated manifest is rebuilt from the shards (:mod:`pipeline.store_repair`; the
manifest file and its lock are :mod:`pipeline.store_manifest`). Writers claim
chunks of work under the lock (:meth:`EmbeddingStore.claim`), so concurrent runs split the pairs.
A store with nothing to write is only read: no lock, no write, so a read-only store serves.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from pipeline.atomic import atomic_path, write_json
from pipeline.claims import Claim, live_claims
from pipeline.errors import RmpipeError
from pipeline.shards import check_shard_file, manifest_entry, shard_table
from pipeline.store_manifest import FORMAT, MANIFEST, locked, read_manifest, spec_hash, writing
from pipeline.store_repair import check_shard, rebuild as rebuild_manifest, repair_store, tidy

HEADER = ("backbone", "spec", "spec_hash", "dim", "dtype")


@dataclass
class EmbeddingStore:
    """A backbone's store at ``root`` (``cache/embeddings/<backbone>``).

    Open an existing one with ``EmbeddingStore(root)``; make or reopen one for a given function
    with :meth:`create`. ``notes`` says what opening it recovered (adopted or rebuilt shards).
    """

    root: Path

    def __post_init__(self):
        self.root = Path(self.root)
        self._verified: set[str] = set()
        self._ids: dict[str, list[str]] = {}  # shard file -> its pair_ids (shards are immutable)
        self._id_set: set[str] = set()  # the pair_ids of the shards in _covered (pair_ids())
        self._covered: set[str] = set()
        self.notes: list[str] = []
        if not self.root.is_dir() or not ((self.root / MANIFEST).exists()
                                          or any(self.root.glob("shard-*.parquet"))):
            raise RmpipeError(f"{self.root}: no embedding store here (run `rmpipe embed` first)")
        if not (self.root / MANIFEST).exists():
            raise RmpipeError(f"{self.root}: store has no {MANIFEST}; run `rmpipe cache verify "
                              f"--repair` to rebuild it from its shards")

    # --- creation ------------------------------------------------------------------------
    @classmethod
    def create(cls, root: str | Path, backbone: str, spec: dict, dim: int,
               dtype: str = "float32", rebuild: bool = False) -> "EmbeddingStore":
        """Open the store at ``root`` for embedding function ``spec``, creating it if absent.

        A store made by a different function is refused, naming the fields that differ, unless
        ``rebuild`` is set, in which case its shards are deleted first. With ``rebuild``, an
        unreadable manifest is rebuilt from the shards of this function that pass their checks.
        """
        root = Path(root)
        wanted = spec_hash(spec)
        notes: list[str] = []
        with writing(root), locked(root):
            manifest_path = root / MANIFEST
            manifest = None
            if manifest_path.exists():
                try:
                    manifest = read_manifest(manifest_path)
                except RmpipeError:
                    if not rebuild:
                        raise RmpipeError(f"{manifest_path}: unreadable store manifest; rebuild it "
                                          f"from its shards with `rmpipe cache verify --repair` "
                                          f"or `rmpipe embed --rebuild`") from None
                    manifest = rebuild_manifest(root, wanted, notes)
            if manifest is not None and manifest["spec_hash"] != wanted:
                if not rebuild:
                    changed = sorted(k for k in set(spec) | set(manifest["spec"])
                                     if spec.get(k) != manifest["spec"].get(k))
                    raise RmpipeError(
                        f"{root}: store for backbone {manifest['backbone']!r} was built by "
                        f"embedding function {manifest['spec_hash']}, not {wanted} (changed: "
                        f"{', '.join(changed)}); rebuild it or use another backbone name")
                for shard in manifest["shards"]:
                    (root / shard["file"]).unlink(missing_ok=True)
                manifest = None
            if manifest is not None:
                if manifest["dim"] != dim:
                    raise RmpipeError(f"{root}: store has dimension {manifest['dim']}, "
                                      f"the backbone gives {dim}")
                if manifest["dtype"] != dtype:
                    raise RmpipeError(f"{root}: store holds {manifest['dtype']} vectors, "
                                      f"embed.store_dtype asks for {dtype}; set it back or "
                                      f"rebuild the store (rmpipe embed --rebuild)")
                tidy(root, manifest, notes)
            else:
                manifest = {"format": FORMAT, "backbone": backbone, "spec": spec,
                            "spec_hash": wanted, "dim": int(dim), "dtype": dtype, "shards": []}
                tidy(root, manifest, notes)
                write_json(manifest_path, manifest)
        store = cls(root)
        store.notes = notes
        return store

    # --- metadata ------------------------------------------------------------------------
    @property
    def manifest(self) -> dict:
        return read_manifest(self.root / MANIFEST)

    @property
    def backbone(self) -> str:
        return self.manifest["backbone"]

    @property
    def spec_hash(self) -> str:
        return self.manifest["spec_hash"]

    @property
    def dim(self) -> int:
        return int(self.manifest["dim"])

    @property
    def rows(self) -> int:
        return sum(s["rows"] for s in self.manifest["shards"])

    def size_bytes(self) -> int:
        return sum(s["bytes"] for s in self.manifest["shards"])

    def pair_ids(self) -> set[str]:
        """The pair_ids already embedded: the store's own set, kept up to date shard by shard
        (every append asks for it: rebuilding it each time made filling a big store quadratic).
        Read it; do not modify it."""
        shards = self.manifest["shards"]
        files = {s["file"] for s in shards}
        if not self._covered <= files:  # a shard was dropped (repair, rebuild): start again
            self._id_set, self._covered = set(), set()
        for shard in shards:
            if shard["file"] not in self._covered:
                self._id_set.update(self._shard_ids(shard))
                self._covered.add(shard["file"])
        return self._id_set

    def _shard_ids(self, shard: dict) -> list[str]:
        if shard["file"] not in self._ids:
            self._ids[shard["file"]] = self._read_shard(shard, ["pair_id"])["pair_id"].to_pylist()
        return self._ids[shard["file"]]

    def disk_bytes(self) -> int:
        """Bytes on disk of everything in the folder (shards, manifest, stray files)."""
        return sum(p.stat().st_size for p in self.root.iterdir() if p.is_file())

    # --- writing -------------------------------------------------------------------------
    def claim(self, candidates: Sequence[str], limit: int) -> tuple[Claim | None, int]:
        """Claim up to ``limit`` of ``candidates`` that are neither stored nor claimed by a live
        writer, so that concurrent runs split the work. Returns (the claim or None, how many
        candidates other live writers hold). A writer's claim dies with its process."""
        with writing(self.root), locked(self.root):
            have = self.pair_ids()
            held = live_claims(self.root)
            free = [pid for pid in dict.fromkeys(candidates) if pid not in have]
            pending = sum(pid in held for pid in free)
            mine = [pid for pid in free if pid not in held][:limit]
            if not mine:
                return None, pending
            return Claim.make(self.root, mine), pending

    def append(self, pair_ids: Sequence[str], embeddings: np.ndarray,
               exec_info: dict | None = None, claim: Claim | None = None) -> int:
        """Add one shard with the given rows, skipping pair_ids the store already holds (a
        concurrent run may have written them), and release ``claim``. Returns rows written."""
        embeddings = np.asarray(embeddings)
        if embeddings.ndim != 2 or embeddings.shape[0] != len(pair_ids):
            raise ValueError(f"embeddings {embeddings.shape} do not match {len(pair_ids)} pair_ids")
        with writing(self.root), locked(self.root):
            try:
                return self._append(list(pair_ids), embeddings, exec_info or {})
            finally:
                if claim is not None:
                    claim.release()

    def _append(self, pair_ids: list[str], embeddings: np.ndarray, exec_info: dict) -> int:
        manifest = self.manifest
        if embeddings.shape[1] != manifest["dim"]:
            raise RmpipeError(f"{self.root}: embeddings have dimension {embeddings.shape[1]}, "
                              f"store has {manifest['dim']}")
        have = self.pair_ids()
        keep, seen = [], set()
        for i, pid in enumerate(pair_ids):
            if pid not in have and pid not in seen:
                keep.append(i)
                seen.add(pid)
        if not keep:
            return 0
        values = embeddings[keep].astype(np.dtype(manifest["dtype"]), copy=False)
        ids = [pair_ids[i] for i in keep]
        table = shard_table(ids, values, {k: manifest[k] for k in HEADER}, exec_info)
        target = self.root / f"shard-{uuid.uuid4().hex[:12]}.parquet"
        with atomic_path(target) as tmp:
            pq.write_table(table, tmp)
        try:
            manifest["shards"].append(manifest_entry(target, len(ids), exec_info))
            write_json(self.root / MANIFEST, manifest)
        except OSError:
            target.unlink(missing_ok=True)  # the store stays as it was
            raise
        self._ids[target.name] = ids
        return len(ids)

    def commit_shard(self, path: str | Path, exec_info: dict | None = None) -> int:
        """List a finished shard file written elsewhere (a Ray actor's, in :func:`shard_table`'s
        format): checked against its own checksum and this store's key, dim and dtype, moved
        into the store and listed, all under the lock. Rows the store already holds are
        dropped (their vectors are rewritten without them). Returns rows committed."""
        path = Path(path)
        with writing(self.root), locked(self.root):
            meta, ids = check_shard_file(path)
            manifest = self.manifest
            for key in ("spec_hash", "dim", "dtype"):
                if meta.get(key) != manifest[key]:
                    raise RmpipeError(f"{path}: shard has {key} {meta.get(key)}, the store at "
                                      f"{self.root} has {manifest[key]}")
            have = self.pair_ids()
            if have.intersection(ids):
                values = self._shard_values_of(path, int(manifest["dim"]))
                path.unlink()
                return self._append(ids, values, exec_info or meta.get("exec", {}))
            target = self.root / path.name
            path.rename(target)
            manifest["shards"].append(manifest_entry(target, len(ids), exec_info or meta.get("exec", {})))
            write_json(self.root / MANIFEST, manifest)
            self._ids[target.name] = ids
            return len(ids)

    @staticmethod
    def _shard_values_of(path: Path, dim: int) -> np.ndarray:
        col = pq.ParquetFile(path).read(columns=["embedding"])["embedding"].combine_chunks()
        return col.values.to_numpy(zero_copy_only=False).reshape(-1, dim)

    # --- reading -------------------------------------------------------------------------
    def read(self, pair_ids: Sequence[str]) -> np.ndarray:
        """Embeddings for ``pair_ids`` in their order (repeats allowed), float32 (n, dim)."""
        wanted: dict[str, list[int]] = {}
        for i, pid in enumerate(pair_ids):
            wanted.setdefault(pid, []).append(i)
        manifest = self.manifest
        dim = int(manifest["dim"])
        out = np.empty((len(pair_ids), dim), dtype=np.float32)
        for shard in manifest["shards"]:
            ids = self._shard_ids(shard)
            rows = [r for r, pid in enumerate(ids) if pid in wanted]
            if not rows:
                continue
            values = self._shard_values(shard, dim)
            for r in rows:
                out[wanted.pop(ids[r])] = values[r]
        if wanted:
            missing = list(wanted)
            raise RmpipeError(f"{self.root}: {len(missing)} pair_id(s) not embedded, e.g. "
                              f"{missing[0]} (run `rmpipe embed --backbone {self.backbone}`)")
        return out

    def iter_shards(self) -> Iterator[tuple[list[str], np.ndarray]]:
        """``(pair_ids, embeddings)`` shard by shard: one pass over the whole store in the memory
        of one shard (the server reads it once at start-up)."""
        manifest = self.manifest
        for shard in manifest["shards"]:
            yield self._shard_ids(shard), self._shard_values(shard, int(manifest["dim"]))

    def _shard_values(self, shard: dict, dim: int) -> np.ndarray:
        """One shard's vectors as float32 (read-only where the store holds float32: no copy)."""
        col = self._read_shard(shard, ["embedding"])["embedding"].combine_chunks()
        return col.values.to_numpy(zero_copy_only=False).reshape(-1, dim).astype(np.float32, copy=False)

    def verify(self) -> None:
        """Check every shard against the manifest (exists, size, checksum, row count)."""
        for shard in self.manifest["shards"]:
            self._check_shard(shard)

    def repair(self) -> list[str]:
        """Drop shards that fail :meth:`verify` (see :func:`repair_store`), so that the next
        ``rmpipe embed`` recomputes just their rows. Returns the dropped file names."""
        dropped, self.notes = repair_store(self.root)
        return dropped

    def _check_shard(self, shard: dict) -> None:
        if shard["file"] not in self._verified:
            check_shard(self.root, shard)
            self._verified.add(shard["file"])

    def _read_shard(self, shard: dict, columns: list[str]) -> pa.Table:
        self._check_shard(shard)
        path = self.root / shard["file"]
        table = pq.read_table(path, columns=columns, memory_map=False)  # mapped pages would count as resident
        if table.num_rows != shard["rows"]:
            raise RmpipeError(f"{path}: shard has {table.num_rows} rows, manifest says {shard['rows']}")
        return table

    def merge_from(self, other: "EmbeddingStore", batch: int = 4096) -> int:
        """Copy the rows of ``other`` (same embedding function) that this store lacks: how shards
        filled on machines without a shared disk come together. Returns rows added."""
        if other.spec_hash != self.spec_hash:
            raise RmpipeError(f"{other.root}: built by embedding function {other.spec_hash}, "
                              f"{self.root} by {self.spec_hash}; they cannot be merged")
        todo = sorted(other.pair_ids() - self.pair_ids())
        added = 0
        for start in range(0, len(todo), batch):
            ids = todo[start:start + batch]
            added += self.append(ids, other.read(ids), {"merged_from": str(other.root)})
        return added


def open_if_current(root: str | Path, key: str) -> EmbeddingStore | None:
    """The store at ``root`` if its manifest is readable and of function ``key``, else None.
    Reads only: a full store serves a re-run without the lock, even from a read-only disk."""
    try:
        store = EmbeddingStore(root)
        return store if store.spec_hash == key else None
    except RmpipeError:
        return None


def list_stores(store_dir: str | Path) -> list[EmbeddingStore]:
    """Every store with a manifest under ``store_dir`` (``cache/embeddings``)."""
    return [EmbeddingStore(p) for p in store_folders(store_dir) if (p / MANIFEST).exists()]


def store_folders(store_dir: str | Path) -> list[Path]:
    """The folder of every store under ``store_dir``, damaged or not."""
    store_dir = Path(store_dir)
    if not store_dir.is_dir():
        return []
    return [p for p in sorted(store_dir.iterdir())
            if p.is_dir() and ((p / MANIFEST).exists() or any(p.glob("shard-*.parquet")))]
