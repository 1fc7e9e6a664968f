"""videox_fun_export: the curated clips as files plus metadata.json, as VideoX-Fun's trainers
(CogVideoX-Fun) read them."""

from dagster import AssetExecutionContext, MaterializeResult, asset

from cog_assets.core.profiles import get_profile
from cog_assets.defs.assets.groups import (
    CLIP_FILES_KEY,
    EXPORTS_GROUP,
    TRAINING_DATASET_KEY,
)
from cog_assets.defs.assets.trainer_exports import (
    dataset_clip_files,
    export_dirs,
    export_lease,
    export_result,
    require_all,
)
from cog_assets.defs.resources import (
    ClipsResource,
    LimitsResource,
    ModelResource,
    SourcesResource,
    StoreResource,
)
from cog_assets.exports import export_videox_fun


@asset(deps=[TRAINING_DATASET_KEY, CLIP_FILES_KEY], group_name=EXPORTS_GROUP,
       kinds={"json"})
def videox_fun_export(context: AssetExecutionContext, model: ModelResource,
                      sources: SourcesResource, limits: LimitsResource, clips: ClipsResource,
                      store: StoreResource) -> MaterializeResult:
    """VideoX-Fun `--train_data_dir`: train/<stem>.mp4 (the clip files), metadata.json
    ({file_path, text, type: video, ...} per clip: `--train_data_meta`), trainer_args.txt."""
    dataset_dir, out_dir = export_dirs(store, model, "videox-fun")
    with export_lease(context, store, model) as lease:
        files = dataset_clip_files(store, model, sources, limits, clips, lease.hold_all)
        require_all(files)
        return export_result(export_videox_fun(
            dataset_dir, out_dir, get_profile(model.profile), files.files,
            keyframes=clips.export_keyframes, id_token=sources.id_token), files)
