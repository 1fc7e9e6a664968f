"""The job that materializes a shard end to end."""

from dagster import AssetSelection, define_asset_job

PREPARE_SHARDS = "prepare_shards"

prepare_shards_job = define_asset_job(
    PREPARE_SHARDS, selection=AssetSelection.groups("cogvideox").materializable(),
    description="Materialize every asset of one shard: manifest to finished training dataset.",
)
