"""Export assets: the finished shards rewritten in the layouts popular trainers load as is.

Unpartitioned, downstream of every shard of `training_dataset`; no model is loaded.
"""

from pathlib import Path

import polars as pl
from dagster import AssetExecutionContext, AssetSelection, MaterializeResult, asset, define_asset_job

from cog_assets.defs.assets import training_dataset
from cog_assets.defs.resources import DatasetResource, ModelResource, StoreResource
from cog_assets.exports import ExportReport, export_cogvideo_finetune, export_cogvideox_factory
from cog_assets.exports.source import shard_dirs

EXPORTS_GROUP = "exports"


def _local_dirs(store: StoreResource, models: ModelResource, name: str) -> tuple[Path, Path]:
    content = store.open()
    if content.local_path(content.root) != content.root:
        raise ValueError(f"exports write trainer files on local disk; the store {store.url} is "
                         "remote: run the export where the dataset is mounted")
    dataset_dir = Path(content.path("datasets", models.profile))
    return dataset_dir, Path(content.path("exports", models.profile, name))


def _result(report: ExportReport) -> MaterializeResult:
    return MaterializeResult(metadata={
        "clips": report.clips, "files": len(report.files), "out_dir": str(report.out_dir),
        "trainer_args": "\n".join(" ".join(args) for args in report.trainer_args) or "none",
    })


@asset(deps=[training_dataset], group_name=EXPORTS_GROUP, kinds={"pytorch"})
def cogvideox_factory_export(context: AssetExecutionContext, models: ModelResource,
                             store: StoreResource) -> MaterializeResult:
    """cogvideox-factory `--load_tensors`: videos.txt, prompts.txt, video_latents/,
    prompt_embeds/ (and image_latents/ for I2V) as .pt files."""
    dataset_dir, out_dir = _local_dirs(store, models, "cogvideox-factory")
    return _result(export_cogvideox_factory(dataset_dir, out_dir, models.model_profile()))


@asset(deps=[training_dataset], group_name=EXPORTS_GROUP, kinds={"safetensors"})
def cogvideo_finetune_export(context: AssetExecutionContext, models: ModelResource,
                             dataset: DatasetResource, store: StoreResource) -> MaterializeResult:
    """CogVideo `finetune/` data root with its cache already full: video latents sampled and
    scaled, prompt embeddings under the sha256 of each prompt, videos linked to the sources."""
    dataset_dir, out_dir = _local_dirs(store, models, "cogvideo-finetune")
    profile = models.model_profile()
    images = None
    if profile.i2v:  # that trainer re-encodes the first-frame picture: give it ours
        images = {}
        for shard in shard_dirs(dataset_dir):
            index = pl.read_parquet(shard / "index.parquet")
            images.update({r["clip_id"]: shard / r["first_frame_png"]
                           for r in index.iter_rows(named=True) if r.get("first_frame_png")})
    return _result(export_cogvideo_finetune(dataset_dir, out_dir, profile, seed=dataset.seed,
                                            videos_root=dataset.data_root, images=images))


EXPORT_ASSETS = [cogvideox_factory_export, cogvideo_finetune_export]
export_job = define_asset_job(
    "export_datasets", selection=AssetSelection.groups(EXPORTS_GROUP),
    description="Write the trainer caches (cogvideox-factory, CogVideo finetune) from the "
                "finished shards.",
)
