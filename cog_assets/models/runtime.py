"""The models a run uses, on its device: their identities (part of every artefact key) and
their loaders. Built from the model and device settings; knows nothing of Dagster."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property

import torch
from diffusers import AutoencoderKLCogVideoX

from cog_assets.choices import Dtype
from cog_assets.config import DeviceSettings, ModelSettings
from cog_assets.devices import dtype_name, resolve_device, resolve_dtype
from cog_assets.models.text_encoder import (
    TextEncoder,
    count_tokens,
    load_text_encoder,
    load_tokenizer,
    precision_of,
)
from cog_assets.models.vae import load_vae
from cog_assets.models.weights import WeightsSource
from cog_assets.profiles import ModelProfile, get_profile
from cog_assets.stages.embeddings import TextIdentity
from cog_assets.stages.latents import VaeIdentity


@dataclass(frozen=True)
class ModelRuntime:
    model: ModelSettings
    device: DeviceSettings

    @cached_property
    def profile(self) -> ModelProfile:
        return get_profile(self.model.profile)

    @cached_property
    def weights(self) -> WeightsSource:
        return WeightsSource(self.profile, self.model.weights, self.model.revision)

    @cached_property
    def torch_device(self) -> torch.device:
        return resolve_device(self.device.device)

    @cached_property
    def torch_dtype(self) -> torch.dtype:
        return resolve_dtype(self.device.dtype, self.torch_device)

    def vae_identity(self) -> VaeIdentity:
        return VaeIdentity(self.weights.identity("vae"), dtype_name(self.torch_dtype),
                           self.device.vae_tiling)

    def vae_identities(self) -> list[VaeIdentity]:
        """The identities vae_latents may run with, found without touching a device (the
        frames step may run where the GPU steps' device is not, e.g. in a CPU pod): the
        dtype given, or for `auto` the one of the device given, or both of auto's."""
        if self.device.dtype != Dtype.auto:
            dtypes = [str(self.device.dtype)]
        elif self.device.device == "cpu":
            dtypes = ["float32"]
        elif self.device.device.startswith("cuda"):
            dtypes = ["bfloat16"]
        else:
            dtypes = ["float32", "bfloat16"]
        return [VaeIdentity(self.weights.identity("vae"), dtype, self.device.vae_tiling)
                for dtype in dtypes]

    def text_identity(self) -> TextIdentity:
        return TextIdentity(self.weights.identity("text_encoder"), precision_of(self.torch_dtype),
                            self.profile.text_max_length)

    def load_vae(self) -> AutoencoderKLCogVideoX:
        return load_vae(self.weights, self.torch_device, self.torch_dtype,
                        self.device.vae_slicing, self.device.vae_tiling)

    def load_text_encoder(self) -> TextEncoder:
        return load_text_encoder(self.weights, self.torch_device, self.torch_dtype)

    def token_counter(self) -> Callable[[list[str]], list[int]]:
        """Untruncated caption token counts with the profile's real tokenizer."""
        tokenizer = load_tokenizer(self.weights)
        return lambda captions: count_tokens(tokenizer, captions)
