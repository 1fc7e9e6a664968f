"""Dagster resources: the dataset, the store, the model weights and the device."""


from typing import Optional

import torch
from dagster import ConfigurableIOManager, ConfigurableResource, InputContext, OutputContext

import polars as pl

from cog_assets.devices import dtype_name, resolve_device, resolve_dtype
from cog_assets.models.text_encoder import (TextEncoder, count_tokens, load_text_encoder,
                                             load_tokenizer)
from cog_assets.models.vae import load_vae
from cog_assets.models.weights import WeightsSource
from cog_assets.profiles import ModelProfile, get_profile
from cog_assets.sources import SourceConfig
from cog_assets.stages.embeddings import TextIdentity
from cog_assets.frame_policy import FramePolicy
from cog_assets.media.limits import MediaLimits
from cog_assets.stages.latents import VaeIdentity
from cog_assets.store import ContentStore


class DatasetResource(ConfigurableResource):
    """Where the raw videos and captions are, and how they are cut into shards and frames."""

    data_root: str
    shard_count: int = 4
    caption_column: Optional[str] = None
    video_column: Optional[str] = None
    image_column: Optional[str] = None
    buckets: Optional[list[str]] = None  # "FxHxW" shapes; default: the profile's own
    token_budget: Optional[int] = None  # or: aspect-ratio buckets within this many tokens
    sample_start: str = "start"  # start, centre or random (seeded)
    seed: int = 0
    resize: str = "cover"  # cover, stretch or crop
    short_clips: str = "reject"  # reject, stride or pad
    max_pixels: int = MediaLimits.max_pixels  # per frame; bigger files are rejected
    max_duration_s: float = MediaLimits.max_duration_s
    max_file_bytes: int = MediaLimits.max_file_bytes
    decode_timeout_s: float = MediaLimits.decode_timeout_s  # per clip

    def limits(self) -> MediaLimits:
        return MediaLimits(max_pixels=self.max_pixels, max_duration_s=self.max_duration_s,
                           max_file_bytes=self.max_file_bytes,
                           decode_timeout_s=self.decode_timeout_s)

    def source_config(self) -> SourceConfig:
        return SourceConfig(self.caption_column, self.video_column, self.image_column)


class StoreResource(ConfigurableResource):
    """The content-addressed store: a local directory or any fsspec URL."""

    url: str

    def open(self) -> ContentStore:
        return ContentStore(self.url)


class ModelResource(ConfigurableResource):
    """Which CogVideoX profile, and where its weights are (local dir or hub id)."""

    profile: str = "tiny"
    weights: Optional[str] = None
    revision: Optional[str] = None

    def model_profile(self) -> ModelProfile:
        return get_profile(self.profile)

    def source(self) -> WeightsSource:
        return WeightsSource(self.model_profile(), self.weights, self.revision)

    def frame_policy(self, dataset: DatasetResource) -> FramePolicy:
        """Raises ProfileError, naming the rule, when the dataset's shapes break the model's."""
        return FramePolicy.build(self.model_profile(), dataset.buckets, dataset.token_budget,
                                 dataset.sample_start, dataset.seed, dataset.resize,
                                 dataset.short_clips)

    def token_counter(self):
        tokenizer = load_tokenizer(self.source())
        return lambda captions: count_tokens(tokenizer, captions)


class DeviceResource(ConfigurableResource):
    """The accelerator GPU steps run on, in what dtype and batch size."""

    device: str = "auto"
    dtype: str = "auto"
    batch_size: int = 1
    text_batch_size: int = 8
    vae_slicing: bool = False
    vae_tiling: bool = False

    def torch_device(self) -> torch.device:
        return resolve_device(self.device)

    def torch_dtype(self) -> torch.dtype:
        return resolve_dtype(self.dtype, self.torch_device())

    def vae_identity(self, models: ModelResource) -> VaeIdentity:
        return VaeIdentity(models.source().identity("vae"), dtype_name(self.torch_dtype()),
                           self.vae_tiling)

    def text_identity(self, models: ModelResource) -> TextIdentity:
        return TextIdentity(models.source().identity("text_encoder"),
                            dtype_name(self.torch_dtype()),
                            models.model_profile().text_max_length)

    def vae_loader(self, models: ModelResource):
        return lambda: load_vae(models.source(), self.torch_device(), self.torch_dtype(),
                                self.vae_slicing, self.vae_tiling)

    def text_loader(self, models: ModelResource):
        def load() -> TextEncoder:
            return load_text_encoder(models.source(), self.torch_device(), self.torch_dtype())
        return load


class ShardTableIOManager(ConfigurableIOManager):
    """Each asset's per-shard table as parquet in the store: tables/<asset>/<shard>.parquet."""

    store_url: str

    def _path(self, store: ContentStore, context: InputContext | OutputContext) -> str:
        asset = "/".join(context.asset_key.path)
        return store.path("tables", asset, f"{context.asset_partition_key}.parquet")

    def handle_output(self, context: OutputContext, obj: pl.DataFrame) -> None:
        store = ContentStore(self.store_url)
        path = self._path(store, context)
        store.write_table(path, obj)
        context.add_output_metadata({"table_path": store.local_path(path)})

    def load_input(self, context: InputContext) -> pl.DataFrame:
        store = ContentStore(self.store_url)
        return store.read_table(self._path(store, context))
