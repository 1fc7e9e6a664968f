"""`cog-assets gc`: remove what no live shard references, never what a running run holds.

What is live comes from the datasets' catalogs (`cog_assets.store.live_set`).

Garbage, once older than the grace period (`gc_grace_s`, by the file's time):

- artefacts under `cas/` no live shard references (old versions after a change of buckets,
  resize or model; retired shards' clips; rejected clips' leftovers; frames of published
  shards that drop them), and references of such artefacts; clip files no current export
  links (their exports hold hard links of their own);
- files of a live shard that its catalog entry does not serve (old versions, gc_grace_s after
  they were superseded: the entry records when, so a reader that opened one finishes), folders
  of shards no catalog lists (retired, gc_grace_s after they were), catalog entries of retired
  shards;
- quarantined files (by the time they were quarantined), temporary files of killed runs,
  tables and contact sheets of shards no catalog lists;
- unlinked export versions (a killed export) and, with `exports=True`, every export;
- leases whose holder is gone (no grace: they hold nothing).

Nothing a lease holds (`cog_assets.store.leases`: keys and paths of running steps) is removed. The
plan is made from one listing; before anything is removed the catalogs and leases are read
again and each file is judged again, so a shard published or a run started meanwhile keeps
what it needs. A dataset's shard files are judged that last time, and removed, under the
dataset's lock (the one publication holds: `cog_assets.store.dataset_lock`), after writing
back in full what they are home to that is still wanted (live, or held by a running step).
Live latents and embeddings that still have a full copy in `cas/` beside their shard file, or
whose reference points at a file that is not served, are repaired first: the reference is
pointed at the live shard's file and the copy removed (stored once).
"""

from __future__ import annotations

import os
import shutil
import time
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime

from fsspec.implementations.local import LocalFileSystem

from cog_assets.core.choices import ArtifactKind
from cog_assets.store import adoption, layout, references
from cog_assets.store.catalog import ShardEntry
from cog_assets.store.content_store import ContentStore, StoredFile, mtime_of
from cog_assets.store.footprint import CAS_KINDS, is_temporary
from cog_assets.store.leases import HeldSet, expired, held
from cog_assets.store.dataset_lock import dataset_lock
from cog_assets.store.live_set import (  # noqa: F401 - gc raises GcError
    GcError,
    LiveSet,
    add_dataset,
    live_set,
)
from cog_assets.store.sealed_tensors import DamagedTensors

CATEGORIES = ("frames", "latents", "embeddings", "references", "first_frames", "thumbnails",
              "scene_scans", "captions", "clip_files", "old_versions", "retired_shards", "tables",
              "contact_sheets", "exports", "quarantine", "temporaries", "leases")


@dataclass(frozen=True)
class Garbage:
    path: str  # as ContentStore.path gives it
    bytes: int
    category: str
    files: int = 1  # a folder (an export version) counts its files
    folder: bool = False


@dataclass(frozen=True)
class Repair:
    """A live artefact to make its live shard file's: a copy to drop or a reference to fix."""

    kind: str
    key: str
    shard_dir: str  # store-relative
    entry: ShardEntry
    copy_bytes: int  # of the full copy in cas/ that goes (0: only the reference is fixed)


@dataclass
class GcPlan:
    garbage: list[Garbage] = field(default_factory=list)
    repairs: list[Repair] = field(default_factory=list)
    kept_recent: int = 0  # garbage but younger than the grace period
    kept_held: int = 0  # garbage but held by a running step's lease

    @property
    def bytes(self) -> int:
        return sum(g.bytes for g in self.garbage) + sum(r.copy_bytes for r in self.repairs)

    @property
    def files(self) -> int:
        return sum(g.files for g in self.garbage) + sum(bool(r.copy_bytes) for r in self.repairs)

    def by_category(self) -> dict[str, tuple[int, int]]:
        """category -> (files, bytes), repairs' copies counted under their kind."""
        counts: Counter = Counter()
        sizes: Counter = Counter()
        for g in self.garbage:
            counts[g.category] += g.files
            sizes[g.category] += g.bytes
        for r in self.repairs:
            if r.copy_bytes:
                counts[CAS_KINDS[r.kind]] += 1
                sizes[CAS_KINDS[r.kind]] += r.copy_bytes
        return {c: (counts[c], sizes[c]) for c in CATEGORIES if counts[c]}


@dataclass
class GcResult:
    removed: list[Garbage] = field(default_factory=list)
    repaired: int = 0
    kept_now: int = 0  # planned but live or held when it came to removing them

    @property
    def bytes(self) -> int:
        return sum(g.bytes for g in self.removed)


# -- judging one file ----------------------------------------------------------------------------

def _quarantined_at(name: str, fallback: float) -> float:
    """When a file was quarantined: the stamp in its name (a move keeps the file's time)."""
    for part in name.split("."):
        try:
            return datetime.strptime(part.split("-")[0], layout.QUARANTINE_STAMP).timestamp()
        except ValueError:
            continue
    return fallback


def judge(relative: str, mtime: float, live: LiveSet, holding: HeldSet, cutoff: float
          ) -> str | None:
    """The garbage category of a store-relative file, None if it stays. `cutoff`: files
    written after it are within the grace period."""
    parts = relative.split("/")
    name, area = parts[-1], parts[0]
    recent = mtime > cutoff
    if area in ("state", layout.EXPORTS_DIR) or holding.holds_path(relative):
        if area == "state" and is_temporary(name) and not recent:
            return "temporaries"  # a lease or upload state a killed run was writing
        return None  # leases and exports are judged whole, elsewhere
    if is_temporary(name):  # one being written for a held key is not a killed run's
        return None if recent or _held_key(relative, holding) else "temporaries"
    if area == layout.CAS_DIR:
        category = _judge_artifact(parts, live, holding)
    elif area == layout.QUARANTINE_DIR:
        return None if _quarantined_at(name, mtime) > cutoff else "quarantine"
    elif area == layout.DATASETS_DIR:
        category = _judge_dataset_file(relative, parts, live)
        recent = recent or live.stopped_serving(relative) > cutoff  # readers may have it open
    elif area == layout.TABLES_DIR and len(parts) == 4:  # tables/<profile>/<asset>/<shard>.*
        category = None if (parts[1], name.split(".")[0]) in live.tables else "tables"
    elif area == layout.TABLES_DIR and len(parts) == 3:  # a store's before profiles: any
        category = None if name.split(".")[0] in live.shards else "tables"
    elif area == layout.CONTACT_SHEETS_DIR and len(parts) == 3:
        category = None if (parts[1], name.removesuffix(".jpg")) in live.tables \
            else "contact_sheets"
    elif area == layout.CONTACT_SHEETS_DIR and len(parts) == 2:
        category = None if name.removesuffix(".jpg") in live.shards else "contact_sheets"
    else:
        category = None
    return None if category is None or recent else category


def _judge_artifact(parts: list[str], live: LiveSet, holding: HeldSet) -> str | None:
    if len(parts) != 4:
        return None
    kind, (key, _, suffix) = parts[1], parts[3].partition(".")
    if kind in (ArtifactKind.latents, ArtifactKind.embeddings):
        if live.has(kind, key) or holding.holds_key(kind, key):
            return None  # a copy beside its shard file is a repair, not garbage
        return "references" if "." + suffix == layout.REF_SUFFIX else CAS_KINDS[kind]
    if kind == ArtifactKind.frames:
        keep = key in live.frames_kept
    elif kind == ArtifactKind.first_frame:
        keep = key in live.frames_any
    elif kind == ArtifactKind.thumbnail:  # of decoded frames, or of a clip needing a caption
        keep = key in live.frames_any or live.has(kind, key)
    elif kind in (ArtifactKind.scene_scan, ArtifactKind.caption, ArtifactKind.clip_file):
        keep = live.has(kind, key)
    else:
        return None  # not ours
    if keep or holding.holds_key(ArtifactKind.frames if kind in (
            ArtifactKind.first_frame, ArtifactKind.thumbnail) else kind, key):
        return None
    return CAS_KINDS[kind]


def _judge_dataset_file(relative: str, parts: list[str], live: LiveSet) -> str | None:
    if relative in live.files or len(parts) < 4:
        return None
    folder = "/".join(parts[:3])
    if parts[2] == layout.CATALOG_ENTRIES_DIR:
        return "retired_shards"
    if folder in live.shard_dirs:
        return "old_versions"
    if parts[2].startswith("shard-"):
        return "retired_shards"
    return None


# -- the plan --------------------------------------------------------------------------------

def plan_gc(store: ContentStore, *, grace_s: float, exports: bool = False,
            now: float | None = None, listing: Iterable[StoredFile] | None = None) -> GcPlan:
    """What gc would remove and repair now (nothing is changed); `listing`: the store's walk,
    if one was made already."""
    now = time.time() if now is None else now
    live, holding = live_set(store), held(store, now=now)
    plan = GcPlan()
    cutoff = now - grace_s
    present: set[str] = set()
    for found in store.walk() if listing is None else listing:
        relative = store.relative(found.path)
        present.add(relative)
        category = judge(relative, found.mtime, live, holding, cutoff)
        if category is not None:
            plan.garbage.append(Garbage(found.path, found.size, category))
        elif judge(relative, found.mtime, live, HeldSet(), float("inf")) is not None:
            # garbage but for the grace period or a lease
            if holding.holds_path(relative) or _held_key(relative, holding):
                plan.kept_held += 1
            else:
                plan.kept_recent += 1
    plan.repairs = _repairs(store, live, present)
    plan.garbage += _export_garbage(store, holding, exports, cutoff)
    plan.garbage += [Garbage(path, _size(store, path), "leases")
                     for path in expired(store, now=now)]
    return plan


def _held_key(relative: str, holding: HeldSet) -> bool:
    parts = relative.split("/")
    if parts[0] != layout.CAS_DIR or len(parts) != 4:
        return False
    kind = parts[1]
    if kind in (ArtifactKind.first_frame, ArtifactKind.thumbnail):
        kind = ArtifactKind.frames
    return holding.holds_key(kind, parts[3].partition(".")[0])


def _repairs(store: ContentStore, live: LiveSet, present: set[str]) -> list[Repair]:
    """Live latents and embeddings with a copy in cas/ or a reference to an unserved file."""
    repairs = []
    for (kind, key), (folder, entry) in sorted(live.homes.items()):
        copy = layout.artifact_path(kind, key)
        ref = layout.ref_path(kind, key)
        has_copy, has_ref = copy in present, ref in present
        if has_ref and not has_copy:
            try:
                homes = references.read_ref(store, kind, key) or {}
            except DamagedTensors:
                homes = {}
            if homes and all(home.file in live.files for home in homes.values()):
                continue
        elif not has_copy:
            continue  # missing altogether: cog-assets verify reports it, a run recomputes it
        repairs.append(Repair(kind, key, folder, entry,
                              _size(store, store.path(copy)) if has_copy else 0))
    return repairs


def _export_garbage(store: ContentStore, holding: HeldSet, everything: bool, cutoff: float
                    ) -> list[Garbage]:
    """Export versions no link points at (a killed export) and, with `everything`, all of a
    profile's exports. Exports are local folders swapped by a link (cog_assets.exports)."""
    root = store.path(layout.EXPORTS_DIR)
    if not isinstance(store.fs, LocalFileSystem) or not os.path.isdir(root):
        return []
    garbage = []
    for profile in sorted(os.scandir(root), key=lambda e: e.name):
        if not profile.is_dir(follow_symlinks=False):
            continue
        entries = list(os.scandir(profile.path))
        linked = {os.path.basename(os.readlink(e.path)) for e in entries if e.is_symlink()}
        for entry in sorted(entries, key=lambda e: e.name):
            relative = f"{layout.EXPORTS_DIR}/{profile.name}/{entry.name}"
            if holding.holds_path(relative):
                continue
            if entry.is_symlink():
                if everything:
                    garbage.append(Garbage(entry.path, 0, "exports"))
                continue
            if entry.is_dir(follow_symlinks=False):
                files = list(store.walk(relative))
                newest = max((f.mtime for f in files), default=entry.stat().st_mtime)
                stale = entry.name.startswith(".") and entry.name not in linked
                if everything or (stale and newest <= cutoff):
                    garbage.append(Garbage(entry.path, sum(f.size for f in files), "exports",
                                           files=len(files), folder=True))
            elif is_temporary(entry.name) and entry.stat().st_mtime <= cutoff:
                garbage.append(Garbage(entry.path, entry.stat().st_size, "temporaries"))
    return garbage


def _size(store: ContentStore, path: str) -> int:
    try:
        return int(store.fs.size(path))
    except FileNotFoundError:
        return 0


# -- collecting --------------------------------------------------------------------------------

def collect(store: ContentStore, plan: GcPlan, *, grace_s: float, now: float | None = None
            ) -> GcResult:
    """Carry out `plan`: repairs first, then every planned removal that is still garbage
    when judged again against the catalogs and leases as they are now."""
    now = time.time() if now is None else now
    live, holding = live_set(store), held(store, now=now)
    result = GcResult()
    # a repair still as planned: its key lives in the same shard version (not republished
    # meanwhile, whose files its index names no more) and no running step holds it
    result.repaired = _repair(store, [
        r for r in plan.repairs
        if live.homes.get((r.kind, r.key)) == (r.shard_dir, r.entry)
        and not holding.holds_key(r.kind, r.key)])
    cutoff = now - grace_s
    doomed: list[Garbage] = []
    datasets: dict[str, list[Garbage]] = {}  # profile -> its shard files and entries
    for item in plan.garbage:
        if not _still_garbage(store, item, live, holding, cutoff):
            result.kept_now += item.files
            continue
        parts = store.relative(item.path).split("/")
        if parts[0] == layout.DATASETS_DIR and len(parts) > 2:
            datasets.setdefault(parts[1], []).append(item)
        else:
            doomed.append(item)
    # References go after the shard files: what a retired shard is home to is written back
    # by following them (keys no catalog lists yet). Judged again then, as the datasets were.
    _remove(store, [g for g in doomed if g.category != "references"], result)
    for profile, items in sorted(datasets.items()):
        _collect_dataset(store, profile, items, live, cutoff, now, result)
    references_now = [g for g in doomed if g.category == "references"]
    if references_now:
        live, holding = live_set(store), held(store, now=time.time())
        _remove(store, [g for g in references_now
                        if _still_garbage(store, g, live, holding, cutoff)], result)
    _prune_empty_folders(store, [g.path for g in result.removed])
    return result


def _collect_dataset(store: ContentStore, profile: str, items: list[Garbage], live: LiveSet,
                     cutoff: float, now: float, result: GcResult) -> None:
    """Remove a dataset's planned files under its lock, each judged against the catalog as it
    is once the lock is held (no publication can then be listing them), after writing back in
    full what they are home to that is still wanted."""
    dataset_dir = store.path(layout.dataset_dir(profile))
    with dataset_lock(store, dataset_dir):
        fresh = LiveSet()
        try:
            add_dataset(store, profile, fresh)
        except GcError:  # cannot tell what is live now: keep all of it
            result.kept_now += sum(g.files for g in items)
            return
        holding = held(store, now=now)
        doomed = []
        for item in items:
            if _still_garbage(store, item, fresh, holding, cutoff):
                doomed.append(item)
            else:
                result.kept_now += item.files
        # A retired shard's clips may belong to new shards no run has reached yet (a long
        # re-shard): all it is home to goes back to cas, where a later gc collects what no
        # shard takes. An old version of a live shard gives back only what is still wanted
        # (the new version holds the rest in its own files).
        for category, wanted in (
                ("retired_shards", None),
                ("old_versions", lambda kind, key: (holding.holds_key(kind, key)
                                                    or live.has(kind, key)
                                                    or fresh.has(kind, key)))):
            files = [g.path for g in doomed if g.category == category]
            adoption.evict_from(store, files,
                                [p for p in files if layout.is_versioned_index(p)], wanted)
        _remove(store, doomed, result)


def _remove(store: ContentStore, items: list[Garbage], result: GcResult) -> None:
    for item in items:
        try:
            if item.folder:
                shutil.rmtree(item.path)
            else:
                store.fs.rm(item.path)
        except FileNotFoundError:
            continue
        result.removed.append(item)


def _still_garbage(store: ContentStore, item: Garbage, live: LiveSet, holding: HeldSet,
                   cutoff: float) -> bool:
    relative = store.relative(item.path)
    if item.category in ("leases", "exports") or (item.category == "temporaries"
                                                  and relative.startswith("exports/")):
        return not holding.holds_path(relative)
    try:
        info = store.fs.info(item.path)
    except FileNotFoundError:
        return False
    return judge(relative, mtime_of(info), live, holding, cutoff) is not None


def _repair(store: ContentStore, repairs: Iterable[Repair]) -> int:
    """Point each artefact's reference at its live shard file (read whole and checked against
    the catalog first) and drop its copy."""
    by_shard: dict[str, list[Repair]] = {}
    for repair in repairs:
        by_shard.setdefault(repair.shard_dir, []).append(repair)
    done = 0
    for folder, wanted in by_shard.items():
        entry = wanted[0].entry
        digests = {}
        for column, published in entry.files.items():
            path = store.path(f"{folder}/{published.name}")
            try:
                data = store.read_bytes(path)
            except FileNotFoundError:
                data = None
            if published.problem(data) is None:
                digests[column] = references.tensor_digests(data)
        try:
            index = store.read_table(store.path(f"{folder}/{entry.index.name}"))
        except FileNotFoundError:  # replaced since: the next gc repairs what is left
            continue
        homes = adoption.artifact_homes(store, store.path(folder), index,
                               {c: f.name for c, f in entry.files.items()}, digests)
        for repair in wanted:
            tensors = homes.get((repair.kind, repair.key))
            if tensors and (repair.kind != ArtifactKind.latents or "moments" in tensors):
                adoption.adopt(store, repair.kind, repair.key, tensors)
                done += 1
    return done


def _prune_empty_folders(store: ContentStore, removed: list[str]) -> None:
    """Remove folders emptied by gc (local disk; object stores have no empty folders)."""
    if not isinstance(store.fs, LocalFileSystem):
        return
    tops = (layout.CAS_DIR, layout.DATASETS_DIR, layout.QUARANTINE_DIR, layout.TABLES_DIR,
            layout.CONTACT_SHEETS_DIR, layout.EXPORTS_DIR)
    keep = {store.root, *(store.path(top) for top in tops)}
    folders = sorted({os.path.dirname(p) for p in removed}, key=len, reverse=True)
    while folders:
        folder = folders.pop(0)
        if folder in keep or not folder.startswith(store.root + "/"):
            continue
        try:
            os.rmdir(folder)
        except OSError:
            continue  # not empty
        parent = os.path.dirname(folder)
        if parent not in folders:
            folders.append(parent)
            folders.sort(key=len, reverse=True)
