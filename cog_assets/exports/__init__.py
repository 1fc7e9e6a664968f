"""Exports of a finished dataset into the layouts popular CogVideoX trainers load directly.

Plain modules (no Dagster): each reads the `shard-*` folders of a finished dataset, refuses
clips the trainer would misread (naming them) before writing anything, and writes atomically.
"""

from cog_assets.exports.cogvideo_finetune import export_cogvideo_finetune
from cog_assets.exports.cogvideox_factory import export_cogvideox_factory
from cog_assets.exports.report import ExportReport
from cog_assets.exports.videox_fun import export_videox_fun

__all__ = ["ExportReport", "export_cogvideo_finetune", "export_cogvideox_factory",
           "export_videox_fun"]
