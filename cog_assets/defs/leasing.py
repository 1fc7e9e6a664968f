"""The lease each step of a shard run takes on what it uses (see cog_assets.store.leases)."""

from __future__ import annotations

from dagster import AssetExecutionContext

from cog_assets.store import layout
from cog_assets.store.content_store import ContentStore
from cog_assets.store.leases import Lease, run_holder


def step_lease(context: AssetExecutionContext, store: ContentStore,
               profile: str | None = None) -> Lease:
    """A lease for this step of this run on its shard's tables (and, given the profile, its
    shard's dataset folder); the step adds the artefact keys it relies on with `hold`."""
    shard = context.partition_key
    # its tables (every profile's, and where a store before profiles kept them)
    paths = [layout.table_path("*", "*", shard), layout.legacy_table_path("*", shard)]
    if profile is not None:  # the shard's next files and the catalog it publishes them in
        dataset = layout.dataset_dir(profile)
        paths += [f"{layout.shard_dir(profile, shard)}/*", f"{dataset}/{layout.CATALOG_FILE}*",
                  f"{dataset}/{layout.CATALOG_ENTRIES_DIR}/*"]
    return Lease(store, run_holder(context.run.run_id, context.asset_key.path[-1]), paths=paths)
