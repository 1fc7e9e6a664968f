"""What a store holds, in bytes per kind: what the UI shows and what gc is measured by.

Kinds: the content-addressed artefacts by their folder under `cas/` (frames, latents,
embeddings, first-frame PNGs, thumbnails, scene scans, written captions, clip files; a latent
or embedding whose home is a shard file is a small reference there), the finished datasets,
the trainer exports, the per-shard tables and contact sheets, quarantined files, run state (upload fingerprints, leases) and temporary
files of killed runs.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass, field

from fsspec.implementations.local import LocalFileSystem

from cog_assets.core.choices import ArtifactKind
from cog_assets.store import layout
from cog_assets.store.content_store import ContentStore, StoredFile

CAS_KINDS = {ArtifactKind.frames: "frames", ArtifactKind.latents: "latents",
             ArtifactKind.embeddings: "embeddings", ArtifactKind.first_frame: "first_frames",
             ArtifactKind.thumbnail: "thumbnails", ArtifactKind.scene_scan: "scene_scans",
             ArtifactKind.caption: "captions", ArtifactKind.clip_file: "clip_files"}
AREAS = {layout.DATASETS_DIR: "datasets", layout.EXPORTS_DIR: "exports",
         layout.TABLES_DIR: "tables", layout.CONTACT_SHEETS_DIR: "contact_sheets",
         layout.QUARANTINE_DIR: "quarantine", "state": "state"}
KINDS = (*CAS_KINDS.values(), *AREAS.values(), "temporaries", "other")
TEMP_MARKS = (".tmp-", ".tmp")  # ContentStore's and the exports' temporary names


@dataclass
class Footprint:
    bytes: dict[str, int] = field(default_factory=lambda: dict.fromkeys(KINDS, 0))
    files: dict[str, int] = field(default_factory=lambda: dict.fromkeys(KINDS, 0))

    @property
    def total(self) -> int:
        return sum(self.bytes.values())

    @property
    def outside_datasets(self) -> int:
        """Everything but the finished datasets and the exports (what the pipeline keeps on
        the side of what trainers read)."""
        return self.total - self.bytes["datasets"] - self.bytes["exports"]

    def add(self, kind: str, size: int) -> None:
        self.bytes[kind] += size
        self.files[kind] += 1


def is_temporary(name: str) -> bool:
    """A file name ContentStore or an export gives what it is still writing."""
    return TEMP_MARKS[0] in name or (name.startswith(".") and name.endswith(TEMP_MARKS[1]))


def kind_of(relative: str) -> str:
    """The kind a store-relative file path counts as."""
    parts = relative.split("/")
    if is_temporary(parts[-1]):
        return "temporaries"
    if parts[0] == layout.CAS_DIR and len(parts) > 1:
        return CAS_KINDS.get(parts[1], "other")
    return AREAS.get(parts[0], "other")


def store_footprint(store: ContentStore, listing: Iterable[StoredFile] | None = None
                    ) -> Footprint:
    """Bytes and files per kind, from one walk of the store (links not followed), or from
    `listing`, one made already. An export's hard link to a clip file counts once, as the
    clip file's."""
    footprint = Footprint()
    clip_inodes: set[tuple[int, int]] = set()
    exported: list[StoredFile] = []
    local = isinstance(store.fs, LocalFileSystem)
    for found in store.walk() if listing is None else listing:
        kind = kind_of(store.relative(found.path))
        if local and kind == "clip_files":
            clip_inodes.add(_inode(found.path))
        elif local and kind == "exports" and found.path.endswith((".mp4", ".png")):
            exported.append(found)
            continue
        footprint.add(kind, found.size)
    for found in exported:
        footprint.add("exports", 0 if _inode(found.path) in clip_inodes else found.size)
    return footprint


def _inode(path: str) -> tuple[int, int]:
    try:
        stat = os.lstat(path)
    except FileNotFoundError:
        return (-1, -1)
    return stat.st_dev, stat.st_ino


def megabytes(size: int) -> str:
    return f"{size / 1e6:.1f} MB"


def human_size(size: int) -> str:
    """Bytes as a person reads them: 812 B, 4.1 kB, 37.8 MB, 1.24 GB (powers of 1000)."""
    for unit, scale in (("TB", 1e12), ("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if size >= scale:
            return f"{size / scale:.3g} {unit}" if size < 100 * scale \
                else f"{size / scale:.0f} {unit}"
    return f"{size} B"
