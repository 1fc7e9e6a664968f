"""The asset graph, one partition per shard:

raw_manifest ─► validated_clips ─► frame_tensors ─► vae_latents ─┐
                     │                                          ├─► training_dataset
                     └──────────────────────────► t5_embeddings ─┘

Each asset calls one plain stage function and reports counts, timings, paths and a data
version derived from the keys of what it produced.
"""


import time

import polars as pl
from dagster import (AssetExecutionContext, AssetKey, DataVersion, DataVersionsByPartition,
                     MetadataValue, Output, asset, observable_source_asset)

from cog_assets.contact_sheet import contact_sheet, markdown_image
from cog_assets.defs.kubernetes import gpu_op_tags
from cog_assets.frame_policy import FRAMES_KIND
from cog_assets.defs.metadata import reason_counts, table_metadata
from cog_assets.defs.partitions import shards_partitions
from cog_assets.defs.resources import DatasetResource, DeviceResource, ModelResource, StoreResource
from cog_assets.stages.common import data_version_of
from cog_assets.stages.dataset import build_index, collect_rejects, write_shard
from cog_assets.stages.embeddings import encode_captions
from cog_assets.stages.frames import extract_frames
from cog_assets.stages.latents import encode_latents
from cog_assets.stages.manifest import build_manifest
from cog_assets.stages.validation import rejects_of, validate_clips
from cog_assets.uploads import UploadState, current_fingerprints

GROUP = "cogvideox"
GPU_POOL = "gpu"
UPLOADS_KEY = AssetKey("uploads")


@observable_source_asset(key=UPLOADS_KEY, partitions_def=shards_partitions, group_name=GROUP)
def uploads(dataset: DatasetResource, store: StoreResource) -> DataVersionsByPartition:
    """The raw videos and captions under the data root, one fingerprint per shard.

    The upload sensor records these as it notices changes; observing here does the same scan
    by hand. A shard whose fingerprint moved makes its raw_manifest (and all below) stale.
    """
    state = UploadState(store.open(), dataset.data_root, dataset.shard_count)
    return DataVersionsByPartition(current_fingerprints(
        state, dataset.data_root, dataset.shard_count, dataset.source_config()))


@asset(partitions_def=shards_partitions, group_name=GROUP, kinds={"polars"}, deps=[UPLOADS_KEY])
def raw_manifest(context: AssetExecutionContext, dataset: DatasetResource,
                 models: ModelResource, store: StoreResource) -> Output[pl.DataFrame]:
    """Every (video, caption) row of this shard: path, caption, size, mtime and content hash."""
    started = time.perf_counter()
    models.frame_policy(dataset)  # refuse shapes the model cannot train on before any work
    state = UploadState(store.open(), dataset.data_root, dataset.shard_count)
    frame = build_manifest(dataset.data_root, context.partition_key, dataset.shard_count,
                           dataset.source_config(), known=state.known_hashes())
    keys = [f"{r['clip_id']}|{r['content_hash']}|{r['caption_sha256']}|{r['issue_reason']}"
            for r in frame.iter_rows(named=True)]
    return Output(frame, data_version=DataVersion(data_version_of(keys)), metadata={
        "rows": len(frame), "seconds": round(time.perf_counter() - started, 3),
        "data_root": dataset.data_root,
    })


@asset(partitions_def=shards_partitions, group_name=GROUP, kinds={"polars"})
def validated_clips(context: AssetExecutionContext, raw_manifest: pl.DataFrame,
                    dataset: DatasetResource, models: ModelResource) -> Output[pl.DataFrame]:
    """The probe of every row (codec, size after rotation, fps, duration) and its verdict."""
    started = time.perf_counter()
    frame = validate_clips(raw_manifest, dataset.data_root, models.frame_policy(dataset),
                           models.token_counter(), dataset.limits())
    rejects = rejects_of(frame)
    keys = [f"{r['clip_id']}|{r['content_hash']}|{r['accepted']}|{r['reason']}"
            for r in frame.iter_rows(named=True)]
    return Output(frame, data_version=DataVersion(data_version_of(keys)), metadata={
        "rows": len(frame), "accepted": len(frame) - len(rejects), "rejected": len(rejects),
        "rejects_by_reason": reason_counts(rejects), "rejects": table_metadata(rejects),
        "captions_truncated": int(frame["caption_truncated"].fill_null(False).sum()),
        "seconds": round(time.perf_counter() - started, 3),
    })


@asset(partitions_def=shards_partitions, group_name=GROUP, kinds={"pytorch"})
def frame_tensors(context: AssetExecutionContext, validated_clips: pl.DataFrame,
                  dataset: DatasetResource, models: ModelResource,
                  store: StoreResource) -> Output[pl.DataFrame]:
    """Per accepted clip, F frames sampled by timestamp and cover-resized: uint8 [F, H, W, 3]."""
    frame, stats = extract_frames(validated_clips, dataset.data_root, store.open(),
                                  models.frame_policy(dataset),
                                  decode_timeout_s=dataset.decode_timeout_s)
    buckets = {b: n for b, n in frame.group_by("bucket").len().iter_rows()}
    metadata = {"clips": len(frame), "buckets": buckets, **stats.as_metadata()}
    sheet = _contact_sheet(store, frame)
    if sheet:
        metadata["contact_sheet"] = MetadataValue.md(sheet)
    return Output(frame, data_version=DataVersion(data_version_of(frame["frames_key"])),
                  metadata=metadata)


def _contact_sheet(store: StoreResource, frames: pl.DataFrame, clips: int = 8) -> str | None:
    """The middle sampled frame of up to `clips` clips, as an inline image."""
    content = store.open()
    keys = frames.filter(pl.col("status") != "rejected")["frames_key"].head(clips)
    images = []
    for key in keys:
        tensor = content.get_tensors(FRAMES_KIND, key)["frames"]
        images.append(tensor[len(tensor) // 2].numpy())
    return markdown_image(contact_sheet(images)) if images else None


@asset(partitions_def=shards_partitions, group_name=GROUP, kinds={"pytorch", "diffusers"},
       pool=GPU_POOL, op_tags=gpu_op_tags())
def vae_latents(context: AssetExecutionContext, frame_tensors: pl.DataFrame,
                models: ModelResource, device: DeviceResource,
                store: StoreResource) -> Output[pl.DataFrame]:
    """Per clip, the VAE posterior moments (mean ‖ logvar) [32, F', H/8, W/8]."""
    frame, stats = encode_latents(frame_tensors, store.open(), device.vae_identity(models),
                                  device.vae_loader(models), device.batch_size)
    return Output(frame, data_version=DataVersion(data_version_of(frame["latent_key"])),
                  metadata={"clips": len(frame), "device": str(device.torch_device()),
                            "dtype": str(device.torch_dtype()), **stats.as_metadata()})


@asset(partitions_def=shards_partitions, group_name=GROUP, kinds={"pytorch", "transformers"},
       pool=GPU_POOL, op_tags=gpu_op_tags())
def t5_embeddings(context: AssetExecutionContext, validated_clips: pl.DataFrame,
                  models: ModelResource, device: DeviceResource,
                  store: StoreResource) -> Output[pl.DataFrame]:
    """Per distinct caption, the T5 last hidden state [226, D], deduplicated by caption hash."""
    frame, stats = encode_captions(validated_clips, store.open(), device.text_identity(models),
                                   device.text_loader(models), device.text_batch_size)
    return Output(frame, data_version=DataVersion(data_version_of(frame["embedding_key"])),
                  metadata={"captions": len(frame), **stats.as_metadata()})


@asset(partitions_def=shards_partitions, group_name=GROUP, kinds={"parquet", "safetensors"})
def training_dataset(context: AssetExecutionContext, validated_clips: pl.DataFrame,
                     frame_tensors: pl.DataFrame, vae_latents: pl.DataFrame,
                     t5_embeddings: pl.DataFrame, models: ModelResource,
                     store: StoreResource) -> Output[pl.DataFrame]:
    """The finished shard: index.parquet + latents/prompt_embeds safetensors + rejects.parquet."""
    started = time.perf_counter()
    content = store.open()
    index = build_index(validated_clips, frame_tensors, vae_latents, t5_embeddings)
    rejects = collect_rejects(validated_clips, frame_tensors)
    shard_dir = content.path("datasets", models.profile, context.partition_key)
    index, paths = write_shard(content, shard_dir, index, rejects)
    keys = [*index["latent_key"], *index["embedding_key"], *rejects["clip_id"]]
    return Output(index, data_version=DataVersion(data_version_of(keys)), metadata={
        "clips": len(validated_clips), "accepted": len(index), "rejected": len(rejects),
        "rejects_by_reason": reason_counts(rejects), "rejects": table_metadata(rejects),
        "index_path": MetadataValue.path(content.local_path(paths["index.parquet"])),
        "rejects_path": MetadataValue.path(content.local_path(paths["rejects.parquet"])),
        "dataset_dir": MetadataValue.path(content.local_path(shard_dir)),
        "buckets": {b: n for b, n in index.group_by("bucket").len().iter_rows()},
        "seconds": round(time.perf_counter() - started, 3),
    })


SHARD_ASSETS = [raw_manifest, validated_clips, frame_tensors, vae_latents, t5_embeddings,
                training_dataset]
ALL_ASSETS = [uploads, *SHARD_ASSETS]
