"""frame_tensors: per accepted clip, F frames sampled by timestamp and resized to its bucket,
with a contact sheet of them for the UI."""

import polars as pl
from dagster import AssetExecutionContext, MetadataValue, Output, asset

from cog_assets.core.choices import Status
from cog_assets.defs.assets.groups import GROUP
from cog_assets.defs.leasing import step_lease
from cog_assets.defs.partitions import shards_partitions
from cog_assets.defs.resources import (
    DeviceResource,
    FramesResource,
    LimitsResource,
    ModelResource,
    SourcesResource,
    StoreResource,
    frame_policy,
    runtime,
)
from cog_assets.defs.run_settings import refuse_output_overrides
from cog_assets.defs.versions import data_version
from cog_assets.media.contact_sheet import contact_sheet, markdown_image
from cog_assets.stages.frames import (
    extract_frames,
    stored_thumbnail,
    take_decoded_ahead,
)
from cog_assets.store import layout
from cog_assets.store.content_store import ContentStore
from cog_assets.store.retention import latent_keys_making_frames_unneeded


@asset(partitions_def=shards_partitions, group_name=GROUP, kinds={"pytorch"})
def frame_tensors(context: AssetExecutionContext, validated_clips: pl.DataFrame,
                  sources: SourcesResource, frames: FramesResource, limits: LimitsResource,
                  model: ModelResource, device: DeviceResource,
                  store: StoreResource) -> Output[pl.DataFrame]:
    """Per accepted clip, F frames sampled by timestamp and cover-resized: uint8 [F, H, W, 3].

    Frames are a cache (frames_retention): a clip whose latents for this run's VAE are in
    the store is not decoded again. `decoded_ahead`: clips whose frames a backfill decoded
    while the previous shard ran (neither computed here nor reused from an earlier run)."""
    refuse_output_overrides(context, sources=sources, frames=frames, limits=limits, model=model,
                            device=device, store=store)
    content = store.open()
    unneeded = latent_keys_making_frames_unneeded(store.frames_retention,
                                                  runtime(model, device).vae_identities())
    ahead = take_decoded_ahead(content, model.profile, context.partition_key)
    with step_lease(context, content) as lease:
        table, stats = extract_frames(
            validated_clips, sources.data_root, content, frame_policy(model, frames),
            decode_timeout_s=limits.decode_timeout_s, hold=lease.hold_all,
            latent_keys=unneeded, progress=f"{context.partition_key} frame_tensors")
    # frames a backfill decoded for this shard while the previous shard ran: not "reused"
    stats.extra["decoded_ahead"] = table.filter(
        (pl.col("status") == Status.reused) & pl.col("frames_key").is_in(list(ahead))).height
    stats.reused -= stats.extra["decoded_ahead"]
    buckets = {b: n for b, n in table.group_by("bucket").len().iter_rows()}
    metadata = {"clips": len(table), "buckets": buckets, **stats.as_metadata(),
                "frames_retention": str(store.frames_retention)}
    metadata.update(_contact_sheet(content, table, validated_clips, model.profile,
                                   context.partition_key))
    return Output(table, data_version=data_version("frame_tensors", table), metadata=metadata)


def _short(value: float) -> str:
    return f"{value:.0f}" if abs(value) >= 100 else f"{value:.2g}"


CAPTION_CHARS = 34  # what a labelled cell holds on one line (the rest is in the table)
SHEET_SCORES = {"motion_score": "motion", "brightness": "bright", "sharpness": "sharp",
                "aesthetic_score": "aesth"}


def _contact_sheet(content: ContentStore, frames: pl.DataFrame, validated: pl.DataFrame,
                   profile: str, shard: str, clips: int = 8) -> dict:
    """The middle sampled frame of up to `clips` clips, labelled with clip id and scores:
    inline (behind the UI's "[Show Markdown]": Dagster has no inline image metadata) and as a
    JPEG in the store, whose path is shown."""
    shown = frames.filter(pl.col("status") != Status.rejected).head(clips).select(
        "clip_id", "frames_key")
    scores = [c for c in SHEET_SCORES if c in validated.columns]
    text = [c for c in ("caption", "caption_source") if c in validated.columns]
    shown = shown.join(validated.filter(pl.col("accepted")).select("clip_id", *scores, *text),
                       on="clip_id", how="left")
    images, labels, captions = [], [], []
    for row in shown.iter_rows(named=True):
        image = stored_thumbnail(content, row["frames_key"])
        if image is None:
            continue
        images.append(image)
        measured = " ".join(f"{SHEET_SCORES[c]} {_short(row[c])}" for c in scores
                            if row[c] is not None)
        label = [row["clip_id"], measured] if measured else [row["clip_id"]]
        if row.get("caption"):  # the caption under its frame, said where it came from
            head = f"[{row.get('caption_source') or 'manifest'}] {row['caption']}"
            label.append(head if len(head) <= CAPTION_CHARS else head[:CAPTION_CHARS - 1] + "…")
            captions.append(f"| {len(images)} | {row['clip_id']} | "
                            f"{row.get('caption_source') or 'manifest'} | "
                            f"{row['caption'].replace('|', '/')} |")
        labels.append(label)
    if not images:
        return {}
    jpeg = contact_sheet(images, labels=labels)
    path = content.path(layout.contact_sheet_path(profile, shard))
    content.write_bytes(path, jpeg)
    metadata = {"contact_sheet": MetadataValue.md(markdown_image(jpeg)),
                "contact_sheet_path": MetadataValue.path(content.local_path(path))}
    if captions:
        metadata["contact_sheet_captions"] = MetadataValue.md(
            "| frame | clip | caption source | caption |\n|---|---|---|---|\n"
            + "\n".join(captions))
    return metadata
