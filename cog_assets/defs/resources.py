"""Dagster resources: one per settings group of cog_assets.core.config, derived from it.

Each resource has exactly its group's fields (names, types, defaults, descriptions: what the
launchpad shows), is validated as the group when it is built, and hands the plain settings
to the stages with `settings()`. Nothing about a setting is written here.
"""

from __future__ import annotations

from typing import Any

import polars as pl
from dagster import (
    ConfigurableIOManager,
    ConfigurableResource,
    InputContext,
    OutputContext,
)
from pydantic import BaseModel, Field, model_validator

from cog_assets.core.config import (
    RESOURCE_GROUPS,
    CaptionSettings,
    ClipSettings,
    DeviceSettings,
    FrameSettings,
    MediaLimits,
    ModelSettings,
    SegmentSettings,
    Settings,
    SourceSettings,
    StoreSettings,
)
from cog_assets.core.profiles import get_profile
from cog_assets.media.frame_policy import FramePolicy
from cog_assets.models.runtime import ModelRuntime
from cog_assets.store import layout
from cog_assets.store.content_store import ContentStore


def _resource_of(group: type[BaseModel]) -> type[ConfigurableResource]:
    """A ConfigurableResource with the fields of a settings group."""
    namespace: dict[str, Any] = {
        name: Field(default=info.default, description=info.description)
        for name, info in group.model_fields.items()}
    namespace["__annotations__"] = {name: info.annotation
                                    for name, info in group.model_fields.items()}
    namespace["__module__"] = __name__

    def settings(self) -> Any:
        return group.model_validate({name: getattr(self, name) for name in group.model_fields})

    def _valid_as_group(self):  # the launchpad's values meet the same rules as the CLI's
        settings(self)
        return self

    namespace["settings"] = settings
    namespace["_valid_as_group"] = model_validator(mode="after")(_valid_as_group)
    return type(f"_{group.__name__}Fields", (ConfigurableResource,), namespace)


class SourcesResource(_resource_of(SourceSettings)):
    """Where the raw videos and captions are, and how they are cut into shards."""


class FramesResource(_resource_of(FrameSettings)):
    """Which frames a clip gives: buckets, sampling window, short clips and resizing."""


class LimitsResource(_resource_of(MediaLimits)):
    """Limits that protect a shard from hostile or absurd files."""


class SegmentsResource(_resource_of(SegmentSettings)):
    """Long videos: scene splitting into clips, quality scores and their thresholds."""


class ModelResource(_resource_of(ModelSettings)):
    """Which CogVideoX model the dataset is for, and where its weights are."""


class DeviceResource(_resource_of(DeviceSettings)):
    """The accelerator GPU steps run on, in what dtype and batch sizes."""


class StoreResource(_resource_of(StoreSettings)):
    """The content-addressed store: a local directory or any fsspec URL."""

    def open(self) -> ContentStore:
        return ContentStore(self.url, verify_reuse=self.verify_artifacts)


class CaptionsResource(_resource_of(CaptionSettings)):
    """Captions written, polished and checked (the endpoint's key: COG_ASSETS_CAPTION_API_KEY)."""


class ClipsResource(_resource_of(ClipSettings)):
    """Clip files: each accepted clip cut as an H.264 MP4 for the trainers that read videos."""


RESOURCE_CLASSES: dict[str, type[ConfigurableResource]] = {
    "sources": SourcesResource, "frames": FramesResource, "limits": LimitsResource,
    "segments": SegmentsResource, "model": ModelResource, "device": DeviceResource, "store": StoreResource,
    "captions": CaptionsResource, "clips": ClipsResource,
}
assert RESOURCE_CLASSES.keys() == RESOURCE_GROUPS.keys()


def frame_policy(model: ModelResource, frames: FramesResource) -> FramePolicy:
    """Raises ProfileError, naming the rule, when the frame settings break the model's."""
    return FramePolicy.build(get_profile(model.profile), frames.settings())


def runtime(model: ModelResource, device: DeviceResource | None = None) -> ModelRuntime:
    return ModelRuntime(model.settings(), device.settings() if device else DeviceSettings())


class ShardTableIOManager(ConfigurableIOManager):
    """Each asset's per-shard table as parquet in the store: tables/<asset>/<shard>.parquet."""

    store_url: str

    def _path(self, store: ContentStore, context: InputContext | OutputContext) -> str:
        asset = "/".join(context.asset_key.path)
        return store.path(layout.table_path(asset, context.asset_partition_key))

    def handle_output(self, context: OutputContext, obj: pl.DataFrame) -> None:
        store = ContentStore(self.store_url)
        path = self._path(store, context)
        store.write_table(path, obj)
        context.add_output_metadata({"table_path": store.local_path(path)})

    def load_input(self, context: InputContext) -> pl.DataFrame:
        store = ContentStore(self.store_url)
        return store.read_table(self._path(store, context))


def build_resources(settings: Settings) -> dict[str, Any]:
    """The resources of one set of settings, by key (plus the shard-table IO manager)."""
    resources: dict[str, Any] = {
        key: cls(**getattr(settings, key).model_dump()) for key, cls in RESOURCE_CLASSES.items()}
    resources["io_manager"] = ShardTableIOManager(store_url=settings.store.url)
    return resources
