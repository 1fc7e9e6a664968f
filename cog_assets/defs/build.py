"""Assembling the Definitions of one set of settings, and the shard job every runner uses.

The code location (`cog_assets.definitions`), the CLI, the demo, the sensor and every
worker process build their job here, from the same settings, with the same executor.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from dagster import (
    AssetsDefinition,
    Definitions,
    JobDefinition,
    build_reconstructable_job,
    map_asset_specs,
)

from cog_assets.core.config import Settings, load_settings, settings_env
from cog_assets.defs.assets import EXPORT_ASSETS, shard_assets, uploads
from cog_assets.defs.assets.store_usage import store_usage
from cog_assets.defs.automation import with_automation
from cog_assets.defs.dagster_internals import ReconstructableJob
from cog_assets.defs.executors import executor_for
from cog_assets.defs.jobs import PREPARE_SHARDS, export_job, prepare_shards_job
from cog_assets.defs.kubernetes import gpu_op_tags
from cog_assets.defs.resources import build_resources
from cog_assets.defs.run_settings import settings_metadata
from cog_assets.defs.sensors import upload_sensor
from cog_assets.defs.versions import code_versions


def with_code_versions(assets: Sequence[AssetsDefinition], settings: Settings
                       ) -> Sequence[AssetsDefinition]:
    """Each shard asset with the code version of what shapes its output under `settings`,
    so Dagster's staleness (UI, sensor, backfill) follows a change of any of them, and with
    those settings as metadata (a run whose config overrides one is refused: run_settings)."""
    versions = code_versions(settings)
    return map_asset_specs(lambda spec: spec.replace_attributes(
        code_version=versions[spec.key.path[-1]],
        metadata={**spec.metadata, **settings_metadata(settings)}), assets)


def with_settings(assets: Sequence[AssetsDefinition], settings: Settings
                  ) -> Sequence[AssetsDefinition]:
    """Assets without a code version (exports, store_usage) with the settings as metadata."""
    return map_asset_specs(lambda spec: spec.replace_attributes(
        metadata={**spec.metadata, **settings_metadata(settings)}), assets)


def build_definitions(settings: Settings) -> Definitions:
    """Everything `dagster dev` serves for these settings (already validated)."""
    assets = with_code_versions(shard_assets(gpu_op_tags(settings.orchestration),
                                             settings.captions.local_model), settings)
    if settings.orchestration.automation:
        assets = with_automation(assets)
    others = with_settings([*EXPORT_ASSETS, store_usage], settings)
    return Definitions(
        assets=[uploads, *assets, *others],
        jobs=[prepare_shards_job, export_job], sensors=[upload_sensor],
        resources=build_resources(settings), executor=executor_for(settings.orchestration),
    )


def job_from_env(name: str, env: Mapping[str, str]) -> JobDefinition:
    """A job of the definitions the `COG_ASSETS_*` variables in `env` describe: the
    reconstructable factory run processes and workers rebuild jobs with."""
    return build_definitions(load_settings(env=env)).resolve_job_def(name)


def reconstructable_job(settings: Settings, name: str = PREPARE_SHARDS) -> ReconstructableJob:
    """`name` of these settings' definitions, rebuildable in another process (a step's
    process, a parallel shard, a Celery worker) from the settings it carries."""
    return build_reconstructable_job(__name__, job_from_env.__name__,
                                     reconstructable_args=(name, settings_env(settings)))
