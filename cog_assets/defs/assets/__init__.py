"""The asset graph, one partition per shard:

uploads ─► raw_manifest ─► scene_segments ─► clip_captions ─► validated_clips ─► frame_tensors ─► vae_latents
                                                                  │                                      │
                                                                  └──► t5_embeddings ──────────► training_dataset

scene_segments cuts long source videos into scored clips (split_scenes, quality thresholds);
with those off it passes every manifest row through as one clip. clip_captions gives each
clip its final caption (written, polished and checked where caption_mode and caption_polish
ask); with those off it passes every caption through.

One module per asset. Each calls one plain stage function with the settings of its resources and reports
counts, timings, paths and a data version derived from the keys of what it produced.
"""

from dagster import AssetsDefinition

from cog_assets.defs.assets.clip_captions import clip_captions_asset
from cog_assets.defs.assets.clip_files import clip_files
from cog_assets.defs.assets.cogvideo_finetune_export import cogvideo_finetune_export
from cog_assets.defs.assets.cogvideox_factory_export import cogvideox_factory_export
from cog_assets.defs.assets.frame_tensors import frame_tensors
from cog_assets.defs.assets.raw_manifest import raw_manifest
from cog_assets.defs.assets.scene_segments import scene_segments
from cog_assets.defs.assets.t5_embeddings import t5_embeddings_asset
from cog_assets.defs.assets.training_dataset import training_dataset
from cog_assets.defs.assets.uploads import uploads
from cog_assets.defs.assets.vae_latents import vae_latents_asset
from cog_assets.defs.assets.validated_clips import validated_clips
from cog_assets.defs.assets.videox_fun_export import videox_fun_export


def shard_assets(gpu_op_tags: dict, captions_on_gpu: bool = False) -> list[AssetsDefinition]:
    """The eight materializable assets of a shard, in graph order; those that run a model
    with `gpu_op_tags` (Kubernetes GPUs): the VAE, T5, and clip_captions when a local model
    writes captions (`captions_on_gpu`)."""
    return [raw_manifest, scene_segments, clip_captions_asset(gpu_op_tags, captions_on_gpu),
            validated_clips, frame_tensors, vae_latents_asset(gpu_op_tags),
            t5_embeddings_asset(gpu_op_tags), training_dataset]


EXPORT_ASSETS = [clip_files, cogvideox_factory_export, cogvideo_finetune_export,
                 videox_fun_export]

__all__ = ["EXPORT_ASSETS", "shard_assets", "uploads"]
