"""cogvideo_finetune_export: the finished shards as CogVideo's `finetune/` data root, its cache full."""

from dagster import AssetExecutionContext, MaterializeResult, asset

from cog_assets.core.profiles import get_profile
from cog_assets.defs.assets.groups import EXPORTS_GROUP, TRAINING_DATASET_KEY
from cog_assets.defs.assets.trainer_exports import (
    export_dirs,
    export_lease,
    export_result,
)
from cog_assets.defs.resources import (
    FramesResource,
    ModelResource,
    SourcesResource,
    StoreResource,
)
from cog_assets.defs.run_settings import refuse_output_overrides
from cog_assets.exports import export_cogvideo_finetune


@asset(deps=[TRAINING_DATASET_KEY], group_name=EXPORTS_GROUP, kinds={"safetensors"})
def cogvideo_finetune_export(context: AssetExecutionContext, model: ModelResource,
                             sources: SourcesResource, frames: FramesResource,
                             store: StoreResource) -> MaterializeResult:
    """CogVideo `finetune/` data root with its cache already full: video latents sampled and
    scaled, prompt embeddings under the sha256 of each prompt, videos linked to the sources."""
    refuse_output_overrides(context, model=model, sources=sources, frames=frames, store=store)
    dataset_dir, out_dir = export_dirs(store, model, "cogvideo-finetune")
    with export_lease(context, store, model):
        return export_result(export_cogvideo_finetune(
            dataset_dir, out_dir, get_profile(model.profile), seed=frames.seed,
            videos_root=sources.data_root, image_latent_scaling=model.image_latent_scaling,
            id_token=sources.id_token))
