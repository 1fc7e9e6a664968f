"""cogvideox_factory_export: the finished shards as cogvideox-factory's `--load_tensors` reads them."""

from dagster import AssetExecutionContext, MaterializeResult, asset

from cog_assets.core.profiles import get_profile
from cog_assets.defs.assets.groups import EXPORTS_GROUP, TRAINING_DATASET_KEY
from cog_assets.defs.assets.trainer_exports import (
    export_dirs,
    export_lease,
    export_result,
)
from cog_assets.defs.resources import ModelResource, SourcesResource, StoreResource
from cog_assets.defs.run_settings import refuse_output_overrides
from cog_assets.exports import export_cogvideox_factory


@asset(deps=[TRAINING_DATASET_KEY], group_name=EXPORTS_GROUP, kinds={"pytorch"})
def cogvideox_factory_export(context: AssetExecutionContext, model: ModelResource,
                             sources: SourcesResource, store: StoreResource
                             ) -> MaterializeResult:
    """cogvideox-factory `--load_tensors`: videos.txt, prompts.txt, video_latents/,
    prompt_embeds/ (and image_latents/ for I2V) as .pt files."""
    refuse_output_overrides(context, model=model, sources=sources, store=store)
    dataset_dir, out_dir = export_dirs(store, model, "cogvideox-factory")
    with export_lease(context, store, model):
        return export_result(export_cogvideox_factory(
            dataset_dir, out_dir, get_profile(model.profile),
            image_latent_scaling=model.image_latent_scaling, id_token=sources.id_token))
