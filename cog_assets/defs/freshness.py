"""Which shards need a run: one rule for the backfill, the upload sensor and the UI.

A shard is up to date when every asset of it is materialized and *fresh* by Dagster's own
staleness, the one the UI shows and its "Materialize stale" selects from:

- each asset's code version (cog_assets.defs.versions: settings, model identity, transform
  versions) equals the one its latest materialization recorded;
- no input's data version moved since, `uploads` included: its observation carries the
  shard's upload fingerprint, brought up to date here first (`record_uploads`);
- its last run left no row for a later run: none deferred (a file still being written is
  read by a later run), none whose captioner failed (`caption_failed`: asked again);
- and what it serves is still in the store: the dataset's catalog lists the shard at the
  version its last materialization published (not one another instance published since),
  every file the catalog lists for it exists with its published size (a stat per file, no
  reads), and so does the index copy `index.parquet` (a deleted or damaged store is not "up to
  date"; `cog-assets verify` reads and checks digests).

The backfill skips such shards without starting a run, the sensor requests runs for exactly
the others, and after either the UI shows nothing stale.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from dagster import AssetKey, AssetObservation, DagsterInstance

from cog_assets.defs.assets.groups import UPLOADS_KEY
from cog_assets.defs.dagster_internals import (
    BaseAssetGraph,
    StaleStatus,
    stale_status_resolver,
)
from cog_assets.defs.versions import DATA_VERSION_TAG, SHARD_ASSETS, identity_of
from cog_assets.store import layout
from cog_assets.store.catalog import Catalog, DatasetError, read_catalog, served_problems
from cog_assets.store.content_store import ContentStore

DATASET_KEY = AssetKey("training_dataset")
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
    return identity_of({name: asset_graph.get(AssetKey(name)).code_version
                        for name in SHARD_ASSETS})


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
    catalogs: dict[str, Catalog | None | str] = {}
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
        live = state.fingerprint != EMPTY_SHARD  # a retired shard has nothing to serve
        if not state.reasons and live:
            state.reasons += _serving_problems(store, profile, shard, catalogs,
                                               _published_version(last))
        states[shard] = state
    return states


def _published_version(record) -> str | None:
    """The shard version the last training_dataset materialization published."""
    if record is None or record.event_log_entry.asset_materialization is None:
        return None
    value = record.event_log_entry.asset_materialization.metadata.get("index_version")
    return None if value is None else str(getattr(value, "value", value))


def _serving_problems(store: ContentStore, profile: str, shard: str,
                      catalogs: dict[str, Catalog | None | str], published: str | None
                      ) -> list[str]:
    """Why the store does not serve the shard as this instance published it (empty: it
    does): the catalog lists the version its last materialization published (another run,
    e.g. another instance with other settings on the same store, may have published its own
    since), and every file of it is there with its size."""
    dataset_dir = store.path(layout.dataset_dir(profile))
    if profile not in catalogs:  # read once per judgement of many shards
        try:
            catalogs[profile] = read_catalog(store, dataset_dir)
        except DatasetError as exc:
            catalogs[profile] = str(exc)
    catalog = catalogs[profile]
    if isinstance(catalog, str):
        return [f"the dataset's catalog cannot be read: {catalog}"]
    where = f"{store.local_path(dataset_dir)}/{layout.CATALOG_FILE}"
    entry = catalog.shards.get(shard) if catalog is not None else None
    if entry is None:
        return [f"the dataset's catalog {where} does not list it"]
    if published is not None and entry.version != published:
        return [f"the dataset's catalog {where} serves version {entry.version} of it, which "
                f"another run published after this instance's last one ({published})"]
    shard_dir = store.path(layout.shard_dir(profile, shard))
    problems = served_problems(store, shard_dir, entry)
    index = f"{shard_dir}/{layout.INDEX_FILE}"
    if not store.exists(index):
        problems.append(f"its finished index {store.local_path(index)} is missing from the "
                        "store")
    return problems
