"""training_dataset: a shard a trainer reads without the VAE or T5 loaded.

Per shard: `index.parquet` (one row per clip), `latents.safetensors` (moments by clip id),
`prompt_embeds.safetensors` (embeddings by caption sha256) and `rejects.parquet` (every row
that did not make it, with its reason); for I2V also `image_latents.safetensors` (first-frame
moments by clip id) and `first_frames/<n>.png`. Tensor files are written before the index, each
atomically, so an index never names a tensor its files lack.
"""

from __future__ import annotations

import polars as pl
from safetensors.torch import save as save_safetensors

from cog_assets import layout
from cog_assets.choices import CaptionSource, Status
from cog_assets.keys import data_version_of
from cog_assets.layout import CLIP_COLUMNS, INDEX_FILE, REJECTS_FILE, ArtifactKind
from cog_assets.stages.common import REJECT_COLUMNS
from cog_assets.stages.validation import VALIDATED_SCHEMA
from cog_assets.store import ContentStore


def collect_rejects(validated: pl.DataFrame, frames: pl.DataFrame) -> pl.DataFrame:
    """Every row that will not be trained on, from whichever stage refused it."""
    early = validated.filter(~pl.col("accepted")).select(REJECT_COLUMNS)
    late = frames.filter(pl.col("status") == Status.rejected).select(
        "clip_id", "source", "reason", "message", pl.lit("frames").alias("stage"))
    return pl.concat([early, late]).select(REJECT_COLUMNS)


def build_index(validated: pl.DataFrame, frames: pl.DataFrame, latents: pl.DataFrame,
                embeddings: pl.DataFrame) -> pl.DataFrame:
    """Join the stage tables into one row per trainable clip.

    Every clip says where it comes from: `source_video` with `start_s`/`end_s` (a whole file:
    0 to its duration) and `caption_source`, plus its quality scores (null: not measured)."""
    accepted = validated.filter(pl.col("accepted"))
    for column in CLIP_COLUMNS:  # tables written before scene splitting existed
        if column not in accepted.columns:
            accepted = accepted.with_columns(pl.lit(None, dtype=VALIDATED_SCHEMA[column])
                                             .alias(column))
    clips = accepted.with_columns(
        pl.col("source_video").fill_null(pl.col("clip_id")),
        pl.col("start_s").fill_null(0.0),
        pl.col("end_s").fill_null(pl.col("duration_s")),
        pl.col("caption_source").fill_null(CaptionSource.manifest),
    ).select("clip_id", "caption", "caption_sha256", "content_hash", "fps", "duration_s",
             *CLIP_COLUMNS)
    return (
        clips.join(frames.filter(pl.col("status") != Status.rejected)
                   .select("clip_id", "frames_key", "bucket", "num_frames", "height", "width"),
                   on="clip_id")
        .join(latents.select("clip_id", "latent_key"), on="clip_id")
        .join(embeddings.select("caption_sha256", "embedding_key"), on="caption_sha256")
        .sort("clip_id")
    )


def write_shard(store: ContentStore, shard_dir: str, index: pl.DataFrame,
                rejects: pl.DataFrame) -> tuple[pl.DataFrame, dict[str, str]]:
    """Gather the shard's tensors from the store into its finished files.

    The tensor files (and first-frame PNGs) get names versioned by their content and the
    index, written last, names them: until the new index replaces the old one atomically, a
    reader sees the previous shard whole, also when this write fails or is killed half-way.
    Files no index names any more are removed afterwards.
    Returns the index as written and the paths of its files (by file name for the index and
    rejects, by index column for the tensor files).
    """
    version = data_version_of([*index["latent_key"], *index["embedding_key"]])[:16]
    names = layout.tensor_files(version)
    latents, image_latents, pngs = {}, {}, []
    for n, row in enumerate(index.iter_rows(named=True)):
        stored = store.get_tensors(ArtifactKind.latents, row["latent_key"])
        latents[row["clip_id"]] = stored["moments"]
        png = None
        if "image_moments" in stored:
            image_latents[row["clip_id"]] = stored["image_moments"]
            png = layout.first_frame_png_in_shard(version, n)
            store.write_bytes(f"{shard_dir}/{png}", store.read_bytes(
                store.path(layout.first_frame_png(row["frames_key"]))))
        pngs.append(png)
    embeds = {}
    for row in index.unique("caption_sha256").iter_rows(named=True):
        embeds[row["caption_sha256"]] = store.get_tensors(
            ArtifactKind.embeddings, row["embedding_key"])["prompt_embedding"]
    index = index.with_columns(
        pl.Series("has_image_latent", [p is not None for p in pngs], dtype=pl.Boolean),
        pl.Series("first_frame_png", pngs, dtype=pl.String),
        pl.lit(names["latents_file"]).alias("latents_file"),
        pl.lit(names["embeds_file"]).alias("embeds_file"),
        pl.lit(names["image_latents_file"] if image_latents else None, dtype=pl.String
               ).alias("image_latents_file"))
    tensors = {"latents_file": latents, "embeds_file": embeds, "image_latents_file": image_latents}
    paths = {INDEX_FILE: f"{shard_dir}/{INDEX_FILE}", REJECTS_FILE: f"{shard_dir}/{REJECTS_FILE}"}
    for column, content in tensors.items():
        if content or column != "image_latents_file":
            paths[column] = f"{shard_dir}/{names[column]}"
            store.write_bytes(paths[column], save_safetensors(content))
    store.write_table(paths[INDEX_FILE], index)
    store.write_table(paths[REJECTS_FILE], rejects)
    _remove_unreferenced(store, shard_dir, set(names.values()), version)
    return index, paths


def _remove_unreferenced(store: ContentStore, shard_dir: str, current: set[str],
                         version: str) -> None:
    for path in store.fs.ls(shard_dir, detail=False):
        name = path.rstrip("/").rsplit("/", 1)[-1]
        if name.endswith(".safetensors") and name not in current:
            store.fs.rm(path)
    frames_dir = f"{shard_dir}/{layout.FIRST_FRAMES_DIR}"
    if store.exists(frames_dir):
        for path in store.fs.ls(frames_dir, detail=False):
            if path.rstrip("/").rsplit("/", 1)[-1] != version:
                store.fs.rm(path, recursive=True)
