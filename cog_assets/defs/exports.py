"""Export assets: the finished shards rewritten in the layouts popular trainers load as is.

Unpartitioned, downstream of every shard of `training_dataset`; no model is loaded.
"""


from pathlib import Path

import polars as pl
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
from cog_assets.exports.source import shard_dirs
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
        "trainer_args": "\n".join(" ".join(args) for args in report.trainer_args) or "none",
    })


@asset(deps=[TRAINING_DATASET], group_name=EXPORTS_GROUP, kinds={"pytorch"})
def cogvideox_factory_export(context: AssetExecutionContext, model: ModelResource,
                             store: StoreResource) -> MaterializeResult:
    """cogvideox-factory `--load_tensors`: videos.txt, prompts.txt, video_latents/,
    prompt_embeds/ (and image_latents/ for I2V) as .pt files."""
    dataset_dir, out_dir = _local_dirs(store, model, "cogvideox-factory")
    return _result(export_cogvideox_factory(dataset_dir, out_dir, get_profile(model.profile)))


@asset(deps=[TRAINING_DATASET], group_name=EXPORTS_GROUP, kinds={"safetensors"})
def cogvideo_finetune_export(context: AssetExecutionContext, model: ModelResource,
                             sources: SourcesResource, frames: FramesResource,
                             store: StoreResource) -> MaterializeResult:
    """CogVideo `finetune/` data root with its cache already full: video latents sampled and
    scaled, prompt embeddings under the sha256 of each prompt, videos linked to the sources."""
    dataset_dir, out_dir = _local_dirs(store, model, "cogvideo-finetune")
    profile = get_profile(model.profile)
    images = None
    if profile.i2v:  # that trainer re-encodes the first-frame picture: give it ours
        images = {}
        for shard in shard_dirs(dataset_dir):
            index = pl.read_parquet(shard / layout.INDEX_FILE)
            images.update({r["clip_id"]: shard / r["first_frame_png"]
                           for r in index.iter_rows(named=True) if r.get("first_frame_png")})
    return _result(export_cogvideo_finetune(dataset_dir, out_dir, profile, seed=frames.seed,
                                            videos_root=sources.data_root, images=images))


EXPORT_ASSETS = [cogvideox_factory_export, cogvideo_finetune_export]
export_job = define_asset_job(
    "export_datasets", selection=AssetSelection.groups(EXPORTS_GROUP),
    description="Write the trainer caches (cogvideox-factory, CogVideo finetune) from the "
                "finished shards.",
)
