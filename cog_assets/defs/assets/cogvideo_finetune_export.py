"""cogvideo_finetune_export: the finished shards as CogVideo's `finetune/` data root, its cache full."""

from dagster import AssetExecutionContext, MaterializeResult, asset

from cog_assets.core.profiles import get_profile
from cog_assets.defs.assets.groups import (
    CLIP_FILES_KEY,
    EXPORTS_GROUP,
    TRAINING_DATASET_KEY,
)
from cog_assets.defs.assets.trainer_exports import export_with_clip_files
from cog_assets.defs.resources import (
    ClipsResource,
    FramesResource,
    LimitsResource,
    ModelResource,
    SourcesResource,
    StoreResource,
)
from cog_assets.defs.run_settings import refuse_output_overrides
from cog_assets.exports import export_cogvideo_finetune


@asset(deps=[TRAINING_DATASET_KEY, CLIP_FILES_KEY], group_name=EXPORTS_GROUP,
       kinds={"safetensors"})
def cogvideo_finetune_export(context: AssetExecutionContext, model: ModelResource,
                             sources: SourcesResource, frames: FramesResource,
                             limits: LimitsResource, clips: ClipsResource,
                             store: StoreResource) -> MaterializeResult:
    """CogVideo `finetune/` data root with its cache already full: video latents sampled and
    scaled, prompt embeddings under the sha256 of each prompt, videos/<stem>.mp4 the clip
    files (read by the trainer only where its cache misses)."""
    refuse_output_overrides(context, model=model, sources=sources, frames=frames,
                            limits=limits, clips=clips, store=store)
    return export_with_clip_files(
        context, "cogvideo-finetune", model, sources, limits, clips, store,
        lambda dataset_dir, out_dir, files: export_cogvideo_finetune(
            dataset_dir, out_dir, get_profile(model.profile), seed=frames.seed,
            clip_files=files, image_latent_scaling=model.image_latent_scaling,
            id_token=sources.id_token))
