"""training_dataset: a shard a trainer reads without the VAE or T5 loaded.

Per shard, every served file named by a version that hashes the shard's content:
`index.<v>.parquet` (one row per clip), `latents.<v>.safetensors` (moments by clip id),
`prompt_embeds.<v>.safetensors` (embeddings by caption sha256), `rejects.<v>.parquet` (every
row that did not make it, with its reason); for I2V also `image_latents.<v>.safetensors`
(first-frame moments by clip id) and `first_frames/<v>/<n>.png`. Beside them `index.parquet`
and `rejects.parquet`, copies of the latest for people and tools. The version hashes every
row of the index and of the rejects, so one version's files always hold the same bytes, and
two runs of a shard with different content never write the same file.

The files are written first, then the shard's catalog entry (their sizes and digests) is
published under the dataset's lock: a reader that follows the catalog sees the old version
whole or the new one whole, also when a run fails or is killed. Nothing is removed at
publication: the previous version's files stay, for the readers that opened it (a trainer
mid-epoch), until `cog-assets gc` removes them gc_grace_s after they were superseded.

Each latent and embedding is stored once: after publication the shard's files are their home
and the content-addressed store keeps a reference in place of its copy
(`cog_assets.store.references`), pointed there under the same lock. Before gc removes an old
version's files, what they are home to that is still wanted is written back to the store in
full, so nothing computed is lost.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

import polars as pl

from cog_assets.core.choices import ArtifactKind, CaptionSource, FramesRetention, Status
from cog_assets.core.clip_row import CLIP_COLUMNS, REJECT_COLUMNS
from cog_assets.core.keys import data_version_of
from cog_assets.stages.validation import VALIDATED_SCHEMA
from cog_assets.store import adoption, catalog, layout, references
from cog_assets.store.catalog import CatalogFile, ShardEntry, VaeScaling
from cog_assets.store.content_store import ContentStore, CorruptArtifact
from cog_assets.store.layout import INDEX_FILE, REJECTS_FILE
from cog_assets.store.sealed_tensors import seal
from cog_assets.store.verify import png_problem


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
    if "original_caption" not in accepted.columns:  # tables written before the caption step
        accepted = accepted.with_columns(pl.col("caption").alias("original_caption"))
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


def caption_counts(index: pl.DataFrame) -> dict:
    """How many trained clips have a caption of each source (manifest, inherited,
    segment_table, generated, polished), and how many inherit one caption with other scenes
    of their source (each trains on a text describing the whole video)."""
    by_source = {str(k): int(n) for k, n in
                 index.group_by("caption_source").len().sort("caption_source").iter_rows()}
    inherited = index.filter(pl.col("caption_source") == CaptionSource.inherited)
    per_source = inherited.group_by("source_video").len()
    shared = int(per_source.filter(pl.col("len") >= 2)["len"].sum())
    return {"captions_by_source": by_source, "captions_inherited_shared": shared}


def shard_version(index: pl.DataFrame, rejects: pl.DataFrame | None = None) -> str:
    """A version for the shard's files that changes whenever what they hold does (every row
    and column of the index, and of the rejects), and only then: one version's files always
    hold the same bytes."""
    rows = [f"index|{'|'.join(map(str, row))}" for row in index.sort("clip_id").iter_rows()]
    if rejects is not None:
        rows += [f"rejects|{'|'.join(map(str, row))}" for row in rejects.iter_rows()]
    columns = "|".join([*index.columns, *([] if rejects is None else rejects.columns)])
    return data_version_of([columns, *rows])[:16]


@dataclass(frozen=True)
class FinishedShard:
    """A shard as published: its index (with file columns), paths and catalog entry."""

    index: pl.DataFrame
    paths: dict[str, str]  # INDEX_FILE, REJECTS_FILE, the versioned index and tensor files
    entry: ShardEntry | None  # None: the shard was retired (no clips in the data root)
    # tensor file column -> tensor name -> the digest of its bytes (what references record)
    digests: dict[str, dict[str, str]] = field(default_factory=dict)


def finish_shard(store: ContentStore, dataset_dir: str, profile: str, shard: str,
                 shard_count: int, live: Iterable[str], index: pl.DataFrame,
                 rejects: pl.DataFrame, *, frames_retention: FramesRetention | None = None,
                 vae_scaling: VaeScaling | None = None) -> FinishedShard:
    """Write the shard's files, publish them in the catalog and make them the home of the
    shard's latents and embeddings. Nothing is removed: the previous version stays for the
    readers that opened it until gc removes it, gc_grace_s after it stopped being served.

    `live` are the shards the data root has clips in now; a shard not among them (its last
    clip deleted) is retired instead: out of the catalog, its folder left for gc.
    `frames_retention` is recorded in the catalog entry (what gc may do with the frames), and
    `vae_scaling` (what the loader and the exports scale the latents by)."""
    live = set(live)
    shard_dir = f"{dataset_dir}/{shard}"
    if shard not in live:
        catalog.reconcile(store, dataset_dir, profile, live, shard_count)
        return FinishedShard(index, {}, None)
    written = write_shard(store, shard_dir, shard, shard_count, index, rejects,
                          frames_retention=frames_retention, vae_scaling=vae_scaling)
    catalog.publish_shard(store, dataset_dir, profile, written.entry, live,
                          then=lambda entry: adopt_artifacts(store, shard_dir, written))
    return written


def write_shard(store: ContentStore, shard_dir: str, shard: str, shard_count: int,
                index: pl.DataFrame, rejects: pl.DataFrame, *,
                frames_retention: FramesRetention | None = None,
                vae_scaling: VaeScaling | None = None) -> FinishedShard:
    """Gather the shard's tensors from the store (each digest-checked) into its files.

    Returns the index as written, the paths of its files, the digest of each tensor in them
    and the catalog entry that serves them; nothing is published yet."""
    version = shard_version(index, rejects)
    names = layout.tensor_files(version)
    latents, image_latents, pngs, png_files = {}, {}, [], []
    for n, row in enumerate(index.iter_rows(named=True)):
        stored = store.get_tensors(ArtifactKind.latents, row["latent_key"])
        latents[row["clip_id"]] = stored["moments"]
        png = None
        if "image_moments" in stored:
            image_latents[row["clip_id"]] = stored["image_moments"]
            png = layout.first_frame_png_in_shard(version, n)
            data = first_frame_png(store, row["frames_key"])
            store.write_bytes(f"{shard_dir}/{png}", data)
            png_files.append(CatalogFile.of(png, data))
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
    index_name, rejects_name = layout.index_file(version), layout.rejects_file(version)
    paths = {INDEX_FILE: f"{shard_dir}/{INDEX_FILE}", REJECTS_FILE: f"{shard_dir}/{REJECTS_FILE}",
             index_name: f"{shard_dir}/{index_name}",
             rejects_name: f"{shard_dir}/{rejects_name}"}
    files, digests = {}, {}
    for column, content in tensors.items():
        if content or column != "image_latents_file":
            paths[column] = f"{shard_dir}/{names[column]}"
            data = seal(content)
            store.write_bytes(paths[column], data)
            files[column] = CatalogFile.of(names[column], data)
            digests[column] = references.tensor_digests(data)
    index_bytes = store.write_table(paths[index_name], index)
    rejects_bytes = store.write_table(paths[rejects_name], rejects)
    store.write_bytes(paths[INDEX_FILE], index_bytes)  # the copies, for people and tools
    store.write_bytes(paths[REJECTS_FILE], rejects_bytes)
    entry = ShardEntry(shard=shard, shard_count=shard_count, version=version, clips=len(index),
                       index=CatalogFile.of(index_name, index_bytes), files=files,
                       rejects=CatalogFile.of(rejects_name, rejects_bytes),
                       first_frames=tuple(png_files),
                       frames_retention=None if frames_retention is None
                       else str(frames_retention),
                       scaling_factor=vae_scaling.scaling_factor if vae_scaling else None,
                       invert_scale_latents=(vae_scaling.invert_scale_latents if vae_scaling
                                             else None))
    return FinishedShard(index, paths, entry, digests)


def adopt_artifacts(store: ContentStore, shard_dir: str, written: FinishedShard) -> int:
    """Make the published shard's files the home of its latents and embeddings: the store
    keeps references and drops its copies. Returns how many artefacts were adopted (none
    where the dataset is not in the store: the store references only its own files)."""
    if not store.holds(shard_dir):
        return 0
    files = {column: f.name for column, f in written.entry.files.items()}
    homes = adoption.artifact_homes(store, shard_dir, written.index, files, written.digests)
    for (kind, key), tensors in homes.items():
        adoption.adopt(store, kind, key, tensors)
    return len(homes)


def first_frame_png(store: ContentStore, frames_key: str) -> bytes:
    """The I2V first-frame PNG the frames step wrote, checked by its own chunk CRCs and zlib
    checksum; a damaged one is quarantined (the next run decodes its clip again)."""
    path = store.path(layout.first_frame_png(frames_key))
    data = store.read_bytes(path)
    problem = png_problem(data)
    if problem is not None:
        moved = store.quarantine(ArtifactKind.first_frame, frames_key, ".png")
        raise CorruptArtifact(ArtifactKind.first_frame, frames_key, path, problem, moved)
    return data
