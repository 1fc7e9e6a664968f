"""Clip files in the store: `cas/clip_file/<k2>/<key>.mp4` and the record beside it.

An MP4 cannot carry its digest the way a safetensors header does, so each clip file has a
record, `<key>.json`, written after it: its blake3 digest and size, how it was cut, its frame
count, size in pixels and frame rate, and whether its first and last frames were kept as PNGs
(`<key>.first.png`, `<key>.last.png`). A reader that finds the record finds the file. Reuse
checks the file's size against the record (everything with `full`); a file that does not match
is quarantined with its record and cut again. The clip files are local files: the exports that
use them hard-link them, and exports are written where the store is mounted.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path

from cog_assets.core.choices import ArtifactKind
from cog_assets.core.keys import file_digest
from cog_assets.store import layout
from cog_assets.store.content_store import ArtifactCheck, ContentStore


@dataclass(frozen=True)
class StoredClip:
    """One clip file and what its record says of it."""

    key: str
    path: Path  # the MP4
    method: str  # CutMethod
    frames: int
    rate: str  # constant frame rate, as a fraction ("30000/1001")
    width: int
    height: int
    bytes: int
    digest: str
    start_s: float
    end_s: float
    pictures: bool = False  # first and last frame kept as PNGs
    skipped_packets: int = 0  # damaged source packets left out when it was cut

    @property
    def fps(self) -> float:
        numerator, _, denominator = self.rate.partition("/")
        return float(numerator) / float(denominator or 1)

    @property
    def duration_s(self) -> float:
        return self.frames / self.fps

    def picture(self, which: str) -> Path:
        """The first or last frame's PNG (`pictures` says whether they were kept)."""
        return self.path.with_name(f"{self.key}.{which}.png")

    def record(self) -> dict:
        out = asdict(self)
        out.pop("path")
        return out


def _local(store: ContentStore, relative: str) -> Path:
    return Path(store.path(relative))


def clip_path(store: ContentStore, key: str) -> Path:
    return _local(store, layout.clip_file_path(key))


def read_clip(store: ContentStore, key: str) -> StoredClip | None:
    """The clip file's record, or None when it has none (not cut, or cut but not recorded)."""
    try:
        record = json.loads(store.read_bytes(store.path(layout.clip_record_path(key))))
        return StoredClip(path=clip_path(store, key), **record)
    except FileNotFoundError:
        return None
    except (ValueError, TypeError):  # an unreadable record: the clip is cut again
        return None


def check_clip(store: ContentStore, key: str, full: bool | None = None
               ) -> tuple[StoredClip | None, ArtifactCheck]:
    """Is the clip file there and whole? By its size (the record's), or by its digest with
    `full` (default: the store's verify_reuse); its PNGs where the record says it has them."""
    path = store.path(layout.clip_file_path(key))
    full = store.verify_reuse if full is None else full
    clip = read_clip(store, key)
    if clip is None:
        missing = not store.exists(store.path(layout.clip_record_path(key)))
        return None, ArtifactCheck(ArtifactKind.clip_file, key, path,
                                   "missing" if missing else "unreadable record",
                                   missing=missing)
    try:
        size = os.path.getsize(clip.path)
    except FileNotFoundError:
        return None, ArtifactCheck(ArtifactKind.clip_file, key, path,
                                   "the record's MP4 is missing")
    problem = None
    if size != clip.bytes:
        problem = f"{size} bytes, the record says {clip.bytes}"
    elif full and file_digest(clip.path) != clip.digest:
        problem = "its bytes do not match the digest recorded when it was cut"
    elif clip.pictures and not all(clip.picture(w).is_file() for w in layout.CLIP_PICTURES):
        problem = "its first or last frame PNG is missing"
    return (None if problem else clip), ArtifactCheck(ArtifactKind.clip_file, key, path, problem)


def quarantine_clip(store: ContentStore, key: str) -> str | None:
    """Move a damaged clip file and its record out of the key's place; returns where the
    file went (None if another process moved it first)."""
    moved = None
    for suffix in (".mp4", *(f".{w}.png" for w in layout.CLIP_PICTURES), ".json"):
        where = store.quarantine(ArtifactKind.clip_file, key, suffix)
        moved = moved or where
    return moved


def put_clip(store: ContentStore, clip: StoredClip, written: Path,
             pictures: dict[str, bytes] | None = None) -> StoredClip:
    """Move the MP4 a cut wrote at `written` (a temporary name beside its final one) into
    place, then its PNGs, then its record: the record last, so that a clip with a record is
    whole."""
    final = clip_path(store, clip.key)
    final.parent.mkdir(parents=True, exist_ok=True)
    os.replace(written, final)
    for which, data in (pictures or {}).items():
        store.write_bytes(store.path(layout.clip_picture_path(clip.key, which)), data)
    store.write_json(store.path(layout.clip_record_path(clip.key)), clip.record())
    return StoredClip(**{**asdict(clip), "path": final})


def add_pictures(store: ContentStore, clip: StoredClip, pictures: dict[str, bytes]
                 ) -> StoredClip:
    """Give a stored clip its first and last frame PNGs (export_keyframes asked for them)."""
    for which, data in pictures.items():
        store.write_bytes(store.path(layout.clip_picture_path(clip.key, which)), data)
    updated = StoredClip(**{**asdict(clip), "pictures": True})
    store.write_json(store.path(layout.clip_record_path(clip.key)), updated.record())
    return updated


def temporary_path(store: ContentStore, key: str, token: str) -> Path:
    """Where a cut writes a clip file before it is moved into place: beside its final name,
    marked as a temporary (gc removes those a killed run leaves)."""
    final = clip_path(store, key)
    final.parent.mkdir(parents=True, exist_ok=True)
    return final.with_name(f"{final.name}.tmp-{token}")


def verify_clip(store: ContentStore, key: str) -> str | None:
    """What `cog-assets verify` finds wrong with a clip file (None if nothing)."""
    clip, check = check_clip(store, key, full=True)
    return check.problem
