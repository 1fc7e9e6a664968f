"""Where everything lives in a store: the one module that knows the store's layout.

Paths here are relative to the store's root (`ContentStore.path(...)` makes them absolute,
a loader joins them to the dataset directory). The stages, the loader and the exports all
import from here; this module imports nothing of the pipeline, so a trainer that imports
`cog_assets.loader` pulls in neither PyAV nor diffusers nor Dagster.

    cas/<kind>/<key[:2]>/<key>.safetensors     content-addressed artefacts (frames, latents, ...)
    tables/<asset>/<shard>.parquet             each asset's per-shard table
    datasets/<profile>/<shard>/                finished shards (index.parquet, tensor files)
    exports/<profile>/<trainer>/               trainer caches
    state/uploads/<id>/<generation>.parquet    what the upload sensor last saw
"""

from __future__ import annotations

from collections.abc import Mapping

from cog_assets.choices import Choice


class ArtifactKind(Choice):
    """The kinds of content-addressed artefacts (the folder under cas/)."""

    frames = "frames"  # uint8 [F, H, W, 3] (+ I2V first_frame [H, W, 3])
    first_frame = "first_frame"  # the I2V first frame as a PNG, keyed by its frames key
    latents = "vae_moments"  # VAE posterior moments [2C, F', h, w] (+ I2V image_moments)
    embeddings = "t5_embedding"  # T5 last hidden state [L, D]


def artifact_path(kind: ArtifactKind | str, key: str, suffix: str = ".safetensors") -> str:
    return f"cas/{kind}/{key[:2]}/{key}{suffix}"


def first_frame_png(frames_key: str) -> str:
    """Where the I2V first frame of these frames is kept as a PNG, to be shown and exported."""
    return artifact_path(ArtifactKind.first_frame, frames_key, ".png")


def table_path(asset: str, shard: str) -> str:
    return f"tables/{asset}/{shard}.parquet"


def dataset_dir(profile: str) -> str:
    return f"datasets/{profile}"


def shard_dir(profile: str, shard: str) -> str:
    return f"{dataset_dir(profile)}/{shard}"


def export_dir(profile: str, trainer: str) -> str:
    return f"exports/{profile}/{trainer}"


def contact_sheet_path(shard: str) -> str:
    """The latest frame_tensors contact sheet of a shard (a JPEG the UI's metadata names)."""
    return f"contact_sheets/{shard}.jpg"


def upload_state_dir(ident: str) -> str:
    return f"state/uploads/{ident}"


# -- a finished shard ----------------------------------------------------------------------

INDEX_FILE = "index.parquet"  # one row per clip; written last, it names the tensor files
REJECTS_FILE = "rejects.parquet"
FIRST_FRAMES_DIR = "first_frames"
SHARD_GLOB = "shard-*"

# index column -> the shard's tensor file it names (older shards: these unversioned names)
DEFAULT_FILES = {"latents_file": "latents.safetensors",
                 "embeds_file": "prompt_embeds.safetensors",
                 "image_latents_file": "image_latents.safetensors"}


def tensor_files(version: str) -> dict[str, str]:
    """Versioned names of a shard's tensor files, by index column."""
    return {column: name.replace(".safetensors", f".{version}.safetensors")
            for column, name in DEFAULT_FILES.items()}


def shard_file(row: Mapping, column: str) -> str:
    """The tensor file an index row points at (older shards: the unversioned name)."""
    return row.get(column) or DEFAULT_FILES[column]


def first_frame_png_in_shard(version: str, position: int) -> str:
    return f"{FIRST_FRAMES_DIR}/{version}/{position:06d}.png"
