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
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from dagster import AssetKey, AssetObservation, DagsterInstance

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

    @property
    def up_to_date(self) -> bool:
        return not self.reasons


def graph_identity(asset_graph: BaseAssetGraph) -> str:
    """One hash of the shard assets' code versions, as the definitions were built."""
    versions = {name: asset_graph.get(AssetKey(name)).code_version for name in SHARD_ASSETS}
    return artifact_key("identity", **versions)[:16]


def record_uploads(instance: DagsterInstance, fingerprints: Mapping[str, str]) -> None:
    """Observe `uploads` for each shard whose fingerprint differs from its latest
    observation (nothing is written for the others)."""
    for shard, fingerprint in fingerprints.items():
        record = instance.get_latest_data_version_record(UPLOADS_KEY, True, shard)
        observed = None
        if record is not None:
            event = record.event_log_entry.asset_observation
            observed = event.tags.get(DATA_VERSION_TAG) if event else None
        if observed != fingerprint:
            instance.report_runless_asset_event(AssetObservation(
                asset_key=UPLOADS_KEY, partition=shard, tags={DATA_VERSION_TAG: fingerprint}))


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
    (EMPTY_SHARD for a shard with no clip left)."""
    wanted = list(fingerprints)
    record_uploads(instance, fingerprints)
    resolver = stale_status_resolver(instance, asset_graph)
    states = {}
    for shard in wanted:
        state = ShardFreshness(shard, fingerprints[shard])
        last = instance.get_latest_data_version_record(DATASET_KEY, False, shard)
        state.last_success = last.storage_id if last else 0
        if last is None and state.fingerprint == EMPTY_SHARD:
            states[shard] = state  # never had a dataset and has no clip: nothing to do
            continue
        for reason, rows in _retried_rows(last).items():
            state.reasons.append(f"{rows} rows were {RETRIED[reason]} by its "
                                 "last run")
        for name in SHARD_ASSETS:
            status = resolver.get_status(AssetKey(name), shard)
            if status == StaleStatus.MISSING:
                state.reasons.append(f"{name} never materialized")
            elif status == StaleStatus.STALE:
                causes = resolver.get_stale_causes(AssetKey(name), shard)
                state.reasons.extend(f"{name} {cause.reason}"
                                     + (f" ({cause.dependency.asset_key.to_user_string()})"
                                        if cause.dependency else "")
                                     for cause in causes)
        index = f"{store.path(layout.shard_dir(profile, shard))}/{layout.INDEX_FILE}"
        live = state.fingerprint != EMPTY_SHARD  # a retired shard has no index to check
        if not state.reasons and live and not store.exists(index):
            state.reasons.append(f"its finished index {index} is missing from the store")
        states[shard] = state
    return states
