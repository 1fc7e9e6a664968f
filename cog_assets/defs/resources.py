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
    Failure,
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
from cog_assets.defs.run_settings import defined_settings, refusal
from cog_assets.defs.versions import DATA_VERSION_COLUMNS, DATA_VERSION_TAG, data_version
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
    """Each asset's per-shard table as parquet in the store, under its dataset's profile:
    tables/<profile>/<asset>/<shard>.parquet, so two profiles share a store without reading
    each other's tables.

    A table read as an input must be the one this instance recorded for that shard: its data
    version is compared with the upstream's latest materialization here, so a table another
    instance (other settings on the same profile) wrote since is refused, naming it, instead of
    being published under this instance's versions. A store written before tables were per
    profile keeps them at tables/<asset>/<shard>.parquet: read from there when it is the
    table this instance recorded (the next materialization writes it to its new place)."""

    store_url: str
    profile: str

    def _path(self, store: ContentStore, context: InputContext | OutputContext) -> str:
        asset = "/".join(context.asset_key.path)
        return store.path(layout.table_path(self.profile, asset, context.asset_partition_key))

    def _refuse_another_store(self, metadata) -> None:
        """The tables live in the settings' store, under their profile: a run config naming
        another is refused (as an overridden store resource is, cog_assets.defs.run_settings)."""
        defined = defined_settings(metadata or {})
        if defined is None:
            return
        for flat, mine, run in (("store", defined.store.url, self.store_url),
                                ("profile", defined.model.profile, self.profile)):
            if mine != run:
                raise Failure(description=refusal([(flat, mine, run)]).replace(
                    f"(resource {'store' if flat == 'store' else 'model'})",
                    f"(io_manager's {'store_url' if flat == 'store' else 'profile'})"))

    def handle_output(self, context: OutputContext, obj: pl.DataFrame) -> None:
        self._refuse_another_store(context.definition_metadata)
        store = ContentStore(self.store_url)
        path = self._path(store, context)
        store.write_table(path, obj)
        context.add_output_metadata({"table_path": store.local_path(path)})

    def load_input(self, context: InputContext) -> pl.DataFrame:
        self._refuse_another_store(context.upstream_output.definition_metadata)
        store = ContentStore(self.store_url)
        path = self._path(store, context)
        asset = context.asset_key.path[-1]
        try:
            table = store.read_table(path)
        except FileNotFoundError:
            legacy = store.path(layout.legacy_table_path(asset, context.asset_partition_key))
            if not store.exists(legacy):
                raise
            path, table = legacy, store.read_table(legacy)
        self._refuse_another_runs(context, asset, table, store.local_path(path))
        return table

    @staticmethod
    def _refuse_another_runs(context: InputContext, asset: str, table: pl.DataFrame,
                             where: str) -> None:
        if asset not in DATA_VERSION_COLUMNS:  # training_dataset's needs its rejects too
            return
        shard = context.asset_partition_key
        record = context.instance.get_latest_data_version_record(context.asset_key, False,
                                                                 shard)
        event = record.event_log_entry.asset_materialization if record else None
        recorded = event.tags.get(DATA_VERSION_TAG) if event else None
        found = data_version(asset, table).value
        if recorded != found:
            said = (f"this instance recorded data version {recorded}" if recorded else
                    "this instance has no materialization of it")
            raise Failure(description=(
                f"{where} is not the {asset} table of {shard} this instance materialized: it "
                f"holds data version {found}, {said}. Another instance (other settings on "
                f"the same profile and store) wrote it since, or it changed: materialize "
                f"{asset} of {shard} again (with what comes after it)."))


def with_defaults(cls: type[ConfigurableResource], values: dict[str, Any]
                  ) -> type[ConfigurableResource]:
    """`cls` whose fields default to `values`. Dagster builds a resource's run config schema
    from its class, so without this the launchpad would offer the settings' built-in defaults,
    and a run config giving one field of a group would put every other field back to them
    (the store's url to the demo's); with it, it offers the code location's values and a
    run config changes only what it names."""
    namespace: dict[str, Any] = {
        name: Field(default=values[name], description=info.description)
        for name, info in cls.model_fields.items()}
    namespace["__annotations__"] = {name: info.annotation
                                    for name, info in cls.model_fields.items()}
    namespace["__module__"] = cls.__module__
    namespace["__doc__"] = cls.__doc__
    return type(cls.__name__, (cls,), namespace)


def build_resources(settings: Settings) -> dict[str, Any]:
    """The resources of one set of settings, by key (plus the shard-table IO manager), their
    fields defaulting to these settings (what the launchpad shows)."""
    resources: dict[str, Any] = {}
    for key, cls in RESOURCE_CLASSES.items():
        values = getattr(settings, key).model_dump()
        resources[key] = with_defaults(cls, values)(**values)
    tables = {"store_url": settings.store.url, "profile": settings.model.profile}
    resources["io_manager"] = with_defaults(ShardTableIOManager, tables)(**tables)
    return resources
