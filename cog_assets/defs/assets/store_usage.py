"""store_usage: what the store holds, per kind, and what `cog-assets gc` would reclaim.

Unpartitioned and computed from the store itself, so it is true whenever it is materialized:
from the UI (with what gc would reclaim), or at the end of every backfill (reported without a
run, from one listing of the store).
"""

import logging

from dagster import (
    AssetExecutionContext,
    AssetMaterialization,
    DagsterInstance,
    MaterializeResult,
    MetadataValue,
    asset,
)

from cog_assets.core.config import Settings
from cog_assets.defs.assets.groups import STORE_GROUP, STORE_USAGE_KEY
from cog_assets.defs.resources import StoreResource
from cog_assets.defs.run_settings import refuse_output_overrides
from cog_assets.store.collection import GcError, plan_gc
from cog_assets.store.content_store import ContentStore
from cog_assets.store.footprint import KINDS, human_size, store_footprint


def usage_metadata(store: ContentStore, grace_s: float | None) -> dict:
    """Bytes per kind (`<kind>_bytes`), totals, a table, and (given the grace period) what gc
    would reclaim, which reads every catalog, index and reference of the store as gc does."""
    listing = list(store.walk())  # one listing for both (on S3 the costly part)
    footprint = store_footprint(store, listing)
    metadata: dict = {f"{kind}_bytes": MetadataValue.int(footprint.bytes[kind])
                      for kind in KINDS}
    datasets = footprint.bytes["datasets"]
    metadata.update(
        total_size=human_size(footprint.total),
        datasets_size=human_size(datasets),
        outside_datasets_size=human_size(footprint.outside_datasets),
        total_bytes=MetadataValue.int(footprint.total),
        outside_datasets_bytes=MetadataValue.int(footprint.outside_datasets),
        outside_per_dataset_byte=MetadataValue.float(
            round(footprint.outside_datasets / datasets, 4) if datasets else 0.0))
    rows = [f"| {kind} | {footprint.files[kind]} | {human_size(footprint.bytes[kind])} |"
            for kind in KINDS if footprint.files[kind]]
    try:
        if grace_s is not None:
            plan = plan_gc(store, grace_s=grace_s, listing=listing)
            metadata["gc_reclaimable_size"] = human_size(plan.bytes)
            metadata["gc_reclaimable_bytes"] = MetadataValue.int(plan.bytes)
            rows.append(f"| *gc would remove* | {plan.files} | {human_size(plan.bytes)} |")
    except GcError as exc:
        metadata["gc"] = str(exc)
    metadata["by_kind"] = MetadataValue.md("| kind | files | size |\n|---|---|---|\n"
                                           + "\n".join(rows))
    return metadata


@asset(key=STORE_USAGE_KEY, group_name=STORE_GROUP, kinds={"parquet", "safetensors"})
def store_usage(context: AssetExecutionContext, store: StoreResource) -> MaterializeResult:
    """The store's size per kind: frames, latents, embeddings, first frames, thumbnails, scene
    scans, datasets, exports, tables, quarantine, temporaries; and what gc would reclaim."""
    refuse_output_overrides(context, store=store)
    return MaterializeResult(metadata=usage_metadata(store.open(), store.gc_grace_s))


def report_store_usage(instance: DagsterInstance, settings: Settings) -> None:
    """Record store_usage as it is now (after a backfill), without a run, with what gc would
    reclaim (one listing of the store; gc's plan reads the catalogs, indexes and references:
    tens of milliseconds for a local store of a few shards)."""
    try:
        metadata = usage_metadata(ContentStore(settings.store.url), settings.store.gc_grace_s)
    except OSError as exc:
        logging.getLogger(__name__).warning("could not measure the store: %s", exc)
        return
    instance.report_runless_asset_event(AssetMaterialization(STORE_USAGE_KEY,
                                                             metadata=metadata))
