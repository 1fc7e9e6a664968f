"""scene_segments: long source videos cut at scene changes into scored clips (split_scenes,
quality thresholds); with those off, every manifest row passes through as one clip."""

import polars as pl
from dagster import AssetExecutionContext, MetadataValue, Output, asset

from cog_assets.core.clip_row import SCORE_COLUMNS
from cog_assets.defs.assets.groups import GROUP
from cog_assets.defs.metadata import (
    reason_counts,
    score_histograms,
    score_medians,
    table_metadata,
)
from cog_assets.defs.partitions import shards_partitions
from cog_assets.defs.resources import (
    LimitsResource,
    SegmentsResource,
    SourcesResource,
    StoreResource,
)
from cog_assets.defs.run_settings import refuse_output_overrides
from cog_assets.defs.versions import data_version
from cog_assets.stages.scene_segments import STAGE as SEGMENTS_STAGE
from cog_assets.stages.scene_segments import split_segments


@asset(partitions_def=shards_partitions, group_name=GROUP, kinds={"polars", "opencv"})
def scene_segments(context: AssetExecutionContext, raw_manifest: pl.DataFrame,
                   sources: SourcesResource, segments: SegmentsResource, limits: LimitsResource,
                   store: StoreResource) -> Output[pl.DataFrame]:
    """Source videos cut at scene changes into clips (source_video, start_s, end_s), each
    scored (motion, brightness, sharpness, aesthetics) and judged by the thresholds."""
    refuse_output_overrides(context, sources=sources, segments=segments, limits=limits,
                            store=store)
    table, stats, per_source = split_segments(raw_manifest, sources.settings(),
                                              segments.settings(), limits.settings(),
                                              store.open())
    dropped = table.filter(pl.col("issue_stage") == SEGMENTS_STAGE)
    metadata = {"clips": len(table), "dropped": len(dropped),
                "dropped_by_reason": reason_counts(dropped.rename({"issue_reason": "reason"})),
                **stats.as_metadata(), **score_medians(table, SCORE_COLUMNS)}
    if len(per_source):
        metadata["segments_per_source"] = table_metadata(per_source)
    histograms = score_histograms(table, SCORE_COLUMNS)
    if histograms:
        metadata["score_distributions"] = MetadataValue.md(histograms)
    return Output(table, data_version=data_version("scene_segments", table), metadata=metadata)
