"""Materializing shards in a real Dagster instance and summarising what happened.

Shared by `cog-assets demo` and `cog-assets backfill`: register the shards of a data root as
dynamic partitions, run the `prepare_shards` job once per shard, and collect a per-shard
summary (counts, computed vs reused, rejects by reason, output paths) a CI job can read.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from dagster import AssetObservation, DagsterInstance

from cog_assets.defs.assets import UPLOADS_KEY
from cog_assets.defs.definitions import build_definitions
from cog_assets.defs.sensors import DATA_VERSION_TAG
from cog_assets.defs.partitions import SHARDS_PARTITION
from cog_assets.settings import Settings
from cog_assets.stages.manifest import discover_shards
from cog_assets.store import ContentStore
from cog_assets.uploads import UploadState, scan_uploads

JOB_NAME = "prepare_shards"


def observe_uploads(instance: DagsterInstance, settings: Settings) -> dict[str, str]:
    """Record each shard's upload fingerprint as an observation of `uploads`, as the sensor
    does, so the UI's staleness after a backfill compares against what was actually run."""
    state = UploadState(ContentStore(settings.store_url), settings.data_root,
                        settings.shard_count)
    tick = scan_uploads(state, state.latest_generation(), settings.data_root,
                        settings.shard_count)
    for shard, fingerprint in tick.fingerprints.items():
        instance.report_runless_asset_event(AssetObservation(
            asset_key=UPLOADS_KEY, partition=shard, tags={DATA_VERSION_TAG: fingerprint}))
    return tick.fingerprints


def register_shards(instance: DagsterInstance, settings: Settings) -> list[str]:
    """Add every shard of the data root as a partition; return all of them, sorted."""
    found = discover_shards(settings.data_root, settings.shard_count)
    known = set(instance.get_dynamic_partitions(SHARDS_PARTITION))
    new = [key for key in found if key not in known]
    if new:
        instance.add_dynamic_partitions(SHARDS_PARTITION, new)
    return found


@dataclass
class ShardSummary:
    shard: str
    success: bool
    run_id: str
    clips: int = 0
    accepted: int = 0
    rejected: int = 0
    computed: int = 0
    reused: int = 0
    rejects_by_reason: dict[str, int] = field(default_factory=dict)
    index_path: str | None = None
    rejects_path: str | None = None
    failure: str | None = None
    failed_checks: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def _metadata_value(value: Any) -> Any:
    return getattr(value, "value", value)


def summarise(shard: str, result) -> ShardSummary:
    """Counts from the run's materialization metadata; the failing step's error if it failed."""
    summary = ShardSummary(shard=shard, success=result.success, run_id=result.run_id)
    for event in result.get_asset_materialization_events():
        materialization = event.event_specific_data.materialization
        meta = {k: _metadata_value(v) for k, v in materialization.metadata.items()}
        summary.computed += int(meta.get("computed", 0))
        summary.reused += int(meta.get("reused", 0))
        if materialization.asset_key.path[-1] == "training_dataset":
            summary.clips = int(meta["clips"])
            summary.accepted = int(meta["accepted"])
            summary.rejected = int(meta["rejected"])
            summary.rejects_by_reason = dict(meta.get("rejects_by_reason") or {})
            summary.index_path = str(meta["index_path"])
            summary.rejects_path = str(meta["rejects_path"])
    for evaluation in result.get_asset_check_evaluations():
        if not evaluation.passed:
            summary.failed_checks.append(evaluation.asset_check_key.to_user_string())
    if not result.success:
        failures = [f"{e.step_key}: {e.event_specific_data.error.message.strip()}"
                    for e in result.all_events if e.is_step_failure]
        summary.failure = "\n".join(failures) or "run failed"
    return summary


def materialize_shards(settings: Settings, instance: DagsterInstance,
                       shards: Iterable[str] | None = None, log_level: str = "WARNING"
                       ) -> dict[str, ShardSummary]:
    """Run the whole asset graph for each shard (all of the data root's by default).

    The console shows `log_level` and above; the instance keeps every event for the UI."""
    all_shards = register_shards(instance, settings)
    observe_uploads(instance, settings)
    wanted = list(all_shards if shards is None else shards)
    job = build_definitions(settings).resolve_job_def(JOB_NAME)
    run_config = {"loggers": {"console": {"config": {"log_level": log_level}}}}
    summaries = {}
    for shard in wanted:
        result = job.execute_in_process(run_config=run_config, partition_key=shard,
                                        instance=instance, raise_on_error=False)
        summaries[shard] = summarise(shard, result)
    return summaries


def write_summary_json(path: str, summaries: dict[str, ShardSummary]) -> None:
    payload = {
        "success": all(s.success for s in summaries.values()),
        "shards": {key: s.as_dict() for key, s in summaries.items()},
    }
    with open(path, "w", encoding="utf-8") as handle:
        json.dump(payload, handle, indent=2, sort_keys=True)


def run_exports(settings: Settings, instance: DagsterInstance, log_level: str = "WARNING"):
    """Materialize the export assets from the finished shards; returns the run's result."""
    job = build_definitions(settings).resolve_job_def("export_datasets")
    run_config = {"loggers": {"console": {"config": {"log_level": log_level}}}}
    return job.execute_in_process(run_config=run_config, instance=instance,
                                  raise_on_error=False)
