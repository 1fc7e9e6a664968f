"""training_dataset: the finished shard, published in the dataset's catalog."""

import time
from collections.abc import Iterator

import polars as pl
from dagster import AssetCheckResult, AssetExecutionContext, MetadataValue, Output, asset

from cog_assets.core.choices import ArtifactKind
from cog_assets.defs.asset_checks import DATASET_CHECKS, dataset_checks
from cog_assets.defs.assets.groups import GROUP
from cog_assets.defs.leasing import step_lease
from cog_assets.defs.metadata import reason_counts, table_metadata
from cog_assets.defs.partitions import shards_partitions
from cog_assets.defs.resources import (
    ModelResource,
    SourcesResource,
    StoreResource,
    runtime,
)
from cog_assets.defs.run_settings import refuse_output_overrides
from cog_assets.defs.versions import dataset_data_version
from cog_assets.stages.dataset import (
    build_index,
    caption_counts,
    collect_rejects,
    finish_shard,
)
from cog_assets.stages.manifest import discover_shards
from cog_assets.store import catalog, layout
from cog_assets.store.catalog import VaeScaling
from cog_assets.store.leases import release_run
from cog_assets.store.retention import drop_frames, drops_after_publication


@asset(partitions_def=shards_partitions, group_name=GROUP, kinds={"parquet", "safetensors"},
       check_specs=DATASET_CHECKS)
def training_dataset(context: AssetExecutionContext, validated_clips: pl.DataFrame,
                     frame_tensors: pl.DataFrame, vae_latents: pl.DataFrame,
                     t5_embeddings: pl.DataFrame, sources: SourcesResource,
                     model: ModelResource, store: StoreResource
                     ) -> Iterator[Output | AssetCheckResult]:
    """The finished shard (versioned index and tensor files, rejects.parquet), published in
    the dataset's catalog; a shard with no clips left in the data root is retired instead.
    `dataset_clips` and `dataset_shards`: the whole dataset the catalog serves after it."""
    refuse_output_overrides(context, sources=sources, model=model, store=store)
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
        vae = runtime(model).profile  # the VAE's own scaling: the weights', checked
        finished = finish_shard(content, dataset_dir, model.profile, context.partition_key,
                                settings.shard_count, discover_shards(settings), index,
                                rejects, frames_retention=store.frames_retention,
                                vae_scaling=VaeScaling(vae.scaling_factor,
                                                       vae.invert_scale_latents))
        dropped = None
        if finished.entry is not None and drops_after_publication(store.frames_retention):
            dropped = drop_frames(content, frames_keys, run_id=context.run.run_id)
    release_run(content, context.run.run_id)  # the shard is published: its run holds nothing
    index, paths = finished.index, finished.paths
    metadata = {
        "clips": len(validated_clips), "accepted": len(index), "rejected": len(rejects),
        "rejects_by_reason": reason_counts(rejects), "rejects": table_metadata(rejects),
        "dataset_dir": MetadataValue.path(content.local_path(shard_dir)),
        "catalog_path": MetadataValue.path(content.local_path(
            f"{dataset_dir}/{layout.CATALOG_FILE}")),
        "buckets": {b: n for b, n in index.group_by("bucket").len().iter_rows()},
        **caption_counts(index),
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
    served = catalog.read_catalog_quietly(content, dataset_dir)  # the whole dataset, now
    if served is not None:
        metadata.update(dataset_clips=served.clips, dataset_shards=len(served.shards))
    yield Output(index, data_version=dataset_data_version(index, rejects), metadata=metadata)
    yield from dataset_checks(index, validated_clips, frame_tensors)
