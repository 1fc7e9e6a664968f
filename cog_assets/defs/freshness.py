"""Which shards need a run: one rule for the backfill, the upload sensor and the UI.

A shard is up to date when every asset of it is materialized and *fresh* by Dagster's own
staleness, the one the UI shows and its "Materialize stale" selects from:

- each asset's code version (cog_assets.defs.versions: settings, model identity, transform
  versions) equals the one its latest materialization recorded;
- no input's data version moved since, `uploads` included: its observation carries the
  shard's upload fingerprint, brought up to date here first (`record_uploads`);
- its last run left no row for a later run: none deferred (a file still being written is
  read by a later run), none whose captioner failed (`caption_failed`: asked again);
- and the finished index is still in the store (a deleted store is not "up to date").

The backfill skips such shards without starting a run, the sensor requests runs for exactly
the others, and after either the UI shows nothing stale.

Asking Dagster costs about twenty event-log queries per shard (each asset partition's latest
record, each dependency's updates): a no-op over 64 shards spent 18 of its CPU seconds there.
So a shard found up to date is remembered in the instance (its key-value store) with what its
verdict rested on: the code versions, its upload fingerprint and the latest storage id of each
of its assets' materializations and of its uploads' observations. Staleness is a function of
exactly those records, so while none of them moved the verdict stands; they are read for all
shards at once (two queries per asset), and only shards whose records moved are asked again.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import json
from collections.abc import Iterable

from dagster import (
    AssetKey,
    AssetObservation,
    AssetRecordsFilter,
    DagsterEventType,
    DagsterInstance,
    EventLogRecord,
)

from cog_assets.core.keys import artifact_key
from cog_assets.defs.assets.groups import UPLOADS_KEY
from cog_assets.defs.dagster_internals import (
    BaseAssetGraph,
    StaleStatus,
    stale_status_resolver,
)
from cog_assets.defs.versions import SHARD_ASSETS
from cog_assets.store import layout
from cog_assets.store.content_store import ContentStore

DATASET_KEY = AssetKey("training_dataset")
# The tag an observation carries its data version in (dagster.DATA_VERSION_TAG, not exported).
DATA_VERSION_TAG = "dagster/data_version"
# The upload fingerprint of a shard whose last clip left the data root.
EMPTY_SHARD = "empty"


@dataclass
class ShardFreshness:
    shard: str
    fingerprint: str
    reasons: list[str] = field(default_factory=list)  # why it needs a run; none: up to date
    last_success: int = 0  # storage id of its latest training_dataset materialization
    last: EventLogRecord | None = field(default=None, repr=False)  # that materialization

    @property
    def up_to_date(self) -> bool:
        return not self.reasons


def graph_identity(asset_graph: BaseAssetGraph) -> str:
    """One hash of the shard assets' code versions, as the definitions were built."""
    versions = {name: asset_graph.get(AssetKey(name)).code_version for name in SHARD_ASSETS}
    return artifact_key("identity", **versions)[:16]


def latest_records(instance: DagsterInstance, key: AssetKey, shards: Iterable[str],
                   observed: bool = False) -> dict[str, EventLogRecord]:
    """The latest materialization (or observation) record of `key` per shard, two queries
    for all shards."""
    event_type = (DagsterEventType.ASSET_OBSERVATION if observed
                  else DagsterEventType.ASSET_MATERIALIZATION)
    ids = instance.get_latest_storage_id_by_partition(key, event_type, set(shards))
    if not ids:
        return {}
    fetch = instance.fetch_observations if observed else instance.fetch_materializations
    records = fetch(AssetRecordsFilter(asset_key=key, storage_ids=list(ids.values())),
                    limit=len(ids)).records
    return {record.partition_key: record for record in records
            if record.partition_key is not None}


def record_uploads(instance: DagsterInstance, fingerprints: Mapping[str, str]) -> None:
    """Observe `uploads` for each shard whose fingerprint differs from its latest
    observation (nothing is written for the others)."""
    latest = latest_records(instance, UPLOADS_KEY, fingerprints, observed=True)
    for shard, fingerprint in fingerprints.items():
        record = latest.get(shard)
        observed = None
        if record is not None:
            event = record.event_log_entry.asset_observation
            observed = event.tags.get(DATA_VERSION_TAG) if event else None
        if observed != fingerprint:
            instance.report_runless_asset_event(AssetObservation(
                asset_key=UPLOADS_KEY, partition=shard, tags={DATA_VERSION_TAG: fingerprint}))


VERDICT_KEY = "cog_assets/up_to_date/{shard}"  # the instance's key-value store


def _event_marks(instance: DagsterInstance, shards: list[str]) -> dict[str, list]:
    """Per shard, the latest storage id of each shard asset's materialization and of its
    uploads' observation (None: none): what Dagster's staleness of the shard reads."""
    marks: dict[str, list] = {shard: [] for shard in shards}
    wanted = set(shards)
    for key, event_type in [*((AssetKey(n), DagsterEventType.ASSET_MATERIALIZATION)
                              for n in SHARD_ASSETS),
                            (UPLOADS_KEY, DagsterEventType.ASSET_OBSERVATION)]:
        latest = instance.get_latest_storage_id_by_partition(key, event_type, wanted)
        for shard in shards:
            marks[shard].append(latest.get(shard))
    return marks


def _verdict(identity: str, fingerprint: str, marks: list) -> str:
    return json.dumps([identity, fingerprint, marks])


# Rejects a later run may turn into clips by itself, and what they are called in a reason.
RETRIED = {"deferred": "deferred (still being written)",
           "caption_failed": "rejected because their captioner failed (caption_failed)"}


def _retried_rows(record) -> dict[str, int]:
    """Rows the last training_dataset materialization left for later, by reason (files in
    flux, captions a model failed to write)."""
    if record is None or record.event_log_entry.asset_materialization is None:
        return {}
    by_reason = record.event_log_entry.asset_materialization.metadata.get("rejects_by_reason")
    value = getattr(by_reason, "value", by_reason) or {}
    if not isinstance(value, dict):
        return {}
    return {reason: int(value[reason]) for reason in RETRIED if value.get(reason)}


def shard_freshness(instance: DagsterInstance, asset_graph: BaseAssetGraph,
                    fingerprints: Mapping[str, str], store: ContentStore, profile: str
                    ) -> dict[str, ShardFreshness]:
    """The rule, for every shard in `fingerprints`: each shard's current upload fingerprint
    (EMPTY_SHARD for a shard with no clip left). Shards whose remembered verdict still holds
    are not asked again (see the module's docstring)."""
    wanted = list(fingerprints)
    record_uploads(instance, fingerprints)
    identity = graph_identity(asset_graph)
    marks = _event_marks(instance, wanted)
    datasets = latest_records(instance, DATASET_KEY, wanted)
    remembered = instance.run_storage.get_cursor_values(
        {VERDICT_KEY.format(shard=shard) for shard in wanted})
    resolver = None
    states, fresh = {}, {}
    for shard in wanted:
        state = ShardFreshness(shard, fingerprints[shard])
        last = state.last = datasets.get(shard)
        state.last_success = last.storage_id if last else 0
        if last is None and state.fingerprint == EMPTY_SHARD:
            states[shard] = state  # never had a dataset and has no clip: nothing to do
            continue
        verdict = _verdict(identity, state.fingerprint, marks[shard])
        if remembered.get(VERDICT_KEY.format(shard=shard)) != verdict:
            resolver = resolver or stale_status_resolver(instance, asset_graph)
            state.reasons = _stale_reasons(resolver, shard, last)
        index = f"{store.path(layout.shard_dir(profile, shard))}/{layout.INDEX_FILE}"
        live = state.fingerprint != EMPTY_SHARD  # a retired shard has no index to check
        if not state.reasons and live and not store.exists(index):
            state.reasons.append(f"its finished index {index} is missing from the store")
        if state.up_to_date:
            fresh[VERDICT_KEY.format(shard=shard)] = verdict
        states[shard] = state
    if fresh:
        instance.run_storage.set_cursor_values(fresh)
    return states


def _stale_reasons(resolver, shard: str, last) -> list[str]:
    """Why Dagster's staleness (and rows left for a later run) say `shard` needs a run;
    none: fresh."""
    reasons = [f"{rows} rows were {RETRIED[reason]} by its last run"
               for reason, rows in _retried_rows(last).items()]
    for name in SHARD_ASSETS:
        status = resolver.get_status(AssetKey(name), shard)
        if status == StaleStatus.MISSING:
            reasons.append(f"{name} never materialized")
        elif status == StaleStatus.STALE:
            causes = resolver.get_stale_causes(AssetKey(name), shard)
            reasons.extend(f"{name} {cause.reason}"
                           + (f" ({cause.dependency.asset_key.to_user_string()})"
                              if cause.dependency else "")
                           for cause in causes)
    return reasons
