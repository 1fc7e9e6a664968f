"""validated_clips: the probe of every clip and its verdict, accepted or rejected with a reason."""

import time

import polars as pl
from dagster import AssetExecutionContext, Output, asset

from cog_assets.defs.assets.groups import GROUP
from cog_assets.defs.instance_caches import token_counts_dir
from cog_assets.defs.metadata import reason_counts, table_metadata
from cog_assets.defs.partitions import shards_partitions
from cog_assets.defs.resources import (
    FramesResource,
    LimitsResource,
    ModelResource,
    SourcesResource,
    frame_policy,
    runtime,
)
from cog_assets.defs.run_settings import refuse_output_overrides
from cog_assets.defs.versions import data_version
from cog_assets.stages.validation import rejects_of, validate_clips


@asset(partitions_def=shards_partitions, group_name=GROUP, kinds={"polars"})
def validated_clips(context: AssetExecutionContext, clip_captions: pl.DataFrame,
                    sources: SourcesResource, frames: FramesResource, limits: LimitsResource,
                    model: ModelResource) -> Output[pl.DataFrame]:
    """The probe of every clip (codec, size after rotation, fps, duration) and its verdict;
    its final caption's T5 tokens counted."""
    refuse_output_overrides(context, sources=sources, frames=frames, limits=limits, model=model)
    started = time.perf_counter()
    table = validate_clips(clip_captions, sources.data_root, frame_policy(model, frames),
                           limits.settings(),
                           runtime(model).token_counter(token_counts_dir(context.instance)))
    rejects = rejects_of(table)
    return Output(table, data_version=data_version("validated_clips", table), metadata={
        "rows": len(table), "accepted": len(table) - len(rejects), "rejected": len(rejects),
        "rejects_by_reason": reason_counts(rejects), "rejects": table_metadata(rejects),
        "captions_truncated": int(table["caption_truncated"].fill_null(False).sum()),
        "seconds": round(time.perf_counter() - started, 3),
    })
