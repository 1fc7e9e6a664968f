"""uploads: observed, not computed: one fingerprint per shard of its videos and captions."""

from dagster import DataVersionsByPartition, observable_source_asset

from cog_assets.defs.assets.groups import GROUP, UPLOADS_KEY
from cog_assets.defs.partitions import shards_partitions
from cog_assets.defs.resources import ModelResource, SourcesResource, StoreResource
from cog_assets.sources.uploads import UploadState, current_fingerprints


@observable_source_asset(key=UPLOADS_KEY, partitions_def=shards_partitions, group_name=GROUP)
def uploads(sources: SourcesResource, model: ModelResource,
            store: StoreResource) -> DataVersionsByPartition:
    """The raw videos and captions under the data root, one fingerprint per shard.

    The upload sensor records these as it notices changes; observing here does the same scan
    by hand. A shard whose fingerprint moved makes its raw_manifest (and all below) stale.
    """
    settings = sources.settings()
    state = UploadState(store.open(), settings, model.profile)
    return DataVersionsByPartition(current_fingerprints(state, settings))
