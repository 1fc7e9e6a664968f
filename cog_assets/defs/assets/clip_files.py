"""clip_files: every accepted clip cut out of its source as an H.264 MP4, for the exports of
the trainers that read video files (videox_fun_export, cogvideo_finetune_export)."""

import polars as pl
from dagster import AssetExecutionContext, MaterializeResult, MetadataValue, asset

from cog_assets.defs.assets.groups import (
    CLIP_FILES_KEY,
    EXPORTS_GROUP,
    TRAINING_DATASET_KEY,
)
from cog_assets.defs.assets.trainer_exports import dataset_clip_files, export_lease
from cog_assets.defs.metadata import table_metadata
from cog_assets.defs.resources import (
    ClipsResource,
    LimitsResource,
    ModelResource,
    SourcesResource,
    StoreResource,
)
from cog_assets.defs.run_settings import refuse_output_overrides


@asset(key=CLIP_FILES_KEY, deps=[TRAINING_DATASET_KEY], group_name=EXPORTS_GROUP,
       kinds={"h264"})
def clip_files(context: AssetExecutionContext, model: ModelResource, sources: SourcesResource,
               limits: LimitsResource, clips: ClipsResource, store: StoreResource
               ) -> MaterializeResult:
    """Each clip of the finished dataset cut out of its source: its segment only, upright,
    square pixels, constant frame rate, H.264 MP4, no audio. Content-addressed: an edited
    source is cut again for its own clips; an edited caption cuts nothing."""
    refuse_output_overrides(context, model=model, sources=sources, limits=limits, clips=clips,
                            store=store)
    with export_lease(context, store, model) as lease:
        files = dataset_clip_files(store, model, sources, limits, clips, lease.hold_all)
    stats = files.stats
    cut = stats.extra["footage_copied_s"] + stats.extra["footage_re_encoded_s"]
    rows = [{"clip_id": clip_id, "key": f.key, "method": f.method, "frames": f.frames,
             "fps": f"{f.fps:g}", "size": f"{f.width}x{f.height}",
             "duration_s": round(f.duration_s, 3),
             "segment_s": round(f.end_s - f.start_s, 3), "bytes": f.bytes}
            for clip_id, f in sorted(files.files.items())]
    metadata = {"clips": len(files.files) + len(files.failed), **stats.as_metadata(),
                "clip_files_bytes": sum({f.key: f.bytes for f in files.files.values()}.values()),
                "seconds_per_minute_cut": round(stats.seconds / cut * 60, 3) if cut else 0.0,
                "damaged_packets_skipped": sum({f.key: f.skipped_packets
                                                for f in files.files.values()}.values()),
                "clip_files": table_metadata(pl.DataFrame(rows)) if rows else "none",
                "crf": clips.clip_crf}
    if files.failed:
        metadata["failed"] = table_metadata(pl.DataFrame(
            [{"clip_id": c, "reason": r, "message": m} for c, (r, m) in files.failed.items()]))
        context.log.warning(f"{len(files.failed)} clips could not be cut; the video exports "
                            "refuse them. Each is tried again by the next run (a source that "
                            "changed since its shard was made needs the shard materialized "
                            "again); see `failed` for the reasons")
    return MaterializeResult(metadata={k: (MetadataValue.text(v) if isinstance(v, str) else v)
                                       for k, v in metadata.items()})
