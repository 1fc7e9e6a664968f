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

Asking Dagster costs about twenty event-log queries per shard (each asset partition's latest
record, each dependency's updates): a no-op over 64 shards spent 18 of its CPU seconds there.
So a shard found up to date is remembered in the instance (its key-value store) with what its
verdict rested on: the code versions, its upload fingerprint and the latest storage id of each
of its assets' materializations and of its uploads' observations. Staleness is a function of
exactly those records, so while none of them moved the verdict stands; they are read for all
shards at once (two queries per asset), and only shards whose records moved are asked again.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from dagster import (
    AssetKey,
    AssetObservation,
    AssetRecordsFilter,
    DagsterEventType,
    DagsterInstance,
    EventLogRecord,
)

from cog_assets.defs.assets.groups import UPLOADS_KEY
from cog_assets.defs.dagster_internals import (
    BaseAssetGraph,
    StaleStatus,
    stale_status_resolver,
)
from cog_assets.defs.versions import DATA_VERSION_TAG, SHARD_ASSETS, identity_of
from cog_assets.store import layout
from cog_assets.store.catalog import (
    Catalog,
    DatasetError,
    read_catalog,
    served_problems,
)
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
    last: EventLogRecord | None = field(default=None, repr=False)  # that materialization

    @property
    def up_to_date(self) -> bool:
        return not self.reasons


def graph_identity(asset_graph: BaseAssetGraph) -> str:
    """One hash of the shard assets' code versions, as the definitions were built."""
    return identity_of({name: asset_graph.get(AssetKey(name)).code_version
                        for name in SHARD_ASSETS})


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
    catalogs: dict[str, Catalog | None | str] = {}
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
        live = state.fingerprint != EMPTY_SHARD  # a retired shard has nothing to serve
        if not state.reasons and live:  # checked every time: files go without an event
            state.reasons += _serving_problems(store, profile, shard, catalogs,
                                               _published_version(last))
        if state.up_to_date:
            fresh[VERDICT_KEY.format(shard=shard)] = verdict
        states[shard] = state
    if fresh:
        instance.run_storage.set_cursor_values(fresh)
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
