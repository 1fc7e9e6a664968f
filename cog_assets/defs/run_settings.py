"""A run's settings against the code location's: what the launchpad may change per run.

Every asset's code version hashes the settings that shape its output (cog_assets.defs.versions),
computed from the settings the code location was started with. A run whose run config
(the launchpad, `dagster asset materialize --config-json`, `execute_job(run_config=...)`)
gave a resource other values would write its outputs under those versions all the same, and
the backfill, the sensor and the UI would then take them for up to date. So each step refuses,
before it writes anything, a run whose resources differ from the code location's settings in
anything that changes a code version, naming the setting, both values and how to change it;
settings that change how, not what (batch sizes, slicing, the GPU lock folder, reuse checks,
frame retention, gc's grace) may be overridden freely.

Why refuse rather than version each run by its own resources: a dataset is one set of
settings (its catalog serves one version of each shard, its exports one layout). A run with
other buckets or another store in the launchpad would make one shard differ from the others,
or write into a store the deployment does not serve, and the next backfill or sensor tick
would put it back. Settings are changed where the code location starts (its `COG_ASSETS_*`
variables, or `cog-assets ui --flag`), and a reloaded code location marks exactly the assets
they shape as stale.

The settings the code location was started with travel with each asset definition as its
metadata (`cog_assets/settings`, shown on the asset's page), so every process a run's steps
execute in compares against the same ones.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from dagster import AssetExecutionContext, Failure, MetadataValue

from cog_assets.core.config import (
    RESOURCE_GROUPS,
    Settings,
    SettingsError,
    load_settings,
    setting_fields,
    settings_env,
)
from cog_assets.defs.versions import code_versions

SETTINGS_METADATA = "cog_assets/settings"
# Settings of the launchpad's resources that change how a run works, not what it writes
# (test_run_settings checks that none of them moves a code version).
HOW_NOT_WHAT = ("batch_size", "text_batch_size", "vae_slicing", "vae_compile", "gpu_lock_dir",
                "verify_artifacts", "frames_retention", "gc_grace_s", "image_latent_scaling",
                "caption_endpoint", "caption_batch_size", "caption_concurrency",
                "caption_timeout_s", "caption_retries")


def settings_metadata(settings: Settings) -> dict[str, MetadataValue]:
    """The asset definitions' record of the settings the code location was started with."""
    return {SETTINGS_METADATA: MetadataValue.json(settings_env(settings))}


def defined_settings(metadata: Mapping[str, Any]) -> Settings | None:
    """The code location's settings from an asset's definition metadata (None: not there)."""
    value = metadata.get(SETTINGS_METADATA)
    if value is None:
        return None
    return load_settings(env=getattr(value, "value", value))


def _values(group: str, settings: Settings) -> dict[str, Any]:
    return getattr(settings, group).model_dump()


def overridden(defined: Settings, resources: Mapping[str, Any]) -> list[tuple[str, Any, Any]]:
    """(flat name, code location's value, run's value) of every setting a run's resources
    (by resource key: the settings groups) give another value than `defined`."""
    changed = []
    for group, resource in resources.items():
        run = resource.settings().model_dump() if hasattr(resource, "settings") else {}
        mine = _values(group, defined)
        for field in setting_fields():
            if field.group == group and run.get(field.name) != mine.get(field.name):
                changed.append((field.flat, mine.get(field.name), run.get(field.name)))
    return changed


def output_shaping(defined: Settings, changed: list[tuple[str, Any, Any]]
                   ) -> list[tuple[str, Any, Any]]:
    """Those of `changed` that move a code version (or make the settings invalid)."""
    versions = code_versions(defined)
    shaping = []
    for flat, mine, run in changed:
        try:
            moved = code_versions(defined.with_(**{flat: run})) != versions
        except (SettingsError, ValueError):
            moved = True  # not even valid with the others: certainly not to be run
        if moved:
            shaping.append((flat, mine, run))
    return shaping


def refusal(shaping: list[tuple[str, Any, Any]]) -> str:
    """What a UI user reads when a run changes settings that shape outputs."""
    by_flat = {f.flat: f for f in setting_fields()}
    lines, envs, flags = [], [], []
    for flat, mine, run in shaping:
        field = by_flat[flat]
        lines.append(f"{flat} (resource {field.group}) is {_shown(field, run)} in this run's "
                     f"config but {_shown(field, mine)} in the code location's settings")
        envs.append(f"{field.env}={field.text(run)}" if run not in (None, []) else
                    f"{field.env} unset")
        flags.append(f"{field.flag} {field.text(run)}" if run not in (None, []) else "")
    return (
        "this run's config changes settings that shape what the assets write: "
        + "; ".join(lines) + ". Outputs written with them would be recorded under the code "
        "location's code versions, so the backfill, the sensor and the UI would take them for "
        "up to date. Change them where the code location starts: "
        + ", ".join(envs) + (f" (or `cog-assets ui {' '.join(f for f in flags if f)}`)"
                             if any(flags) else "")
        + ", then reload the code location (the assets they shape show as stale). A run may "
        "change only settings that change how, not what: " + ", ".join(HOW_NOT_WHAT) + ".")


def _shown(field, value: Any) -> str:
    return "unset" if value is None or value == [] else repr(field.text(value))


def refuse_output_overrides(context: AssetExecutionContext, **resources: Any) -> None:
    """Raise a Failure (the step fails before writing anything, its message in the UI) when
    this run's `resources` (by key) differ from the code location's settings in anything that
    shapes outputs. Cheap when nothing was overridden: one comparison of values."""
    spec = context.assets_def.specs_by_key[context.asset_key]
    defined = defined_settings(spec.metadata)
    if defined is None:
        return
    changed = overridden(defined, {k: v for k, v in resources.items() if k in RESOURCE_GROUPS})
    if not changed:
        return
    shaping = output_shaping(defined, changed)
    if shaping:
        raise Failure(description=refusal(shaping),
                      metadata={"overridden": MetadataValue.json(
                          {flat: {"run": run, "code_location": mine}
                           for flat, mine, run in shaping})})
