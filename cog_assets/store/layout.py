"""Where everything lives in a store: the one module that knows the store's layout.

Paths here are relative to the store's root (`ContentStore.path(...)` makes them absolute,
a loader joins them to the dataset directory). The stages, the loader and the exports all
import from here; this module imports nothing of the pipeline, so a trainer that imports
`cog_assets.loader` pulls in neither PyAV nor diffusers nor Dagster.

    cas/<kind>/<key[:2]>/<key>.safetensors     content-addressed artefacts (frames, latents, ...)
    cas/<kind>/<key[:2]>/<key>.ref.json        an artefact whose home is a published shard's file
    cas/clip_file/<key[:2]>/<key>.mp4 (.json)  a clip cut as a video file, and its record
    quarantine/<kind>/<key>.<stamp>.corrupt    artefacts found damaged, moved out of the way
    tables/<profile>/<asset>/<shard>.parquet   each asset's per-shard table, per dataset
    tables/<profile>/needs_captions/<shard>.jsonl  clips a person should caption
                                               (segment_captions format)
    datasets/<profile>/catalog.json            the live shards: what loaders and exports read
    datasets/<profile>/catalog.d/<shard>.json  each shard's last publication (the catalog's source)
    datasets/<profile>/<shard>/                finished shards (versioned index and tensor files)
    exports/<profile>/<trainer>                trainer caches (a link to the current version)
    contact_sheets/<profile>/<shard>.jpg       the latest frame_tensors contact sheet of a shard
    state/uploads/<id>/<generation>.parquet    what the upload sensor last saw (id: data root,
                                               shard count and profile)
    state/leases/<run>.<step>.json             what a running step holds (gc leaves it alone)
    state/decoded-ahead/<profile>/<shard>.json frames a backfill decoded before the shard's run

Everything a dataset writes outside `cas/` is under its profile's name, so two profiles (two
datasets) share one store without reading each other's tables. Stores written before that kept
tables at `tables/<asset>/<shard>.parquet` and contact sheets at `contact_sheets/<shard>.jpg`
(`legacy_table_path`: read where it is the table the instance recorded, see the IO manager).
"""

from __future__ import annotations

import time
import uuid

from cog_assets.core.choices import ArtifactKind

CAS_DIR = "cas"
QUARANTINE_DIR = "quarantine"
TABLES_DIR = "tables"
DATASETS_DIR = "datasets"
EXPORTS_DIR = "exports"
CONTACT_SHEETS_DIR = "contact_sheets"
REF_SUFFIX = ".ref.json"  # in place of `.safetensors`: the artefact lives in a shard's file


def artifact_path(kind: ArtifactKind | str, key: str, suffix: str = ".safetensors") -> str:
    return f"{CAS_DIR}/{kind}/{key[:2]}/{key}{suffix}"


def ref_path(kind: ArtifactKind | str, key: str) -> str:
    """Where the store keeps the reference of an artefact whose home is a shard's file."""
    return artifact_path(kind, key, REF_SUFFIX)


QUARANTINE_STAMP = "%Y%m%dT%H%M%S"  # the time in a quarantined file's name: when it was moved


def quarantine_path(kind: ArtifactKind | str, key: str) -> str:
    """Where a damaged artefact is moved, so its key is free to be computed again and the
    bytes stay for a look (the `.corrupt` suffix: no reader takes it for an artefact)."""
    stamp = f"{time.strftime(QUARANTINE_STAMP)}-{uuid.uuid4().hex[:8]}"
    return f"{QUARANTINE_DIR}/{kind}/{key}.{stamp}.corrupt"


def first_frame_png(frames_key: str) -> str:
    """Where the I2V first frame of these frames is kept as a PNG, to be shown and exported."""
    return artifact_path(ArtifactKind.first_frame, frames_key, ".png")


def thumbnail_png(frames_key: str) -> str:
    """Where the middle frame of these frames is kept small, for the contact sheet: it stays
    when the frames themselves are dropped."""
    return artifact_path(ArtifactKind.thumbnail, frames_key, ".png")


def clip_file_path(key: str) -> str:
    """A clip cut out of its source as an H.264 MP4 (what the video-reading exports link)."""
    return artifact_path(ArtifactKind.clip_file, key, ".mp4")


def clip_record_path(key: str) -> str:
    """The clip file's record (its digest, size, method, frames, size in pixels, rate): written
    after the MP4, so a reader that finds it finds the file."""
    return artifact_path(ArtifactKind.clip_file, key, ".json")


CLIP_PICTURES = ("first", "last")


def clip_picture_path(key: str, which: str) -> str:
    """The first or last frame of a clip file as a PNG (export_keyframes)."""
    return artifact_path(ArtifactKind.clip_file, key, f".{which}.png")


def table_path(profile: str, asset: str, shard: str) -> str:
    return f"{TABLES_DIR}/{profile}/{asset}/{shard}.parquet"


def legacy_table_path(asset: str, shard: str) -> str:
    """Where a store written before tables were kept per profile has the table."""
    return f"{TABLES_DIR}/{asset}/{shard}.parquet"


def needs_captions_path(profile: str, shard: str) -> str:
    """The clips of a shard that need a person's caption, as a segment_captions table."""
    return f"{TABLES_DIR}/{profile}/needs_captions/{shard}.jsonl"


def dataset_dir(profile: str) -> str:
    return f"{DATASETS_DIR}/{profile}"


def shard_dir(profile: str, shard: str) -> str:
    return f"{dataset_dir(profile)}/{shard}"


# -- a dataset's catalog: the live shards (relative to the dataset directory) ---------------

CATALOG_FILE = "catalog.json"
CATALOG_ENTRIES_DIR = "catalog.d"
CATALOG_LOCK = ".catalog.lock"


def catalog_path(profile: str) -> str:
    return f"{dataset_dir(profile)}/{CATALOG_FILE}"


def catalog_entry(shard: str) -> str:
    return f"{CATALOG_ENTRIES_DIR}/{shard}.json"


def export_dir(profile: str, trainer: str) -> str:
    return f"{EXPORTS_DIR}/{profile}/{trainer}"


def contact_sheet_path(profile: str, shard: str) -> str:
    """The latest frame_tensors contact sheet of a shard (a JPEG the UI's metadata names)."""
    return f"{CONTACT_SHEETS_DIR}/{profile}/{shard}.jpg"


def upload_state_dir(ident: str) -> str:
    return f"state/uploads/{ident}"


LEASES_DIR = "state/leases"


def lease_path(holder: str) -> str:
    return f"{LEASES_DIR}/{holder}.json"


def decoded_ahead_path(profile: str, shard: str) -> str:
    """The frames keys decoded for `shard` while the previous shard ran (frame_tensors reads
    and removes it, to say which of the frames it found were decoded ahead)."""
    return f"state/decoded-ahead/{profile}/{shard}.json"


# -- a finished shard ----------------------------------------------------------------------

INDEX_FILE = "index.parquet"  # the shard's latest index, for people and tools (a copy)
REJECTS_FILE = "rejects.parquet"
FIRST_FRAMES_DIR = "first_frames"

# index column -> the shard's tensor file it names (with the version before the suffix)
TENSOR_FILES = {"latents_file": "latents.safetensors",
                "embeds_file": "prompt_embeds.safetensors",
                "image_latents_file": "image_latents.safetensors"}


def index_file(version: str) -> str:
    """The versioned index the catalog names: one row per clip, naming the tensor files."""
    return f"index.{version}.parquet"


def rejects_file(version: str) -> str:
    """The versioned rejects table the catalog names (`rejects.parquet` is a copy)."""
    return f"rejects.{version}.parquet"


VERSIONED_STEMS = ("index", "rejects", *(name.split(".")[0] for name in TENSOR_FILES.values()))


def version_of(path: str) -> str | None:
    """The version a shard file belongs to (`latents.<v>.safetensors`, `first_frames/<v>/..`),
    None for the unversioned copies and anything else."""
    parts = path.rstrip("/").split("/")
    if FIRST_FRAMES_DIR in parts[:-1]:
        return parts[parts.index(FIRST_FRAMES_DIR) + 1]
    pieces = parts[-1].split(".")
    if len(pieces) == 3 and pieces[0] in VERSIONED_STEMS:
        return pieces[1]
    return None


def is_versioned_index(path: str) -> bool:
    """Whether a path names a shard's versioned index (index.<v>.parquet)."""
    name = path.rstrip("/").rsplit("/", 1)[-1]
    return name.startswith("index.") and name.endswith(".parquet") and name != INDEX_FILE


def tensor_files(version: str) -> dict[str, str]:
    """Versioned names of a shard's tensor files, by index column."""
    return {column: name.replace(".safetensors", f".{version}.safetensors")
            for column, name in TENSOR_FILES.items()}


def first_frame_png_in_shard(version: str, position: int) -> str:
    return f"{FIRST_FRAMES_DIR}/{version}/{position:06d}.png"
