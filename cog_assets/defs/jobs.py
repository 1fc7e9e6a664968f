"""The jobs: one that materializes a shard end to end, one that writes the trainer exports."""

from dagster import AssetSelection, define_asset_job

from cog_assets.defs.assets.groups import EXPORTS_GROUP, GROUP

PREPARE_SHARDS = "prepare_shards"

prepare_shards_job = define_asset_job(
    PREPARE_SHARDS, selection=AssetSelection.groups(GROUP).materializable(),
    description="Materialize every asset of one shard: manifest to finished training dataset.",
)
export_job = define_asset_job(
    "export_datasets", selection=AssetSelection.groups(EXPORTS_GROUP),
    description="Cut the clip files and write the trainer exports (cogvideox-factory, CogVideo "
                "finetune, VideoX-Fun) from the finished shards.",
)
