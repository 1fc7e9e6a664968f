"""The CogVideoX VAE: load it once per step and turn uint8 frames into posterior moments."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import torch

from cog_assets.models.cpu_convs import route_convs_to_onednn
from cog_assets.models.tiny import tiny_vae
from cog_assets.models.weights import WeightsSource, check_loaded

if TYPE_CHECKING:  # imported where a VAE is loaded: importing this module stays light
    from diffusers import AutoencoderKLCogVideoX


def load_vae(source: WeightsSource, device: torch.device, dtype: torch.dtype,
             slicing: bool = False, tiling: bool = False,
             onednn_convs: bool = True) -> AutoencoderKLCogVideoX:
    """The profile's VAE on `device`; on the CPU its 3-D convolutions run through oneDNN
    (models/cpu_convs.py: 5.5x faster for narrow layers) unless `onednn_convs` is False, which
    keeps diffusers' default path (the peer baselines of bench/)."""
    profile = source.profile
    if torch.device(device).type == "cuda":  # TF32 for what runs in float32 (bf16 is default)
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    if source.is_tiny():
        vae = tiny_vae(profile.scaling_factor, profile.invert_scale_latents)
        if dtype != torch.float32:
            vae = vae.to(dtype=dtype)
    else:  # loaded in the dtype asked for: diffusers keeps its fp32 modules where it must
        from diffusers import AutoencoderKLCogVideoX

        vae = AutoencoderKLCogVideoX.from_pretrained(
            source.location, subfolder="vae", revision=source.revision, torch_dtype=dtype
        )
        check_loaded(source, "vae", vae.config)  # its scaling, channels: the profile's
    vae = vae.to(device=device).eval()
    if onednn_convs and torch.device(device).type == "cpu":
        route_convs_to_onednn(vae)
    if slicing:
        vae.enable_slicing()
    if tiling:
        vae.enable_tiling()
    return vae


def frames_to_vae_input(frames: np.ndarray | torch.Tensor) -> torch.Tensor:
    """uint8 [B, F, H, W, 3] or [F, H, W, 3] -> float [B, 3, F, H, W] in [-1, 1] (x/127.5 - 1)."""
    tensor = torch.as_tensor(frames)
    if tensor.ndim == 4:
        tensor = tensor.unsqueeze(0)
    return tensor.permute(0, 4, 1, 2, 3).float().div(127.5).sub(1.0)


def vae_input_on_device(x: torch.Tensor, device: torch.device, dtype: torch.dtype
                        ) -> torch.Tensor:
    """The VAE's input on its device: a batch the reader left as uint8 frames (for a GPU, or
    for the VAE process) is normalised there, with frames_to_vae_input's arithmetic."""
    x = x.to(device, non_blocking=True)
    if x.dtype == torch.uint8:
        x = frames_to_vae_input(x).to(dtype=dtype)
    return x
