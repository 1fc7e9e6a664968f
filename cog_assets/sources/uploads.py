"""What changed under a data root since the last look, cheaply: stat first, hash only what moved.

The sensor keeps a snapshot (path, size, mtime, sha256) in the store and a small cursor. A
tick lists the files, hashes only new or re-stat'ed ones, and derives one fingerprint per
shard from what determines its output (each clip's id, caption, image and video bytes). A
shard whose fingerprint changed needs a run; a file touched with the same bytes changes none.
"""

from __future__ import annotations

import hashlib
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import polars as pl

from cog_assets.core.config import SourceSettings
from cog_assets.core.keys import caption_sha256
from cog_assets.core.reasons import RejectReason
from cog_assets.media.errors import MediaError
from cog_assets.media.safe_open import hash_at_rest
from cog_assets.sources.manifests import read_manifests
from cog_assets.sources.segment_captions import captions_digest, read_segment_captions
from cog_assets.sources.sharding import shard_for
from cog_assets.store import layout

SNAPSHOT_SCHEMA = {"path": pl.String, "size": pl.Int64, "mtime_ns": pl.Int64,
                   "sha256": pl.String}


class FileLister(Protocol):
    """What a scan needs from a place that holds uploads; an object store can implement it."""

    def stat_all(self) -> pl.DataFrame:
        """Every file as (path relative to the root, size, mtime_ns)."""

    def sha256(self, path: str) -> str | None:
        """The content hash of one file; None while it is not at rest (try again later)."""


@dataclass(frozen=True)
class LocalLister:
    root: Path
    settle_s: float = 0.0

    def _walk(self, directory: str, real_root: str) -> Iterator[tuple[str, int, int]]:
        with os.scandir(directory) as entries:
            for entry in entries:
                if entry.name.startswith("."):
                    continue
                if entry.is_dir(follow_symlinks=False):
                    yield from self._walk(entry.path, real_root)
                elif entry.is_file(follow_symlinks=False):
                    stat = entry.stat(follow_symlinks=False)
                    yield entry.path, stat.st_size, stat.st_mtime_ns
                elif entry.is_symlink():
                    target = os.path.realpath(entry.path)
                    if target.startswith(real_root + os.sep) and os.path.isfile(target):
                        stat = os.stat(target)
                        yield entry.path, stat.st_size, stat.st_mtime_ns

    def stat_all(self) -> pl.DataFrame:
        root = str(self.root)
        prefix = len(root.rstrip("/")) + 1
        rows = [(p[prefix:].replace(os.sep, "/"), s, m)
                for p, s, m in self._walk(root, os.path.realpath(root))]
        return pl.DataFrame(rows, schema=list(SNAPSHOT_SCHEMA)[:3], orient="row")

    def sha256(self, path: str) -> str | None:
        try:
            return hash_at_rest(self.root / path, self.root, self.settle_s)[1]
        except MediaError as exc:
            if exc.reason == RejectReason.deferred:  # still being written: a later tick
                return None
            # gone, unreadable, or no longer a regular file inside the root: a state of its
            # own, so the shard's run (which rejects the row) is not held back for it
            return f"refused:{exc.reason}"


@dataclass
class ScanResult:
    snapshot: pl.DataFrame
    hashed: int  # files whose bytes were read this tick
    changed_files: list[str]  # new or different bytes
    deleted_files: list[str]
    pending: int = 0  # files left to hash on a later tick (hash budget spent, or in flux)


def refresh_snapshot(previous: pl.DataFrame | None, lister: FileLister,
                     hash_budget_s: float | None = None) -> ScanResult:
    """The current snapshot, re-using the previous hash of every file whose stat is unchanged.

    With `hash_budget_s`, hashing stops when the budget is spent: the files left get no hash
    yet (null) and are hashed on the next call, so a first look at a huge dataset spreads over
    several sensor ticks instead of running past the tick timeout.
    """
    listing = lister.stat_all()
    previous = previous if previous is not None else pl.DataFrame(schema=SNAPSHOT_SCHEMA)
    joined = listing.join(previous.rename({"size": "prev_size", "mtime_ns": "prev_mtime"}),
                          on="path", how="left")
    same_stat = ((pl.col("size") == pl.col("prev_size"))
                 & (pl.col("mtime_ns") == pl.col("prev_mtime"))
                 & pl.col("sha256").is_not_null()).fill_null(False)
    unchanged = joined.filter(same_stat).select(list(SNAPSHOT_SCHEMA))
    restat = joined.filter(~same_stat)
    deadline = None if hash_budget_s is None else time.monotonic() + hash_budget_s
    hashed: list[str | None] = []
    for path in restat["path"]:
        if deadline is not None and time.monotonic() > deadline:
            hashed.append(None)
        else:
            hashed.append(lister.sha256(path))
    rehashed = restat.with_columns(pl.Series("new_sha", hashed, dtype=pl.String))
    done = rehashed.filter(pl.col("new_sha").is_not_null())
    changed = done.filter(pl.col("sha256").is_null() | (pl.col("sha256") != pl.col("new_sha")))
    snapshot = pl.concat([unchanged, rehashed.select(
        "path", "size", "mtime_ns", pl.col("new_sha").alias("sha256"))]).sort("path")
    deleted = sorted(set(previous["path"]) - set(listing["path"]))
    return ScanResult(snapshot, len(done), changed["path"].to_list(), deleted,
                      len(hashed) - len(done))


def shard_fingerprints(sources: SourceSettings, snapshot: pl.DataFrame) -> dict[str, str]:
    """One hash per shard of everything that decides its output: each clip's id, caption,
    first-frame image and the bytes of both (missing files count as such), and what the
    segment-caption table says about the video. A shard with a file not hashed yet gets None:
    it is not compared until the hash is known."""
    hashes = dict(zip(snapshot["path"], snapshot["sha256"]))
    segment_captions = read_segment_captions(sources)
    listed = set(snapshot["path"])
    per_shard: dict[str, list[str]] = {}
    pending: set[str] = set()
    for row in read_manifests(sources):
        shard = shard_for(row.clip_id, sources.shard_count)
        if any(p in listed and hashes[p] is None for p in (row.clip_id, row.image_path) if p):
            pending.add(shard)
        parts = [row.clip_id, caption_sha256(row.caption), row.image_path or "",
                 hashes.get(row.clip_id) or "missing",
                 (hashes.get(row.image_path) or "missing") if row.image_path else "",
                 row.issue_reason or ""]
        if segment_captions:
            parts.append(captions_digest(segment_captions, row.clip_id))
        per_shard.setdefault(shard, []).append("|".join(parts))
    return {shard: None if shard in pending
            else hashlib.sha256("\n".join(sorted(lines)).encode()).hexdigest()[:24]
            for shard, lines in per_shard.items()}


def changed_shards(previous: dict[str, str], current: dict[str, str | None]) -> list[str]:
    """Shards whose fingerprint moved, appeared, or that lost their last clip (shards still
    being hashed are left for a later tick)."""
    return sorted({s for s, fp in current.items() if fp is not None and previous.get(s) != fp}
                  | (set(previous) - set(current)))


class UploadState:
    """The sensor's memory in the store, one file per generation so a tick that fails before
    Dagster saves its cursor leaves the previous generation intact to diff against again.

    Kept per data root, shard count and profile: two datasets' sensors (two instances on one
    store) number their generations apart. A store written before the profile was part of it
    has its latest generation copied over on first use, so no file is hashed again."""

    KEEP = 3

    def __init__(self, store, sources: SourceSettings, profile: str):
        self.store = store
        self.dir = store.path(layout.upload_state_dir(_ident(sources, profile)))
        self.legacy_dir = store.path(layout.upload_state_dir(_ident(sources, None)))

    def _path(self, generation: int, folder: str | None = None) -> str:
        return f"{folder or self.dir}/{generation:08d}.parquet"

    def _generations(self, folder: str) -> list[int]:
        if not self.store.exists(folder):
            return []
        names = [p.rsplit("/", 1)[-1] for p in self.store.fs.ls(folder, detail=False)]
        return [int(n.split(".")[0]) for n in names if n.endswith(".parquet")
                and n.split(".")[0].isdigit()]

    def latest_generation(self) -> int | None:
        generations = self._generations(self.dir)
        if not generations:
            legacy = self._generations(self.legacy_dir)
            if not legacy:
                return None
            latest = max(legacy)  # what the sensor saw before states were per profile
            self.store.write_bytes(self._path(latest), self.store.read_bytes(
                self._path(latest, self.legacy_dir)))
            return latest
        return max(generations)

    def known_hashes(self) -> dict[str, tuple[int, int, str]]:
        """path -> (size, mtime_ns, sha256) from the latest snapshot, hashed files only."""
        files, _ = self.load(self.latest_generation())
        if files is None:
            return {}
        files = files.filter(pl.col("sha256").is_not_null())
        return {p: (size, mtime, sha) for p, size, mtime, sha in files.iter_rows()}

    def load(self, generation: int | None) -> tuple[pl.DataFrame | None, dict[str, str]]:
        if generation is None or not self.store.exists(self._path(generation)):
            return None, {}
        table = self.store.read_table(self._path(generation))
        files = table.filter(pl.col("kind") == "file").select(
            "path", "size", "mtime_ns", "sha256")
        shards = table.filter(pl.col("kind") == "shard")
        return files, dict(zip(shards["path"], shards["sha256"]))

    def save(self, generation: int, snapshot: pl.DataFrame, fingerprints: dict[str, str]) -> None:
        shards = pl.DataFrame({"path": list(fingerprints), "size": None, "mtime_ns": None,
                               "sha256": list(fingerprints.values())}, schema=SNAPSHOT_SCHEMA)
        table = pl.concat([snapshot.with_columns(pl.lit("file").alias("kind")),
                           shards.with_columns(pl.lit("shard").alias("kind"))])
        self.store.write_table(self._path(generation), table)
        old = self._path(generation - self.KEEP)
        if generation >= self.KEEP and self.store.exists(old):
            self.store.fs.rm(old)


def _ident(sources: SourceSettings, profile: str | None) -> str:
    ident = f"{sources.data_root}|{sources.shard_count}"
    if profile is not None:
        ident += f"|{profile}"
    return hashlib.sha256(ident.encode()).hexdigest()[:16]


@dataclass
class UploadTick:
    generation: int
    fingerprints: dict[str, str]
    changed: list[str]  # shards to re-run
    hashed: int
    files: int
    pending: int = 0  # files whose hash waits for a later tick
    pending_shards: list[str] = field(default_factory=list)  # their shards: not compared yet


def current_fingerprints(state: UploadState, sources: SourceSettings) -> dict[str, str]:
    """Fingerprints now, re-using the latest saved hashes; saves nothing (for observations)."""
    files, _ = state.load(state.latest_generation())
    scan = refresh_snapshot(files, LocalLister(Path(sources.data_root), sources.settle_s))
    return shard_fingerprints(sources, scan.snapshot)


def scan_uploads(state: UploadState, generation: int | None, sources: SourceSettings,
                 lister: FileLister | None = None,
                 hash_budget_s: float | None = None) -> UploadTick:
    """Diff the data root against the state of `generation`; save the next generation.

    Shards with files still to hash keep their previous fingerprint in the saved state and
    are reported on the tick that finishes hashing them."""
    previous_files, previous_fps = state.load(generation)
    scan = refresh_snapshot(previous_files,
                            lister or LocalLister(Path(sources.data_root), sources.settle_s),
                            hash_budget_s)
    fingerprints = shard_fingerprints(sources, scan.snapshot)
    saved = {s: fp if fp is not None else previous_fps.get(s) for s, fp in fingerprints.items()}
    next_generation = (generation or 0) + 1
    state.save(next_generation, scan.snapshot, {s: fp for s, fp in saved.items() if fp})
    return UploadTick(next_generation, {s: fp for s, fp in fingerprints.items() if fp},
                      changed_shards(previous_fps, fingerprints), scan.hashed,
                      len(scan.snapshot), scan.pending,
                      sorted(s for s, fp in fingerprints.items() if fp is None))
