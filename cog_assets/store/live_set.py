"""What is live in a store: everything the catalogs of its datasets keep alive.

Read from each dataset's catalog (every profile in the store): each live shard's served files
and index, and the keys the index references: latents and embeddings, the frames keys (whose
thumbnails and I2V first-frame PNGs stay; the frames themselves only where the shard was
published with `frames_retention=keep`, or by a cog-assets that did not say), the scene scans
its `scene_segments` table names, the embeddings its `t5_embeddings` table names, and the
shard names (their tables). A shard published but not yet in `catalog.json` (its entry under
`catalog.d/`) counts as live. Clip files live while a current export links them (the
`clip_file_key` column of its `clips.parquet`); the exports hold hard links, so removing a clip
file never breaks one, it only means cutting it again for the next.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field

from fsspec.implementations.local import LocalFileSystem

from cog_assets.core.choices import ArtifactKind, FramesRetention
from cog_assets.store import layout
from cog_assets.store.catalog import (
    DatasetError,
    ShardEntry,
    published_entries,
    read_catalog,
)
from cog_assets.store.content_store import ContentStore
from cog_assets.store.references import HOMED_KEYS

# Keys a live shard's last step tables hold besides its index: the scans its segments were
# cut from, the embeddings of every accepted caption (a clip that fails to decode later
# has its caption encoded all the same: its next run would encode it again), the captions
# written for its clips and the thumbnails of the clips that still need one.
TABLE_KEYS = (("scene_segments", "scan_key", ArtifactKind.scene_scan),
              ("t5_embeddings", "embedding_key", ArtifactKind.embeddings),
              ("clip_captions", "caption_key", ArtifactKind.caption),
              ("clip_captions", "polish_key", ArtifactKind.caption),
              ("clip_captions", "thumbnail_key", ArtifactKind.thumbnail))
# The table beside an export's files and its column naming the clip files it links
# (cog_assets.exports.clip_table, which sits above the store).
EXPORT_CLIP_TABLE, EXPORT_CLIP_KEY = "clips.parquet", "clip_file_key"
log = logging.getLogger(__name__)


class GcError(RuntimeError):
    """gc cannot tell what is live (an unreadable catalog or index): it removes nothing."""


class _Republished(Exception):
    """A shard's index went while the catalog was read: a newer version was published."""


@dataclass
class LiveSet:
    """What gc keeps, store-relative paths and keys; `homes`: (kind, key) -> the live shard
    (folder, entry) whose files hold it."""

    keys: dict[str, set[str]] = field(default_factory=dict)  # kind -> referenced keys
    frames_any: set[str] = field(default_factory=set)  # frames keys of live shards
    frames_kept: set[str] = field(default_factory=set)  # ...of shards that keep their frames
    files: set[str] = field(default_factory=set)  # store-relative dataset files to keep
    shard_dirs: set[str] = field(default_factory=set)
    shards: set[str] = field(default_factory=set)  # live shard names (their tables)
    homes: dict[tuple[str, str], tuple[str, ShardEntry]] = field(default_factory=dict)

    def has(self, kind: str, key: str) -> bool:
        return key in self.keys.get(str(kind), ())


def live_set(store: ContentStore) -> LiveSet:
    """Everything the catalogs of every dataset in the store keep alive."""
    live = LiveSet()
    root = store.path(layout.DATASETS_DIR)
    profiles = [p.rstrip("/").rsplit("/", 1)[-1] for p in store.fs.ls(root, detail=False)
                if store.fs.isdir(p)] if store.exists(root) else []
    for profile in sorted(profiles):
        for attempt in range(3):
            try:
                _live_dataset(store, profile, live)
                break
            except _Republished:  # a shard was published meanwhile: read its catalog again
                if attempt == 2:
                    raise GcError(f"cannot tell what is live: the catalog of {profile} kept "
                                  "changing while it was read; run gc again") from None
    for shard in live.shards:
        tables: dict[str, object] = {}
        for asset, column, kind in TABLE_KEYS:
            if asset not in tables:
                try:
                    tables[asset] = store.read_table(store.path(layout.table_path(asset, shard)))
                except FileNotFoundError:
                    tables[asset] = None
            table = tables[asset]
            if table is not None and column in table.columns:
                live.keys.setdefault(kind, set()).update(table[column].drop_nulls().to_list())
    _live_exports(store, live)
    return live


def _live_exports(store: ContentStore, live: LiveSet) -> None:
    """The clip files the current exports link (each export path is a link to its current
    version; exports are local folders)."""
    root = store.path(layout.EXPORTS_DIR)
    if not isinstance(store.fs, LocalFileSystem) or not os.path.isdir(root):
        return
    for profile in sorted(os.scandir(root), key=lambda e: e.name):
        if not profile.is_dir(follow_symlinks=False):
            continue
        for entry in sorted(os.scandir(profile.path), key=lambda e: e.name):
            table = os.path.join(entry.path, EXPORT_CLIP_TABLE)
            if not entry.is_symlink() or not os.path.isfile(table):
                continue
            try:
                keys = store.read_table(table)
            except Exception as exc:  # noqa: BLE001 - its links hold the bytes regardless
                log.warning("cannot read %s (%s): its clip files count as unused", table, exc)
                continue
            if EXPORT_CLIP_KEY in keys.columns:
                live.keys.setdefault(ArtifactKind.clip_file, set()).update(
                    keys[EXPORT_CLIP_KEY].drop_nulls().to_list())


def _live_dataset(store: ContentStore, profile: str, live: LiveSet) -> None:
    relative = layout.dataset_dir(profile)
    dataset_dir = store.path(relative)
    try:
        catalog = read_catalog(store, dataset_dir)
    except DatasetError as exc:
        raise GcError(f"cannot tell what is live: {exc}") from None
    entries = published_entries(store, dataset_dir)
    if catalog is None:
        if entries:
            raise GcError(f"{store.local_path(dataset_dir)} has shard entries but no "
                          f"{layout.CATALOG_FILE}: run a shard of profile {profile} (or a "
                          "backfill) to rebuild it before collecting garbage")
        return
    live.files |= {f"{relative}/{layout.CATALOG_FILE}", f"{relative}/{layout.CATALOG_LOCK}"}
    shards = dict(catalog.shards)
    for shard, entry in entries.items():  # published, not yet in catalog.json (a lost race)
        if entry.shard_count == catalog.shard_count:
            shards.setdefault(shard, entry)
    for shard, entry in sorted(shards.items()):
        folder = f"{relative}/{shard}"
        live.shard_dirs.add(folder)
        live.shards.add(shard)
        live.files.add(f"{relative}/{layout.catalog_entry(shard)}")
        served = [*entry.served(), *([entry.rejects] if entry.rejects else [])]
        live.files |= {f"{folder}/{f.name}" for f in served}
        live.files |= {f"{folder}/{layout.INDEX_FILE}", f"{folder}/{layout.REJECTS_FILE}"}
        try:
            index = store.read_table(store.path(f"{folder}/{entry.index.name}"))
        except FileNotFoundError:
            now = published_entries(store, dataset_dir).get(shard)
            if now is None or now.version != entry.version:  # replaced or retired meanwhile
                raise _Republished() from None
            raise GcError(f"cannot tell what is live: the index {entry.index.name} of "
                          f"{store.local_path(store.path(folder))} is missing; run "
                          "cog-assets verify") from None
        except Exception as exc:  # noqa: BLE001 - any unreadable index stops gc
            raise GcError(f"cannot tell what is live: the index {entry.index.name} of "
                          f"{store.local_path(store.path(folder))} is unreadable "
                          f"({type(exc).__name__}: {exc}); run cog-assets verify") from None
        for column, kind in HOMED_KEYS.items():
            for key in index[column].drop_nulls().unique().to_list():
                live.keys.setdefault(kind, set()).add(key)
                live.homes.setdefault((kind, key), (folder, entry))
        frames = set(index["frames_key"].drop_nulls().to_list())
        live.frames_any |= frames
        if entry.frames_retention in (None, FramesRetention.keep):
            live.frames_kept |= frames
