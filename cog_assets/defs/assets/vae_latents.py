"""vae_latents: per clip, the VAE posterior moments; a GPU step (the `gpu` pool)."""

from collections.abc import Iterator

import polars as pl
from dagster import AssetCheckResult, AssetExecutionContext, AssetsDefinition, Output, asset

from cog_assets.core.choices import ArtifactKind, Status
from cog_assets.defs.asset_checks import LATENT_CHECKS, latents_match_profile
from cog_assets.defs.assets.groups import GPU_POOL, GROUP
from cog_assets.defs.instance_caches import compile_cache_dir
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
from cog_assets.stages.frames import decode_again
from cog_assets.stages.latents import encode_latents
from cog_assets.store.retention import drop_frames, drops_after_latents


def vae_latents_asset(op_tags: dict) -> AssetsDefinition:
    """The asset, in the `gpu` pool, with `op_tags` (Kubernetes GPUs)."""

    @asset(partitions_def=shards_partitions, group_name=GROUP, kinds={"pytorch", "diffusers"},
           pool=GPU_POOL, op_tags=op_tags, check_specs=LATENT_CHECKS)
    def vae_latents(context: AssetExecutionContext, frame_tensors: pl.DataFrame,
                    sources: SourcesResource, frames: FramesResource, limits: LimitsResource,
                    model: ModelResource, device: DeviceResource,
                    store: StoreResource) -> Iterator[Output | AssetCheckResult]:
        """Per clip, the VAE posterior moments (mean ‖ logvar) [32, F', H/8, W/8]; frames
        dropped since frame_tensors ran (they are a cache) are decoded again first."""
        refuse_output_overrides(context, sources=sources, frames=frames, limits=limits,
                                model=model, device=device, store=store)
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
                    decode_timeout_s=limits.decode_timeout_s, hold=lease.hold_all),
                encoder_for=models.vae_encoder_for(compile_cache_dir(context.instance)),
                progress=f"{context.partition_key} vae_latents")
        metadata = {"clips": len(table), "device": str(on),
                    "dtype": str(models.torch_dtype), **stats.as_metadata()}
        if drops_after_latents(store.frames_retention):
            dropped = drop_frames(content, decoded, run_id=context.run.run_id)
            metadata.update(frames_dropped=dropped.frames, frames_dropped_bytes=dropped.bytes)
        yield Output(table, data_version=data_version("vae_latents", table), metadata=metadata)
        yield latents_match_profile(table, content, models.profile)

    return vae_latents
