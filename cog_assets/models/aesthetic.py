"""An aesthetic score per image: CLIP image embeddings through a small MLP head.

This is the shape of LAION's improved aesthetic predictor (used by Open-Sora's and
EasyAnimate's data pipelines): the L2-normalised CLIP image embedding goes through a stack of
linear layers (its dropouts do nothing at inference, and it has no activations) to one number,
about 1-10. Weights come from a local directory, never downloaded:

    <dir>/clip/                       a transformers CLIP model with its preprocessor config
                                      (CLIPModel or CLIPVisionModelWithProjection, e.g.
                                      openai/clip-vit-large-patch14 saved by save_pretrained)
    <dir>/aesthetic_head.safetensors  the head's layers `layers.<i>.weight` / `layers.<i>.bias`,
                                      applied in order of i (the keys of LAION's
                                      sac+logos+ava1-l14-linearMSE.pth, saved as safetensors)
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file

from cog_assets.models.weights import directory_fingerprint

CLIP_DIR = "clip"
HEAD_FILE = "aesthetic_head.safetensors"
_LAYER = re.compile(r"layers\.(\d+)\.(weight|bias)")


class AestheticWeightsError(ValueError):
    """The aesthetic weights directory is missing a part or holds something else."""


def _check(directory: Path) -> None:
    missing = [name for name in (CLIP_DIR, HEAD_FILE) if not (directory / name).exists()]
    if missing:
        raise AestheticWeightsError(
            f"aesthetic_weights {directory} lacks {', '.join(missing)}: it needs {CLIP_DIR}/ "
            f"(a transformers CLIP model) and {HEAD_FILE} (the MLP head)")


def aesthetic_identity(directory: str | Path) -> str:
    """A short identity of the weights for artefact keys (names, sizes, heads and tails)."""
    directory = Path(directory)
    _check(directory)
    return f"aesthetic:{directory_fingerprint(directory)}"


def _head_layers(path: Path) -> list[tuple[torch.Tensor, torch.Tensor]]:
    tensors = load_file(str(path))
    found: dict[int, dict[str, torch.Tensor]] = {}
    for key, value in tensors.items():
        match = _LAYER.fullmatch(key)
        if not match:
            raise AestheticWeightsError(f"{path}: unexpected tensor {key!r}; the head holds "
                                        "layers.<i>.weight and layers.<i>.bias only")
        found.setdefault(int(match.group(1)), {})[match.group(2)] = value.float()
    layers = []
    for index in sorted(found):
        if set(found[index]) != {"weight", "bias"}:
            raise AestheticWeightsError(f"{path}: layer {index} needs both weight and bias")
        layers.append((found[index]["weight"], found[index]["bias"]))
    if not layers or layers[-1][0].shape[0] != 1:
        raise AestheticWeightsError(f"{path}: the last layer must give one number per image")
    return layers


class AestheticScorer:
    """Loads once; `score(images)` gives one float per RGB uint8 image, on the CPU."""

    def __init__(self, directory: str | Path):
        from transformers import CLIPImageProcessor, CLIPVisionModelWithProjection

        directory = Path(directory)
        _check(directory)
        self.processor = CLIPImageProcessor.from_pretrained(directory / CLIP_DIR)
        self.model = CLIPVisionModelWithProjection.from_pretrained(directory / CLIP_DIR).eval()
        self.layers = _head_layers(directory / HEAD_FILE)
        width = self.model.config.projection_dim
        if self.layers[0][0].shape[1] != width:
            raise AestheticWeightsError(
                f"{directory / HEAD_FILE}: the head takes {self.layers[0][0].shape[1]} inputs "
                f"but the CLIP model embeds images in {width}")

    @torch.no_grad()
    def score(self, images: list[np.ndarray]) -> list[float]:
        inputs = self.processor(images=images, return_tensors="pt")
        embeds = self.model(pixel_values=inputs["pixel_values"]).image_embeds.float()
        x = embeds / embeds.norm(dim=-1, keepdim=True)
        for weight, bias in self.layers:
            x = x @ weight.T + bias
        return x[:, 0].tolist()
