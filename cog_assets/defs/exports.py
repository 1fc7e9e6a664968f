"""Export assets: the finished shards rewritten in the layouts popular trainers load as is.

Unpartitioned, downstream of every shard of `training_dataset`; no model is loaded. Each reads
the shards the dataset's catalog lists and writes `trainer_args.txt` beside its files.
"""


from pathlib import Path

from dagster import (
    AssetExecutionContext,
    AssetKey,
    AssetSelection,
    MaterializeResult,
    asset,
    define_asset_job,
)

from cog_assets import layout
from cog_assets.defs.resources import (
    FramesResource,
    ModelResource,
    SourcesResource,
    StoreResource,
)
from cog_assets.exports import (
    ExportReport,
    export_cogvideo_finetune,
    export_cogvideox_factory,
)
from cog_assets.profiles import get_profile

EXPORTS_GROUP = "exports"
TRAINING_DATASET = AssetKey("training_dataset")


def _local_dirs(store: StoreResource, model: ModelResource, trainer: str) -> tuple[Path, Path]:
    content = store.open()
    if content.local_path(content.root) != content.root:
        raise ValueError(f"exports write trainer files on local disk; the store {store.url} is "
                         "remote: run the export where the dataset is mounted")
    return (Path(content.path(layout.dataset_dir(model.profile))),
            Path(content.path(layout.export_dir(model.profile, trainer))))


def _result(report: ExportReport) -> MaterializeResult:
    return MaterializeResult(metadata={
        "clips": report.clips, "files": len(report.files), "out_dir": str(report.out_dir),
        "trainer_args": report.args_text(),
        "trainer_args_file": str(report.args_file),
    })


@asset(deps=[TRAINING_DATASET], group_name=EXPORTS_GROUP, kinds={"pytorch"})
def cogvideox_factory_export(context: AssetExecutionContext, model: ModelResource,
                             sources: SourcesResource, store: StoreResource
                             ) -> MaterializeResult:
    """cogvideox-factory `--load_tensors`: videos.txt, prompts.txt, video_latents/,
    prompt_embeds/ (and image_latents/ for I2V) as .pt files."""
    dataset_dir, out_dir = _local_dirs(store, model, "cogvideox-factory")
    return _result(export_cogvideox_factory(
        dataset_dir, out_dir, get_profile(model.profile),
        image_latent_scaling=model.image_latent_scaling, id_token=sources.id_token))


@asset(deps=[TRAINING_DATASET], group_name=EXPORTS_GROUP, kinds={"safetensors"})
def cogvideo_finetune_export(context: AssetExecutionContext, model: ModelResource,
                             sources: SourcesResource, frames: FramesResource,
                             store: StoreResource) -> MaterializeResult:
    """CogVideo `finetune/` data root with its cache already full: video latents sampled and
    scaled, prompt embeddings under the sha256 of each prompt, videos linked to the sources."""
    dataset_dir, out_dir = _local_dirs(store, model, "cogvideo-finetune")
    return _result(export_cogvideo_finetune(
        dataset_dir, out_dir, get_profile(model.profile), seed=frames.seed,
        videos_root=sources.data_root, image_latent_scaling=model.image_latent_scaling,
        id_token=sources.id_token))


EXPORT_ASSETS = [cogvideox_factory_export, cogvideo_finetune_export]
export_job = define_asset_job(
    "export_datasets", selection=AssetSelection.groups(EXPORTS_GROUP),
    description="Write the trainer caches (cogvideox-factory, CogVideo finetune) from the "
                "finished shards.",
)
