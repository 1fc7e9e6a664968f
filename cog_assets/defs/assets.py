"""The asset graph, one partition per shard:

uploads ─► raw_manifest ─► scene_segments ─► validated_clips ─► frame_tensors ─► vae_latents
                                                   │                                      │
                                                   └──► t5_embeddings ──────────► training_dataset

scene_segments cuts long source videos into scored clips (split_scenes, quality thresholds);
with those off it passes every manifest row through as one clip.

Each asset calls one plain stage function with the settings of its resources and reports
counts, timings, paths and a data version derived from the keys of what it produced.
"""


import time

import polars as pl
from dagster import (
    AssetExecutionContext,
    AssetKey,
    AssetsDefinition,
    DataVersion,
    DataVersionsByPartition,
    MetadataValue,
    Output,
    asset,
    observable_source_asset,
)

from cog_assets import layout
from cog_assets.choices import Status
from cog_assets.contact_sheet import contact_sheet, markdown_image
from cog_assets.defs.leasing import step_lease
from cog_assets.defs.metadata import (
    reason_counts,
    score_histograms,
    score_medians,
    table_metadata,
)
from cog_assets.defs.partitions import shards_partitions
from cog_assets.defs.resources import (
    DeviceResource,
    FramesResource,
    LimitsResource,
    ModelResource,
    SegmentsResource,
    SourcesResource,
    StoreResource,
    frame_policy,
    runtime,
)
from cog_assets.keys import data_version_of
from cog_assets.layout import ArtifactKind
from cog_assets.leases import release_run
from cog_assets.retention import (
    drop_frames,
    drops_after_latents,
    drops_after_publication,
    latent_keys_making_frames_unneeded,
)
from cog_assets.segments import SCORE_COLUMNS
from cog_assets.stages.dataset import build_index, collect_rejects, finish_shard
from cog_assets.stages.embeddings import encode_captions
from cog_assets.stages.frames import decode_again, extract_frames, stored_thumbnail
from cog_assets.stages.latents import encode_latents
from cog_assets.stages.manifest import build_manifest, discover_shards
from cog_assets.stages.segments import STAGE as SEGMENTS_STAGE
from cog_assets.stages.segments import split_segments
from cog_assets.stages.validation import rejects_of, validate_clips
from cog_assets.store import ContentStore
from cog_assets.uploads import UploadState, current_fingerprints

GROUP = "cogvideox"
GPU_POOL = "gpu"
UPLOADS_KEY = AssetKey("uploads")


@observable_source_asset(key=UPLOADS_KEY, partitions_def=shards_partitions, group_name=GROUP)
def uploads(sources: SourcesResource, store: StoreResource) -> DataVersionsByPartition:
    """The raw videos and captions under the data root, one fingerprint per shard.

    The upload sensor records these as it notices changes; observing here does the same scan
    by hand. A shard whose fingerprint moved makes its raw_manifest (and all below) stale.
    """
    settings = sources.settings()
    return DataVersionsByPartition(current_fingerprints(UploadState(store.open(), settings),
                                                        settings))


@asset(partitions_def=shards_partitions, group_name=GROUP, kinds={"polars"}, deps=[UPLOADS_KEY])
def raw_manifest(context: AssetExecutionContext, sources: SourcesResource,
                 frames: FramesResource, model: ModelResource,
                 store: StoreResource) -> Output[pl.DataFrame]:
    """Every (video, caption) row of this shard: path, caption, size, mtime and content hash."""
    started = time.perf_counter()
    frame_policy(model, frames)  # refuse shapes the model cannot train on before any work
    settings = sources.settings()
    table = build_manifest(settings, context.partition_key,
                           known=UploadState(store.open(), settings).known_hashes())
    keys = [f"{r['clip_id']}|{r['content_hash']}|{r['caption_sha256']}|{r['issue_reason']}"
            for r in table.iter_rows(named=True)]
    return Output(table, data_version=DataVersion(data_version_of(keys)), metadata={
        "rows": len(table), "seconds": round(time.perf_counter() - started, 3),
        "data_root": settings.data_root,
    })


@asset(partitions_def=shards_partitions, group_name=GROUP, kinds={"polars", "opencv"})
def scene_segments(context: AssetExecutionContext, raw_manifest: pl.DataFrame,
                   sources: SourcesResource, segments: SegmentsResource, limits: LimitsResource,
                   store: StoreResource) -> Output[pl.DataFrame]:
    """Source videos cut at scene changes into clips (source_video, start_s, end_s), each
    scored (motion, brightness, sharpness, aesthetics) and judged by the thresholds."""
    table, stats, per_source = split_segments(raw_manifest, sources.settings(),
                                              segments.settings(), limits.settings(),
                                              store.open())
    dropped = table.filter(pl.col("issue_stage") == SEGMENTS_STAGE)
    keys = [f"{r['clip_id']}|{r['content_hash']}|{r['caption_sha256']}|{r['issue_reason']}"
            f"|{r['scan_key']}" for r in table.iter_rows(named=True)]
    metadata = {"clips": len(table), "dropped": len(dropped),
                "dropped_by_reason": reason_counts(dropped.rename({"issue_reason": "reason"})),
                **stats.as_metadata(), **score_medians(table, SCORE_COLUMNS)}
    if len(per_source):
        metadata["segments_per_source"] = table_metadata(per_source)
    histograms = score_histograms(table, SCORE_COLUMNS)
    if histograms:
        metadata["score_distributions"] = MetadataValue.md(histograms)
    return Output(table, data_version=DataVersion(data_version_of(keys)), metadata=metadata)


@asset(partitions_def=shards_partitions, group_name=GROUP, kinds={"polars"})
def validated_clips(context: AssetExecutionContext, scene_segments: pl.DataFrame,
                    sources: SourcesResource, frames: FramesResource, limits: LimitsResource,
                    model: ModelResource) -> Output[pl.DataFrame]:
    """The probe of every clip (codec, size after rotation, fps, duration) and its verdict."""
    started = time.perf_counter()
    table = validate_clips(scene_segments, sources.data_root, frame_policy(model, frames),
                           limits.settings(), runtime(model).token_counter())
    rejects = rejects_of(table)
    keys = [f"{r['clip_id']}|{r['content_hash']}|{r['accepted']}|{r['reason']}"
            for r in table.iter_rows(named=True)]
    return Output(table, data_version=DataVersion(data_version_of(keys)), metadata={
        "rows": len(table), "accepted": len(table) - len(rejects), "rejected": len(rejects),
        "rejects_by_reason": reason_counts(rejects), "rejects": table_metadata(rejects),
        "captions_truncated": int(table["caption_truncated"].fill_null(False).sum()),
        "seconds": round(time.perf_counter() - started, 3),
    })


@asset(partitions_def=shards_partitions, group_name=GROUP, kinds={"pytorch"})
def frame_tensors(context: AssetExecutionContext, validated_clips: pl.DataFrame,
                  sources: SourcesResource, frames: FramesResource, limits: LimitsResource,
                  model: ModelResource, device: DeviceResource,
                  store: StoreResource) -> Output[pl.DataFrame]:
    """Per accepted clip, F frames sampled by timestamp and cover-resized: uint8 [F, H, W, 3].

    Frames are a cache (frames_retention): a clip whose latents for this run's VAE are in
    the store is not decoded again."""
    content = store.open()
    unneeded = latent_keys_making_frames_unneeded(store.frames_retention,
                                                  runtime(model, device).vae_identities())
    with step_lease(context, content) as lease:
        table, stats = extract_frames(
            validated_clips, sources.data_root, content, frame_policy(model, frames),
            decode_timeout_s=limits.decode_timeout_s, hold=lease.hold_all,
            latent_keys=unneeded)
    buckets = {b: n for b, n in table.group_by("bucket").len().iter_rows()}
    metadata = {"clips": len(table), "buckets": buckets, **stats.as_metadata(),
                "frames_retention": str(store.frames_retention)}
    metadata.update(_contact_sheet(content, table, validated_clips, context.partition_key))
    return Output(table, data_version=DataVersion(data_version_of(table["frames_key"])),
                  metadata=metadata)


def _short(value: float) -> str:
    return f"{value:.0f}" if abs(value) >= 100 else f"{value:.2g}"


SHEET_SCORES = {"motion_score": "motion", "brightness": "bright", "sharpness": "sharp",
                "aesthetic_score": "aesth"}


def _contact_sheet(content: ContentStore, frames: pl.DataFrame, validated: pl.DataFrame,
                   shard: str, clips: int = 8) -> dict:
    """The middle sampled frame of up to `clips` clips, labelled with clip id and scores:
    inline (behind the UI's "[Show Markdown]": Dagster has no inline image metadata) and as a
    JPEG in the store, whose path is shown."""
    shown = frames.filter(pl.col("status") != Status.rejected).head(clips).select(
        "clip_id", "frames_key")
    scores = [c for c in SHEET_SCORES if c in validated.columns]
    shown = shown.join(validated.filter(pl.col("accepted")).select("clip_id", *scores),
                       on="clip_id", how="left")
    images, labels = [], []
    for row in shown.iter_rows(named=True):
        image = stored_thumbnail(content, row["frames_key"])
        if image is None:
            continue
        images.append(image)
        measured = " ".join(f"{SHEET_SCORES[c]} {_short(row[c])}" for c in scores
                            if row[c] is not None)
        labels.append([row["clip_id"], measured] if measured else [row["clip_id"]])
    if not images:
        return {}
    jpeg = contact_sheet(images, labels=labels)
    path = content.path(layout.contact_sheet_path(shard))
    content.write_bytes(path, jpeg)
    return {"contact_sheet": MetadataValue.md(markdown_image(jpeg)),
            "contact_sheet_path": MetadataValue.path(content.local_path(path))}


def gpu_assets(op_tags: dict) -> list[AssetsDefinition]:
    """The two steps that run a model, in the `gpu` pool, with `op_tags` (Kubernetes GPUs)."""

    @asset(partitions_def=shards_partitions, group_name=GROUP, kinds={"pytorch", "diffusers"},
           pool=GPU_POOL, op_tags=op_tags)
    def vae_latents(context: AssetExecutionContext, frame_tensors: pl.DataFrame,
                    sources: SourcesResource, frames: FramesResource, limits: LimitsResource,
                    model: ModelResource, device: DeviceResource,
                    store: StoreResource) -> Output[pl.DataFrame]:
        """Per clip, the VAE posterior moments (mean ‖ logvar) [32, F', H/8, W/8]; frames
        dropped since frame_tensors ran (they are a cache) are decoded again first."""
        models = runtime(model, device)
        content, identity = store.open(), models.vae_identity()
        decoded = frame_tensors.filter(pl.col("status") != Status.rejected)["frames_key"]
        with step_lease(context, content) as lease, models.step_device() as on:
            lease.hold_all({ArtifactKind.frames: decoded,
                            ArtifactKind.latents: [identity.key(k) for k in decoded]})
            table, stats = encode_latents(
                frame_tensors, content, identity, lambda: models.vae(on), device.batch_size,
                redecode=lambda rows: decode_again(
                    rows, sources.data_root, content, frame_policy(model, frames),
                    decode_timeout_s=limits.decode_timeout_s, hold=lease.hold_all))
        metadata = {"clips": len(table), "device": str(on),
                    "dtype": str(models.torch_dtype), **stats.as_metadata()}
        if drops_after_latents(store.frames_retention):
            dropped = drop_frames(content, decoded, run_id=context.run.run_id)
            metadata.update(frames_dropped=dropped.frames, frames_dropped_bytes=dropped.bytes)
        return Output(table, data_version=DataVersion(data_version_of(table["latent_key"])),
                      metadata=metadata)

    @asset(partitions_def=shards_partitions, group_name=GROUP,
           kinds={"pytorch", "transformers"}, pool=GPU_POOL, op_tags=op_tags)
    def t5_embeddings(context: AssetExecutionContext, validated_clips: pl.DataFrame,
                      model: ModelResource, device: DeviceResource,
                      store: StoreResource) -> Output[pl.DataFrame]:
        """Per distinct caption, the T5 last hidden state [226, D], deduplicated by hash."""
        models = runtime(model, device)
        content, identity = store.open(), models.text_identity()
        captions = validated_clips.filter(pl.col("accepted"))["caption_sha256"].unique()
        with step_lease(context, content) as lease, models.step_device() as on:
            lease.hold(ArtifactKind.embeddings, [identity.key(c) for c in captions])
            table, stats = encode_captions(validated_clips, content, identity,
                                           lambda: models.text_encoder(on),
                                           device.text_batch_size)
        return Output(table, data_version=DataVersion(data_version_of(table["embedding_key"])),
                      metadata={"captions": len(table), **stats.as_metadata()})

    return [vae_latents, t5_embeddings]


@asset(partitions_def=shards_partitions, group_name=GROUP, kinds={"parquet", "safetensors"})
def training_dataset(context: AssetExecutionContext, validated_clips: pl.DataFrame,
                     frame_tensors: pl.DataFrame, vae_latents: pl.DataFrame,
                     t5_embeddings: pl.DataFrame, sources: SourcesResource,
                     model: ModelResource, store: StoreResource) -> Output[pl.DataFrame]:
    """The finished shard (versioned index and tensor files, rejects.parquet), published in
    the dataset's catalog; a shard with no clips left in the data root is retired instead."""
    started = time.perf_counter()
    content = store.open()
    settings = sources.settings()
    index = build_index(validated_clips, frame_tensors, vae_latents, t5_embeddings)
    rejects = collect_rejects(validated_clips, frame_tensors)
    dataset_dir = content.path(layout.dataset_dir(model.profile))
    shard_dir = f"{dataset_dir}/{context.partition_key}"
    frames_keys = frame_tensors["frames_key"].drop_nulls()
    with step_lease(context, content, model.profile) as lease:
        lease.hold_all({ArtifactKind.frames: frames_keys,  # the I2V first-frame PNGs are read
                        ArtifactKind.latents: index["latent_key"],
                        ArtifactKind.embeddings: index["embedding_key"]})
        finished = finish_shard(content, dataset_dir, model.profile, context.partition_key,
                                settings.shard_count, discover_shards(settings), index,
                                rejects, frames_retention=store.frames_retention)
        dropped = None
        if finished.entry is not None and drops_after_publication(store.frames_retention):
            dropped = drop_frames(content, frames_keys, run_id=context.run.run_id)
    release_run(content, context.run.run_id)  # the shard is published: its run holds nothing
    index, paths = finished.index, finished.paths
    keys = [*index["latent_key"], *index["embedding_key"], *rejects["clip_id"]]
    metadata = {
        "clips": len(validated_clips), "accepted": len(index), "rejected": len(rejects),
        "rejects_by_reason": reason_counts(rejects), "rejects": table_metadata(rejects),
        "dataset_dir": MetadataValue.path(content.local_path(shard_dir)),
        "catalog_path": MetadataValue.path(content.local_path(
            f"{dataset_dir}/{layout.CATALOG_FILE}")),
        "buckets": {b: n for b, n in index.group_by("bucket").len().iter_rows()},
        "seconds": round(time.perf_counter() - started, 3),
    }
    if finished.entry is None:
        metadata["retired"] = "no clip of the data root falls in this shard any more"
    else:
        metadata.update(
            index_version=finished.entry.version,
            index_path=MetadataValue.path(content.local_path(paths[layout.INDEX_FILE])),
            rejects_path=MetadataValue.path(content.local_path(paths[layout.REJECTS_FILE])),
            shard_bytes=sum(f.bytes for f in finished.entry.served()),
            frames_retention=str(store.frames_retention))
    if dropped is not None:
        metadata.update(frames_dropped=dropped.frames, frames_dropped_bytes=dropped.bytes,
                        frames_held_by_other_runs=dropped.held)
    return Output(index, data_version=DataVersion(data_version_of(keys)), metadata=metadata)


def shard_assets(gpu_op_tags: dict) -> list[AssetsDefinition]:
    """The seven materializable assets of a shard, in graph order."""
    vae_latents, t5_embeddings = gpu_assets(gpu_op_tags)
    return [raw_manifest, scene_segments, validated_clips, frame_tensors, vae_latents,
            t5_embeddings, training_dataset]
