"""Assembling the Definitions for one set of settings."""

from __future__ import annotations

from dagster import Definitions

from cog_assets.defs.assets import ALL_ASSETS, SHARD_ASSETS, uploads
from cog_assets.defs.automation import with_automation
from cog_assets.defs.checks import ALL_CHECKS
from cog_assets.defs.executors import executor_from_env
from cog_assets.defs.exports import EXPORT_ASSETS, export_job
from cog_assets.defs.jobs import prepare_shards_job
from cog_assets.defs.resources import (DatasetResource, DeviceResource, ModelResource,
                                       ShardTableIOManager, StoreResource)
from cog_assets.defs.sensors import upload_sensor
from cog_assets.settings import Settings


def build_resources(settings: Settings) -> dict:
    return {
        "dataset": DatasetResource(
            data_root=settings.data_root, shard_count=settings.shard_count,
            buckets=list(settings.buckets) or None, token_budget=settings.token_budget,
            sample_start=settings.sample_start, resize=settings.resize,
            short_clips=settings.short_clips),
        "store": StoreResource(url=settings.store_url),
        "models": ModelResource(profile=settings.profile, weights=settings.weights,
                                revision=settings.revision),
        "device": DeviceResource(device=settings.device, dtype=settings.dtype,
                                 batch_size=settings.batch_size),
        "io_manager": ShardTableIOManager(store_url=settings.store_url),
    }


def build_definitions(settings: Settings) -> Definitions:
    """Raises ProfileError, before anything runs, when the settings break the model's rules."""
    resources = build_resources(settings)
    resources["models"].frame_policy(resources["dataset"])
    shard_assets = ALL_ASSETS
    if settings.automation:
        shard_assets = [uploads, *with_automation(SHARD_ASSETS)]
    return Definitions(
        assets=[*shard_assets, *EXPORT_ASSETS], asset_checks=ALL_CHECKS,
        jobs=[prepare_shards_job, export_job],
        sensors=[upload_sensor], resources=resources, executor=executor_from_env(),
    )
