"""The asset groups, keys and pools the asset modules share."""

from dagster import AssetKey

GROUP = "cogvideox"  # the shard assets and the observed uploads
EXPORTS_GROUP = "exports"
STORE_GROUP = "store"
GPU_POOL = "gpu"  # the steps that run a model: an instance caps how many run at once

UPLOADS_KEY = AssetKey("uploads")
TRAINING_DATASET_KEY = AssetKey("training_dataset")
CLIP_FILES_KEY = AssetKey("clip_files")
STORE_USAGE_KEY = AssetKey("store_usage")
