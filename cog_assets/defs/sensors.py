"""The upload sensor: new, changed and deleted videos and captions become runs of their shards."""

import json

from dagster import (
    RunRequest,
    SensorEvaluationContext,
    SensorResult,
    SkipReason,
    sensor,
)

from cog_assets.defs.dead_runs import release_dead_runs
from cog_assets.defs.freshness import EMPTY_SHARD, graph_identity, shard_freshness
from cog_assets.defs.jobs import prepare_shards_job
from cog_assets.defs.partitions import SHARDS_PARTITION
from cog_assets.defs.resources import ModelResource, SourcesResource, StoreResource
from cog_assets.sources.uploads import UploadState, UploadTick, scan_uploads

# Hashing stops after this long in a tick (Dagster times a sensor out at 60 s); the rest of a
# big first look is hashed on the next ticks.
HASH_BUDGET_S = 35.0
# The run tag that says why the sensor launched a run (the rule's reasons).
WHY_TAG = "cog_assets/why"


def _candidates(tick: UploadTick, known: set[str], look_at_all: bool) -> dict[str, str]:
    """shard -> current fingerprint of the shards to judge this tick: those whose uploads
    changed, or every shard (registered or with clips) when `look_at_all`. Shards with
    files still to hash wait for the tick that hashes them."""
    shards = set(tick.changed) | (known | set(tick.fingerprints) if look_at_all else set())
    return {s: tick.fingerprints.get(s, EMPTY_SHARD) for s in sorted(shards)
            if s not in tick.pending_shards}


SENSOR_DESCRIPTION = (
    "Every minute: looks for new, changed and deleted videos and captions under the data "
    "root (stat first, hashing only what moved) and runs prepare_shards for exactly the "
    "shards that need it, by the same rule as the backfill; a shard whose uploads and "
    "settings match its last materialization is not run.")


@sensor(job=prepare_shards_job, minimum_interval_seconds=60, description=SENSOR_DESCRIPTION)
def upload_sensor(context: SensorEvaluationContext, sources: SourcesResource,
                  model: ModelResource, store: StoreResource):
    """Stat the data root, hash only what moved, and run just the shards that need it.

    A shard needs a run when the rule of cog_assets.defs.freshness says so (the same one the
    backfill skips by and the UI shows as stale): its uploads' fingerprint, or what shapes
    its output, differs from its last materialization. The first tick (no cursor: the sensor
    was just turned on, e.g. after `cog-assets demo` or a backfill) starts from the upload
    state those saved and judges every shard: nothing is launched when nothing changed. So
    does a tick after the definitions' code versions changed. Run keys carry the shard's
    fingerprint, the identity and its last success, so the same work is never launched twice.

    Each tick first gives back the pool slots of runs whose process is gone (killed runs of
    the UI, the sensor or a backfill: `release_dead_runs`, logged), so no run waits on a slot
    no one will free.
    """
    release_dead_runs(context.instance, context.log)  # or new runs wait for their slots
    cursor = json.loads(context.cursor) if context.cursor else {}
    settings = sources.settings()
    state = UploadState(store.open(), settings, model.profile)
    generation = cursor.get("generation")
    cold = generation is None
    tick = scan_uploads(state, state.latest_generation() if cold else generation, settings,
                        hash_budget_s=HASH_BUDGET_S)
    graph = context.repository_def.asset_graph
    identity = graph_identity(graph)
    known = set(context.instance.get_dynamic_partitions(SHARDS_PARTITION))
    new = sorted(set(tick.fingerprints) - known)
    if new:  # registered before they are judged, so their uploads can be observed
        context.instance.add_dynamic_partitions(SHARDS_PARTITION, new)
    candidates = _candidates(tick, known, cold or cursor.get("identity") != identity)
    states = shard_freshness(context.instance, graph, candidates, store.open(), model.profile)
    context.update_cursor(json.dumps({"generation": tick.generation, "identity": identity}))
    stale = [s for s in states.values() if not s.up_to_date]
    context.log.info(f"{tick.files} files, {tick.hashed} hashed, {tick.pending} left to hash; "
                     f"{len(candidates)} shards judged, {len(stale)} need a run")
    if not stale:
        return SkipReason(f"no shard needs a run among {tick.files} files ({tick.hashed} "
                          f"re-hashed, {len(candidates)} shards judged)")
    return SensorResult(run_requests=[
        RunRequest(partition_key=s.shard,
                   run_key=f"{s.shard}:{s.fingerprint}:{identity}:{s.last_success}",
                   tags={WHY_TAG: "; ".join(s.reasons)[:1000]})
        for s in stale])
