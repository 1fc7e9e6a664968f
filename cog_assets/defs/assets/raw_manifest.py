"""raw_manifest: every (video, caption) row of a shard, read from the data root's manifests."""

import time

import polars as pl
from dagster import AssetExecutionContext, Output, asset

from cog_assets.defs.assets.groups import GROUP, UPLOADS_KEY
from cog_assets.defs.partitions import shards_partitions
from cog_assets.defs.resources import (
    FramesResource,
    ModelResource,
    SourcesResource,
    StoreResource,
    frame_policy,
)
from cog_assets.defs.run_settings import refuse_output_overrides
from cog_assets.defs.versions import data_version
from cog_assets.sources.uploads import UploadState
from cog_assets.stages.manifest import build_manifest


@asset(partitions_def=shards_partitions, group_name=GROUP, kinds={"polars"}, deps=[UPLOADS_KEY])
def raw_manifest(context: AssetExecutionContext, sources: SourcesResource,
                 frames: FramesResource, model: ModelResource,
                 store: StoreResource) -> Output[pl.DataFrame]:
    """Every (video, caption) row of this shard: path, caption, size, mtime and content hash."""
    refuse_output_overrides(context, sources=sources, frames=frames, model=model, store=store)
    started = time.perf_counter()
    frame_policy(model, frames)  # refuse shapes the model cannot train on before any work
    settings = sources.settings()
    known = UploadState(store.open(), settings, model.profile).known_hashes()
    table = build_manifest(settings, context.partition_key, known=known)
    return Output(table, data_version=data_version("raw_manifest", table), metadata={
        "rows": len(table), "seconds": round(time.perf_counter() - started, 3),
        "data_root": settings.data_root,
    })
