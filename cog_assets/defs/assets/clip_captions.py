"""clip_captions: each clip's final caption and where it came from; with a local captioning
model, a GPU step (the `gpu` pool and the device slots)."""

import json
from collections.abc import Iterator
from contextlib import nullcontext

import polars as pl
import torch
from dagster import (
    AssetCheckResult,
    AssetExecutionContext,
    AssetsDefinition,
    MetadataValue,
    Output,
    asset,
)

from cog_assets.captions.tools import caption_tools
from cog_assets.defs.asset_checks import CAPTION_CHECKS, every_kept_clip_has_a_caption
from cog_assets.defs.assets.groups import GPU_POOL, GROUP
from cog_assets.defs.instance_caches import token_counts_dir
from cog_assets.defs.leasing import step_lease
from cog_assets.defs.metadata import reason_counts, table_metadata
from cog_assets.defs.partitions import shards_partitions
from cog_assets.defs.resources import (
    CaptionsResource,
    DeviceResource,
    LimitsResource,
    ModelResource,
    SourcesResource,
    StoreResource,
    runtime,
)
from cog_assets.defs.run_settings import refuse_output_overrides
from cog_assets.defs.versions import data_version
from cog_assets.models.devices import resolve_dtype
from cog_assets.stages.captions import STAGE, caption_clips, captions_by_source
from cog_assets.store import layout
from cog_assets.store.content_store import ContentStore

SAMPLES = 6  # captions shown beside their frames in the UI


def clip_captions_asset(op_tags: dict, on_gpu: bool) -> AssetsDefinition:
    """The asset; in the `gpu` pool with `op_tags` (Kubernetes GPUs) when `on_gpu` (a local
    captioning model writes captions)."""

    gpu = {"pool": GPU_POOL, "op_tags": op_tags} if on_gpu else {}

    @asset(partitions_def=shards_partitions, group_name=GROUP, kinds={"polars"},
           check_specs=CAPTION_CHECKS, **gpu)
    def clip_captions(context: AssetExecutionContext, scene_segments: pl.DataFrame,
                      sources: SourcesResource, captions: CaptionsResource,
                      limits: LimitsResource, model: ModelResource, device: DeviceResource,
                      store: StoreResource) -> Iterator[Output | AssetCheckResult]:
        """Each clip's final caption with its provenance (manifest, inherited, segment_table,
        generated, polished): written by a local VLM or an OpenAI-compatible endpoint where
        caption_mode asks, polished where caption_polish asks, and checked."""
        refuse_output_overrides(context, sources=sources, captions=captions, limits=limits,
                                model=model, device=device, store=store)
        settings = captions.settings()
        content = store.open()
        models = runtime(model, device)
        counting = settings.active and settings.caption_over_limit != "flag"
        with step_lease(context, content) as lease, (
                models.step_device() if settings.local_model else nullcontext(None)) as on:
            tools = caption_tools(
                settings, id_token=sources.id_token, device=on,
                dtype=resolve_dtype(device.dtype, on) if on is not None else torch.float32,
                count_tokens=models.token_counter(token_counts_dir(context.instance))
                if counting else None,
                token_limit=models.profile.text_max_length)
            shard = caption_clips(scene_segments, sources.data_root, content, tools,
                                  decode_timeout_s=limits.decode_timeout_s, hold=lease.hold_all)
        table, needs = shard.table, shard.needs
        if shard.shared:
            sources_text = "1 source video" if len(shard.shared) == 1 else \
                f"{len(shard.shared)} source videos"
            context.log.warning(
                f"{sum(shard.shared.values())} scenes of {sources_text} "
                "inherit their source's one caption (it describes the whole video, not the "
                "shot): " + ", ".join(f"{s} ({n} scenes)" for s, n in shard.shared.items())
                + "; caption_mode segments writes each scene its own, or caption them by hand "
                "from needs_captions.jsonl")
        rejected = table.filter(pl.col("issue_stage") == STAGE).rename(
            {"issue_reason": "reason"})
        metadata = {
            "clips": len(table), "captions_by_source": captions_by_source(table),
            "rejects_by_reason": reason_counts(rejected), **shard.stats.as_metadata(),
            "caption_mode": str(settings.caption_mode), "caption_polish": settings.caption_polish,
        }
        if tools.captioner is not None:
            metadata["captioner"] = tools.captioner.model
        if tools.polisher is not None:
            metadata["polisher"] = tools.polisher.model
        metadata.update(_needs_file(content, needs, model.profile, context.partition_key))
        metadata.update(_samples(table))
        if len(rejected):
            metadata["caption_rejects"] = table_metadata(
                rejected.select("clip_id", "source", "reason", "issue_message"))
        yield Output(table, data_version=data_version("clip_captions", table), metadata=metadata)
        yield every_kept_clip_has_a_caption(table)

    return clip_captions


def _needs_file(store: ContentStore, needs: pl.DataFrame, profile: str, shard: str) -> dict:
    """needs_captions.jsonl of the shard (removed when no clip needs a caption any more)."""
    path = store.path(layout.needs_captions_path(profile, shard))
    if needs.is_empty():
        if store.exists(path):
            store.fs.rm(path)
        return {}
    lines = "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in needs.to_dicts())
    store.write_bytes(path, lines.encode("utf-8"))
    return {"needs_captions_path": MetadataValue.path(store.local_path(path)),
            "needs_captions_table": table_metadata(needs.select("clip_id", "why", "thumbnail"))}


def _samples(table: pl.DataFrame) -> dict:
    """A few captions, written ones first, as a table of text (frame_tensors' contact sheet
    shows each caption under its clip's frame)."""
    kept = table.filter(pl.col("issue_reason").is_null() & (pl.col("caption") != ""))
    written = kept.filter(pl.col("caption_source").is_in(["generated", "polished"]))
    shown = pl.concat([written, kept]).unique("clip_id", keep="first",
                                              maintain_order=True).head(SAMPLES)
    if shown.is_empty():
        return {}
    rows = "\n".join(f"| {r['clip_id']} | {r['caption_source']} | "
                     f"{r['caption'].replace('|', '/')} |" for r in shown.iter_rows(named=True))
    return {"sample_captions": MetadataValue.md("| clip | source | caption |\n|---|---|---|\n"
                                                + rows)}
