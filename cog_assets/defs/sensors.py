"""The upload sensor: new, changed and deleted videos and captions become runs of their shards."""

import json

from dagster import (
    AssetObservation,
    RunRequest,
    SensorEvaluationContext,
    SensorResult,
    SkipReason,
    sensor,
)

from cog_assets.defs.assets import UPLOADS_KEY
from cog_assets.defs.dead_runs import release_dead_runs
from cog_assets.defs.jobs import prepare_shards_job
from cog_assets.defs.partitions import SHARDS_PARTITION, shards_partitions
from cog_assets.defs.resources import SourcesResource, StoreResource
from cog_assets.uploads import UploadState, scan_uploads

# The tag an observation carries its data version in (dagster.DATA_VERSION_TAG, not exported).
DATA_VERSION_TAG = "dagster/data_version"
# Hashing stops after this long in a tick (Dagster times a sensor out at 60 s); the rest of a
# big first look is hashed on the next ticks.
HASH_BUDGET_S = 35.0


@sensor(job=prepare_shards_job, minimum_interval_seconds=60)
def upload_sensor(context: SensorEvaluationContext, sources: SourcesResource,
                  store: StoreResource):
    """Stat the data root, hash only what moved, and run just the shards whose clips changed.

    Each tick first gives back the pool slots of runs whose process is gone (killed runs of
    the UI, the sensor or a backfill: `release_dead_runs`, logged), so no run waits on a slot
    no one will free.

    Each changed shard also gets an observation of `uploads` with its new fingerprint as data
    version, so the UI shows exactly those shards' assets as stale. Run keys carry the
    fingerprint: the same work is never launched twice.
    """
    release_dead_runs(context.instance, context.log)  # or new runs wait for their slots
    cursor = json.loads(context.cursor) if context.cursor else {}
    settings = sources.settings()
    tick = scan_uploads(UploadState(store.open(), settings), cursor.get("generation"),
                        settings, hash_budget_s=HASH_BUDGET_S)
    context.update_cursor(json.dumps({"generation": tick.generation}))
    context.log.info(f"{tick.files} files, {tick.hashed} hashed, {tick.pending} left to hash, "
                     f"{len(tick.changed)} shards changed")
    if not tick.changed:
        return SkipReason(f"no change among {tick.files} files ({tick.hashed} re-hashed)")
    known = set(context.instance.get_dynamic_partitions(SHARDS_PARTITION))
    new = [s for s in tick.changed if s not in known and s in tick.fingerprints]
    versions = {s: tick.fingerprints.get(s, "deleted") for s in tick.changed}
    return SensorResult(
        run_requests=[RunRequest(partition_key=s, run_key=f"{s}:{v}")
                      for s, v in versions.items()],
        dynamic_partitions_requests=[shards_partitions.build_add_request(new)] if new else [],
        asset_events=[AssetObservation(asset_key=UPLOADS_KEY, partition=s,
                                       tags={DATA_VERSION_TAG: v}) for s, v in versions.items()],
    )
