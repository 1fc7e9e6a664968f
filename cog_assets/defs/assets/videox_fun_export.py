"""videox_fun_export: the curated clips as files plus metadata.json, as VideoX-Fun's trainers
(CogVideoX-Fun) read them."""

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
    LimitsResource,
    ModelResource,
    SourcesResource,
    StoreResource,
)
from cog_assets.defs.run_settings import refuse_output_overrides
from cog_assets.exports import export_videox_fun


@asset(deps=[TRAINING_DATASET_KEY, CLIP_FILES_KEY], group_name=EXPORTS_GROUP,
       kinds={"json"})
def videox_fun_export(context: AssetExecutionContext, model: ModelResource,
                      sources: SourcesResource, limits: LimitsResource, clips: ClipsResource,
                      store: StoreResource) -> MaterializeResult:
    """VideoX-Fun `--train_data_dir`: train/<stem>.mp4 (the clip files), metadata.json
    ({file_path, text, type: video, ...} per clip: `--train_data_meta`), trainer_args.txt."""
    refuse_output_overrides(context, model=model, sources=sources, limits=limits, clips=clips,
                            store=store)
    return export_with_clip_files(
        context, "videox-fun", model, sources, limits, clips, store,
        lambda dataset_dir, out_dir, files: export_videox_fun(
            dataset_dir, out_dir, get_profile(model.profile), files,
            keyframes=clips.export_keyframes, id_token=sources.id_token))
