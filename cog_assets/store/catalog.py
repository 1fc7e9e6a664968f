"""A dataset's catalog: the live shards, their index versions, clip counts and file digests.

Loaders and exports read only what `datasets/<profile>/catalog.json` lists, so a shard folder
left over from another shard count, or a shard that lost its last clip, is never served. The
catalog is published after each shard, atomically (one file replaced whole):

- each shard's run writes its own entry, `catalog.d/<shard>.json` (index version, clip count,
  every file it serves with its size and blake3, the versions it superseded and when), then
  rebuilds `catalog.json` from all entries: those of the current shard count whose shard still
  has clips in the data root;
- an entry of another shard count, or of a shard without clips, is retired: its entry is
  removed and the time recorded (`retired_at`); its folder stays for readers that opened it
  until gc removes it, gc_grace_s after that time;
- publication never removes a file: a superseded version's files stay for the readers that
  opened it (a trainer mid-epoch) until gc removes them, gc_grace_s after it was superseded;
- publication (files checked, entry written, catalog rebuilt, references re-homed) and gc's
  removal of shard files hold the dataset's lock (`cog_assets.store.dataset_lock`: flock on
  local disk, a conditional-write lock object on S3), each judging afresh under it, so the
  catalog never lists a file that is gone, and shards finishing at once all land.

Everything a live shard serves or references is reachable from here: the index files the
entries name hold each clip's `latent_key`, `embedding_key` and `frames_key`, which is what a
garbage collector keeps.

This module imports no pipeline code: a trainer reads the catalog with `load_catalog`.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cog_assets.core.keys import DIGEST, digest_of
from cog_assets.store import layout
from cog_assets.store.dataset_lock import dataset_lock

if TYPE_CHECKING:
    from cog_assets.store.content_store import ContentStore

CATALOG_FORMAT = "cog-assets-catalog/1"

log = logging.getLogger(__name__)


class DatasetError(ValueError):
    """A finished dataset cannot be served as it is; the message names the file and why."""


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


@dataclass(frozen=True)
class CatalogFile:
    """One file a shard serves, relative to its shard folder, with what it must hold."""

    name: str
    bytes: int
    digest: str  # blake3 of the whole file

    @classmethod
    def of(cls, name: str, data: bytes) -> "CatalogFile":
        return cls(name, len(data), digest_of(data))

    def problem(self, data: bytes | None) -> str | None:
        """What is wrong with `data` as this file (None: it is the file that was published)."""
        if data is None:
            return "missing"
        if len(data) != self.bytes:
            return f"{len(data)} bytes, the catalog records {self.bytes}"
        actual = digest_of(data)
        if actual != self.digest:
            return f"{DIGEST} {actual[:16]}…, the catalog records {self.digest[:16]}…"
        return None


@dataclass(frozen=True)
class VaeScaling:
    """How the VAE that made a shard's latents scales them: a trainer multiplies a latent
    sample by `scaling_factor` (image latents: see the loader's image_latent_factor). A
    ModelProfile has the same two fields."""

    scaling_factor: float
    invert_scale_latents: bool


@dataclass(frozen=True)
class ShardEntry:
    """One shard's publication: which index version is live and the files it serves."""

    shard: str
    shard_count: int
    version: str
    clips: int
    index: CatalogFile
    files: dict[str, CatalogFile]  # index column (latents_file, ...) -> tensor file
    rejects: CatalogFile | None = None
    first_frames: tuple[CatalogFile, ...] = ()
    published_at: str = field(default_factory=_now)
    frames_retention: str | None = None  # what the run did with its frames (None: not said)
    # versions of this shard whose files are still in its folder -> when they stopped being
    # served (ISO time): gc removes them gc_grace_s after that, so readers can finish
    superseded: dict[str, str] = field(default_factory=dict)
    # the VAE's latent scaling the latents were made with (None: a shard published before
    # cog-assets recorded it; the profile's is meant)
    scaling_factor: float | None = None
    invert_scale_latents: bool | None = None

    def served(self) -> list[CatalogFile]:
        """Every file of the shard a reader may open, index first."""
        return [self.index, *self.files.values(), *self.first_frames]

    def vae_scaling(self, default: VaeScaling) -> VaeScaling:
        """The scaling its latents were made with (`default`, the profile's, for a shard
        published before it was recorded)."""
        if self.scaling_factor is None:
            return VaeScaling(default.scaling_factor, default.invert_scale_latents)
        return VaeScaling(self.scaling_factor, bool(self.invert_scale_latents))

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, value: dict[str, Any]) -> "ShardEntry":
        return cls(
            shard=value["shard"], shard_count=int(value["shard_count"]),
            version=value["version"], clips=int(value["clips"]),
            index=CatalogFile(**value["index"]),
            files={k: CatalogFile(**v) for k, v in value["files"].items()},
            rejects=CatalogFile(**value["rejects"]) if value.get("rejects") else None,
            first_frames=tuple(CatalogFile(**v) for v in value.get("first_frames", ())),
            published_at=value.get("published_at", ""),
            frames_retention=value.get("frames_retention"),
            scaling_factor=value.get("scaling_factor"),
            invert_scale_latents=value.get("invert_scale_latents"),
            superseded=dict(value.get("superseded") or {}))


@dataclass(frozen=True)
class Catalog:
    """The live shards of one dataset (one profile)."""

    profile: str
    shard_count: int | None
    shards: dict[str, ShardEntry]
    retired: dict[str, str] = field(default_factory=dict)  # shard -> why it is not served
    updated_at: str = field(default_factory=_now)
    retired_at: dict[str, str] = field(default_factory=dict)  # shard -> when (ISO time)

    @property
    def clips(self) -> int:
        return sum(entry.clips for entry in self.shards.values())

    def to_json(self) -> dict[str, Any]:
        return {"format": CATALOG_FORMAT, "profile": self.profile,
                "shard_count": self.shard_count, "updated_at": self.updated_at,
                "clips": self.clips,
                "shards": {k: v.to_json() for k, v in sorted(self.shards.items())},
                "retired": dict(sorted(self.retired.items())),
                "retired_at": dict(sorted(self.retired_at.items()))}

    @classmethod
    def from_json(cls, value: dict[str, Any], where: str) -> "Catalog":
        if value.get("format") != CATALOG_FORMAT:
            raise DatasetError(f"{where}: not a catalog of this version of cog-assets "
                               f"(format {value.get('format')!r}, expected {CATALOG_FORMAT!r})")
        try:
            return cls(profile=value["profile"], shard_count=value.get("shard_count"),
                       shards={k: ShardEntry.from_json(v) for k, v in value["shards"].items()},
                       retired=dict(value.get("retired") or {}),
                       updated_at=value.get("updated_at", ""),
                       retired_at=dict(value.get("retired_at") or {}))
        except (KeyError, TypeError, ValueError) as exc:
            raise DatasetError(f"{where}: unreadable catalog: {type(exc).__name__}: {exc}"
                               ) from None


def parse_catalog(text: bytes | str, where: str) -> Catalog:
    try:
        value = json.loads(text)
    except ValueError as exc:
        raise DatasetError(f"{where}: unreadable catalog: {exc}") from None
    if not isinstance(value, dict):
        raise DatasetError(f"{where}: unreadable catalog: not a JSON object")
    return Catalog.from_json(value, where)


def load_catalog(dataset_dir: str | Path) -> Catalog:
    """The catalog of a dataset directory on local disk (what a trainer opens)."""
    path = Path(dataset_dir) / layout.CATALOG_FILE
    if not path.is_file():
        hint = (" (it is a shard folder: pass its parent, the dataset directory)"
                if (Path(dataset_dir) / layout.INDEX_FILE).is_file() else "")
        raise DatasetError(f"{path}: no catalog; a finished dataset directory "
                           f"(<store>/datasets/<profile>) has one{hint}")
    return parse_catalog(path.read_bytes(), str(path))


def read_catalog(store: ContentStore, dataset_dir: str) -> Catalog | None:
    """The catalog of a dataset directory in a store, None when nothing was published yet."""
    path = f"{dataset_dir}/{layout.CATALOG_FILE}"
    if not store.exists(path):
        return None
    return parse_catalog(store.read_bytes(path), store.local_path(path))


def served_problems(store: ContentStore, shard_dir: str, entry: ShardEntry) -> list[str]:
    """What is wrong with the files a shard's entry serves, by a stat per file (no reads):
    each must exist with its published size. Empty: every file is there."""
    problems = []
    for published in [*entry.served(), *([entry.rejects] if entry.rejects else [])]:
        path = f"{shard_dir}/{published.name}"
        try:
            size = int(store.fs.size(path))
        except FileNotFoundError:
            problems.append(f"{store.local_path(path)} (listed by the catalog) is missing")
            continue
        if size != published.bytes:
            problems.append(f"{store.local_path(path)} has {size} bytes, the catalog records "
                            f"{published.bytes}")
    return problems


# -- publishing ------------------------------------------------------------------------------

def publish_shard(store: ContentStore, dataset_dir: str, profile: str, entry: ShardEntry,
                  live: Iterable[str], then: Callable[[ShardEntry], None] | None = None
                  ) -> Catalog:
    """Make `entry` the shard's live version and rebuild the catalog, under the dataset's lock.

    Every file it names must be there with its size (gc removes only under the same lock, so
    none can go between this check and the catalog listing it); a file that is not (gc
    removed a version that was not served when it looked) fails the publication, loudly,
    instead of publishing files that are gone. The versions of the shard whose files are
    still in its folder are recorded as superseded now (or when they first were), so gc keeps
    them gc_grace_s for the readers that opened them. `then(entry)` runs under the lock after
    the catalog lists the entry (the store's references are pointed at its files there, so
    the last publication's references are the ones that stand)."""
    shard_dir = f"{dataset_dir}/{entry.shard}"
    with dataset_lock(store, dataset_dir):
        problems = served_problems(store, shard_dir, entry)
        if problems:
            raise DatasetError(f"{store.local_path(shard_dir)}: files of version "
                               f"{entry.version} went before publication ({problems[0]}); "
                               "run the shard again")
        entry = replace(entry, superseded=_superseded(store, dataset_dir, shard_dir, entry))
        store.write_json(f"{dataset_dir}/{layout.catalog_entry(entry.shard)}", entry.to_json())
        catalog = _rebuild(store, dataset_dir, profile, set(live), entry.shard_count)
        if then is not None:
            then(entry)
        return catalog


def _superseded(store: ContentStore, dataset_dir: str, shard_dir: str, entry: ShardEntry
                ) -> dict[str, str]:
    """Versions of the shard still in its folder besides `entry`'s -> when they stopped
    being served: as recorded before, else now."""
    previous = published_entries(store, dataset_dir).get(entry.shard)
    before = dict(previous.superseded) if previous is not None else {}
    now = _now()  # the version served until now, and any other left in the folder
    found = {layout.version_of(path) for path in _listing(store, shard_dir)}
    return {version: before.get(version, now)
            for version in sorted(v for v in found if v and v != entry.version)}


def _listing(store: ContentStore, folder: str) -> list[str]:
    """Every path under `folder` (one level, and first_frames/<version> folders)."""
    try:
        paths = store.fs.ls(folder, detail=False)
    except FileNotFoundError:
        return []
    frames = f"{folder}/{layout.FIRST_FRAMES_DIR}"
    found = [p for p in paths if p.rstrip("/") != frames]
    if any(p.rstrip("/") == frames for p in paths):
        found += [f"{p.rstrip('/')}/" for p in store.fs.ls(frames, detail=False)]
    return found


def reconcile(store: ContentStore, dataset_dir: str, profile: str, live: Iterable[str],
              shard_count: int) -> Catalog:
    """Rebuild the catalog for the data root's current shards (retiring the others); what a
    backfill does at the end, and a run of a shard that has no clips any more."""
    with dataset_lock(store, dataset_dir):
        return _rebuild(store, dataset_dir, profile, set(live), shard_count)


def published_entries(store: ContentStore, dataset_dir: str,
                      damaged: list[str] | None = None) -> dict[str, ShardEntry]:
    """Every shard entry under catalog.d/ (the catalog is rebuilt from these). An unreadable
    one is left out with a warning naming it, and its shard named in `damaged`."""
    folder = f"{dataset_dir}/{layout.CATALOG_ENTRIES_DIR}"
    if not store.exists(folder):
        return {}
    entries = {}
    for path in store.fs.ls(folder, detail=False):
        if path.endswith(".json"):
            try:
                entry = ShardEntry.from_json(json.loads(store.read_bytes(path)))
            except (ValueError, KeyError, TypeError) as exc:
                log.warning("catalog entry %s cannot be read (%s: %s): the catalog's copy of "
                            "it is written back, or the shard's next run writes it",
                            path, type(exc).__name__, exc)
                if damaged is not None:
                    damaged.append(path.rstrip("/").rsplit("/", 1)[-1].removesuffix(".json"))
                continue
            entries[entry.shard] = entry
    return entries


def _rebuild(store: ContentStore, dataset_dir: str, profile: str, live: set[str],
             shard_count: int) -> Catalog:
    """The catalog from the entries (under the lock). Retired shards' folders stay: gc
    removes them gc_grace_s after `retired_at`, having written back what they were home to
    that is still wanted."""
    previous = read_catalog_quietly(store, dataset_dir)
    retired = dict(previous.retired) if previous else {}
    retired_at = dict(previous.retired_at) if previous else {}
    now = _now()
    kept = {}
    damaged: list[str] = []
    entries = published_entries(store, dataset_dir, damaged)
    for shard in damaged:  # a damaged entry does not unpublish its shard: the catalog's copy
        if previous is not None and shard in previous.shards and shard not in entries:
            entries[shard] = previous.shards[shard]  # is written back in its place
            store.write_json(f"{dataset_dir}/{layout.catalog_entry(shard)}",
                             entries[shard].to_json())
    for shard, entry in entries.items():
        if entry.shard_count != shard_count:
            why = (f"from {entry.shard_count} shards; the dataset now has {shard_count}")
        elif shard not in live:
            why = "no clip of the data root falls in it any more"
        else:
            kept[shard] = entry
            continue
        retired[shard] = why
        retired_at[shard] = now
        store.fs.rm(f"{dataset_dir}/{layout.catalog_entry(shard)}")
    for path in store.fs.ls(dataset_dir, detail=False) if store.exists(dataset_dir) else []:
        name = path.rstrip("/").rsplit("/", 1)[-1]
        if name.startswith("shard-") and name not in live and store.fs.isdir(path):
            retired.setdefault(name, "not a shard of the current data root")
            retired_at.setdefault(name, now)
    for shard in kept:
        retired.pop(shard, None)
        retired_at.pop(shard, None)
    catalog = Catalog(profile=profile, shard_count=shard_count, shards=kept, retired=retired,
                      retired_at={s: t for s, t in retired_at.items() if s in retired})
    store.write_json(f"{dataset_dir}/{layout.CATALOG_FILE}", catalog.to_json())
    return catalog


def read_catalog_quietly(store: ContentStore, dataset_dir: str) -> Catalog | None:
    try:
        return read_catalog(store, dataset_dir)
    except DatasetError:
        return None  # rebuilt from the entries anyway
