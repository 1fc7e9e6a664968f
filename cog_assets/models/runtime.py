"""The models a run uses, on its device: their identities (part of every artefact key) and
their loaders. Built from the model and device settings; knows nothing of Dagster.

Models are loaded once per process and kept: every step and every shard a process runs (a
backfill's shards, the runs of a worker) reuses them while their identity, device and dtype
stay the same. A process holds one model of each kind; asking for another (other weights,
dtype or GPU) frees the old one first. On a multi-GPU host a GPU step claims a free GPU for
its duration (`step_device`), so concurrent GPU steps each run on their own device.
"""

from __future__ import annotations

import gc
import os
import threading
from collections.abc import Callable, Hashable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import cached_property
from typing import TYPE_CHECKING, Any, TypeVar

import torch

from cog_assets.core.choices import Dtype
from cog_assets.core.config import DeviceSettings, ModelSettings
from cog_assets.core.keys import TextIdentity, VaeIdentity
from cog_assets.core.profiles import ModelProfile, get_profile
from cog_assets.models import vae_process
from cog_assets.models.device_slots import claim_gpu, needs_claim
from cog_assets.models.devices import dtype_name, resolve_device, resolve_dtype
from cog_assets.models.text_encoder import (
    TextEncoder,
    count_tokens,
    load_text_encoder,
    load_tokenizer,
    precision_of,
)
from cog_assets.models.token_counts import TokenCountCache
from cog_assets.models.vae import load_vae
from cog_assets.models.vae_compile import BucketEncoder, bucket_encoder
from cog_assets.models.weights import WeightsSource, effective_profile

if TYPE_CHECKING:  # loaded on first use: judging which shards need a run imports neither
    from diffusers import AutoencoderKLCogVideoX
    from transformers import PreTrainedTokenizerBase

T = TypeVar("T")


class _ProcessModels:
    """One loaded model per kind ("vae", "text_encoder", "tokenizer"), keyed by what it is."""

    def __init__(self):
        self._held: dict[str, tuple[Hashable, Any]] = {}
        self._lock = threading.Lock()
        self.loads = 0  # models loaded by this process so far (tests and benchmarks read it)

    def get(self, kind: str, key: Hashable, load: Callable[[], T]) -> T:
        _finish_background_imports()  # never import the same packages from two threads
        with self._lock:
            held = self._held.get(kind)
            if held is not None and held[0] == key and getattr(held[1], "alive", True):
                return held[1]
            if held is not None:
                self._drop(kind)
            model = load()
            self.loads += 1
            self._held[kind] = (key, model)
            return model

    def holds(self, kind: str, key: Hashable) -> bool:
        """Whether a live model of `kind` is held for `key`."""
        with self._lock:
            held = self._held.get(kind)
            return held is not None and held[0] == key and getattr(held[1], "alive", True)

    def keep_only_device(self, device: torch.device) -> None:
        """Free the models this process holds on other GPUs than `device` (the one it now
        claimed), so an idle process never sits on a GPU another step has claimed."""
        with self._lock:
            for kind, (key, _model) in list(self._held.items()):
                held_device = key[-1] if isinstance(key, tuple) else None
                if isinstance(held_device, str) and held_device.startswith("cuda") \
                        and held_device != str(device):
                    self._drop(kind)

    def devices(self) -> set[str]:
        return {key[-1] for key, _ in self._held.values()
                if isinstance(key, tuple) and isinstance(key[-1], str)}

    def clear(self) -> None:
        with self._lock:
            for kind in list(self._held):
                self._drop(kind)

    def _drop(self, kind: str) -> None:
        _key, model = self._held.pop(kind)
        if isinstance(model, vae_process.VaeProcess):
            model.close()
        del model
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()


PROCESS_MODELS = _ProcessModels()


def import_model_code_in_background() -> threading.Thread:
    """Import the VAE's and T5's code (diffusers, transformers: seconds of imports) in a
    background thread, so a process about to run shards on a GPU pays for it while its first
    steps hash, probe and decode rather than when its first model loads. (On the CPU, where
    the VAE runs in a child, nothing is imported ahead: under the GIL these imports took
    3-4 s from the steps of a run that needed neither model.)"""

    def work() -> None:
        try:
            import diffusers.models.autoencoders.autoencoder_kl_cogvideox  # noqa: F401
            import transformers.models.t5.modeling_t5  # noqa: F401
        except Exception:  # noqa: BLE001 - the step that loads the model reports it
            pass

    global _IMPORTING
    _finish_background_imports()
    thread = threading.Thread(target=work, name="cog-assets-import-models", daemon=True)
    _IMPORTING = thread
    thread.start()
    return thread


_IMPORTING: threading.Thread | None = None


def _finish_background_imports() -> None:
    if _IMPORTING is not None and _IMPORTING is not threading.current_thread():
        _IMPORTING.join()


def visible_gpus() -> int:
    return torch.cuda.device_count() if torch.cuda.is_available() else 0


@dataclass(frozen=True)
class ModelRuntime:
    model: ModelSettings
    device: DeviceSettings

    @cached_property
    def profile(self) -> ModelProfile:
        """The profile the weights are used with: a tiny profile with weights of its own takes
        their VAE scaling, latent channels and text width; a named profile whose local weights
        disagree is refused here (WeightsMismatch), hub weights when they load."""
        return effective_profile(WeightsSource(get_profile(self.model.profile),
                                               self.model.weights, self.model.revision))

    @cached_property
    def weights(self) -> WeightsSource:
        return WeightsSource(self.profile, self.model.weights, self.model.revision)

    @cached_property
    def torch_device(self) -> torch.device:
        """The device setting resolved (`auto`: `cuda` or `cpu`), before any GPU is claimed."""
        return resolve_device(self.device.device)

    @cached_property
    def torch_dtype(self) -> torch.dtype:
        return resolve_dtype(self.device.dtype, self.torch_device)

    def vae_identity(self) -> VaeIdentity:
        return VaeIdentity(self.weights.identity("vae"), dtype_name(self.torch_dtype),
                           self.device.vae_tiling)

    def dtype_names(self) -> list[str]:
        """The dtypes the model steps may run in, found without touching a device (the
        frames step, the code server and the CLI may run where the GPU steps' device is not,
        e.g. in a CPU pod): the dtype given, or for `auto` the one of the device given, or
        both of auto's."""
        if self.device.dtype != Dtype.auto:
            return [str(self.device.dtype)]
        if self.device.device == "cpu":
            return ["float32"]
        if self.device.device.startswith("cuda"):
            return ["bfloat16"]
        return ["float32", "bfloat16"]

    def vae_identities(self) -> list[VaeIdentity]:
        """The identities vae_latents may run with (see dtype_names)."""
        return [VaeIdentity(self.weights.identity("vae"), dtype, self.device.vae_tiling)
                for dtype in self.dtype_names()]

    def text_identity(self) -> TextIdentity:
        return TextIdentity(self.weights.identity("text_encoder"), precision_of(self.torch_dtype),
                            self.profile.text_max_length)

    @contextmanager
    def step_device(self) -> Iterator[torch.device]:
        """The device a GPU step runs on. On a host with several GPUs and the device `auto` or
        `cuda`, a free GPU claimed for the step (the one this process's models are on, if
        free); otherwise the device setting itself."""
        count = visible_gpus()
        if not needs_claim(self.device.device, count):
            yield self.torch_device
            return
        held = [int(d.split(":")[1]) for d in PROCESS_MODELS.devices() if d.startswith("cuda:")]
        with claim_gpu(count, self.device.gpu_lock_dir, prefer=held[0] if held else None) as i:
            device = torch.device("cuda", i)
            PROCESS_MODELS.keep_only_device(device)
            torch.cuda.set_device(device)
            yield device

    def _vae_key(self, device: torch.device) -> tuple:
        return (self.weights.identity("vae"), dtype_name(self.torch_dtype),
                self.device.vae_slicing, self.device.vae_tiling, str(device))

    def vae_in_a_child(self, device: torch.device | None = None) -> bool:
        """Whether the VAE on `device` runs in a child process here (on the CPU, inside
        vae_process.serving); if so, one is started now unless one holds this VAE already.
        Where none can start, the VAE loads in this process (vae_process.start says why)."""
        device = device or self.torch_device
        if not (vae_process.in_use() and device.type == "cpu"):
            return False
        if not PROCESS_MODELS.holds("vae process", self._vae_key(device)):
            vae_process.start()
        return vae_process.in_use()

    def vae(self, device: torch.device | None = None
            ) -> AutoencoderKLCogVideoX | vae_process.VaeProcess:
        """The VAE on `device` (default: the resolved setting), loaded once per process; on
        the CPU while a backfill runs its shards here (vae_process.serving), in a child
        process (models/vae_process.py says why)."""
        device = device or self.torch_device
        key = self._vae_key(device)
        if self.vae_in_a_child(device):
            return PROCESS_MODELS.get("vae process", key, lambda: vae_process.take().load(
                self.weights, self.torch_dtype, self.device.vae_slicing,
                self.device.vae_tiling))
        return PROCESS_MODELS.get("vae", key, lambda: load_vae(
            self.weights, device, self.torch_dtype, self.device.vae_slicing,
            self.device.vae_tiling))

    def vae_encoder_for(self, cache_dir: str | os.PathLike | None
                        ) -> Callable[[AutoencoderKLCogVideoX, tuple[int, ...], int],
                                      BucketEncoder]:
        """Each bucket's encoder, eager or compiled by the vae_compile setting, with
        inductor's cache and the measured compile costs in `cache_dir`."""
        identity = self.vae_identity()
        variant = identity.dtype + (" tiled" if identity.tiling else "") + \
            (" sliced" if self.device.vae_slicing else "")
        how = {"policy": self.device.vae_compile, "cache_dir": cache_dir,
               "model": identity.model, "dtype": variant}
        return lambda vae, shape, clips: (
            vae.bucket_encoder(shape, clips, **how)
            if isinstance(vae, vae_process.VaeProcess) else
            bucket_encoder(vae, shape, clips, **how))

    def text_encoder(self, device: torch.device | None = None) -> TextEncoder:
        """T5 on `device` (default: the resolved setting), loaded once per process."""
        device = device or self.torch_device
        key = (self.weights.identity("text_encoder"), dtype_name(self.torch_dtype), str(device))
        return PROCESS_MODELS.get("text_encoder", key, lambda: load_text_encoder(
            self.weights, device, self.torch_dtype))

    def tokenizer(self) -> PreTrainedTokenizerBase:
        return PROCESS_MODELS.get("tokenizer", (self.weights.identity("tokenizer"),),
                                  lambda: load_tokenizer(self.weights))

    def token_counter(self, cache_dir: str | os.PathLike | None = None
                      ) -> Callable[[list[str]], list[int]]:
        """Untruncated caption token counts with the profile's real tokenizer; with
        `cache_dir`, remembered there (models/token_counts.py), and the tokenizer loaded only
        for a caption it has not counted before."""
        if cache_dir is None:
            tokenizer = self.tokenizer()
            return lambda captions: count_tokens(tokenizer, captions)
        cache = TokenCountCache(cache_dir, self.weights.identity("tokenizer"))
        return lambda captions: cache.counts(
            captions, lambda new: count_tokens(self.tokenizer(), new))
