"""A local image-text-to-text model (a VLM) that writes a caption from a clip's frames.

Any model transformers ships an `AutoModelForImageTextToText` class and a processor with a
chat template for (Qwen2-VL, Qwen2.5-VL, LLaVA, Idefics3, Gemma 3, ...; no code from the
model's repository unless `trust_remote_code`). The frames go in as images of one user turn,
followed by the prompt; clips are generated for in batches, greedily at temperature 0.

Loaded once per process and kept (`PROCESS_MODELS`, as the VAE and T5 are), in bfloat16 on a
GPU and float32 on a CPU unless the dtype setting says otherwise. Qwen2-VL's processor needs
torchvision (its video half): install the build that matches your torch.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from cog_assets.models.devices import dtype_name
from cog_assets.models.runtime import PROCESS_MODELS
from cog_assets.models.tiny import quiet_transformers
from cog_assets.models.tiny_vlm import TINY_VLM, TINY_VLM_IDENTITY, tiny_vlm_dir
from cog_assets.models.weights import directory_fingerprint


def vlm_identity(model: str, revision: str | None, dtype: str) -> str:
    """What decides a local model's captions besides its inputs: its weights (a directory's
    fingerprint, or hub id and revision) and the dtype it runs in."""
    if model == TINY_VLM:
        weights = TINY_VLM_IDENTITY
    elif Path(model).is_dir():
        weights = f"dir:{directory_fingerprint(Path(model))}"
    else:
        weights = f"hub:{model}@{revision or 'main'}"
    return f"{weights}/{dtype}"


@dataclass
class ImageTextModel:
    processor: Any
    model: Any
    identity: str

    @torch.no_grad()
    def describe(self, clips: list[np.ndarray], prompt: str, max_new_tokens: int,
                 temperature: float, seed: int = 0) -> list[str]:
        """One caption per clip (uint8 [n, h, w, 3] frames each), written in one batch."""
        from PIL import Image

        texts, images = [], []
        for frames in clips:
            content = [{"type": "image"} for _ in frames] + [{"type": "text", "text": prompt}]
            texts.append(self.processor.apply_chat_template(
                [{"role": "user", "content": content}], add_generation_prompt=True))
            images.append([Image.fromarray(frame) for frame in frames])
        inputs = self.processor(text=texts, images=images, return_tensors="pt", padding=True)
        inputs = inputs.to(self.model.device)
        if "pixel_values" in inputs:
            inputs["pixel_values"] = inputs["pixel_values"].to(self.model.dtype)
        sampling = {"do_sample": True, "temperature": temperature} if temperature > 0 else {
            "do_sample": False}
        if temperature > 0:
            torch.manual_seed(seed)
        out = self.model.generate(**inputs, max_new_tokens=max_new_tokens, **sampling)
        written = out[:, inputs["input_ids"].shape[1]:]
        return [text.strip() for text in
                self.processor.batch_decode(written, skip_special_tokens=True)]


def load_image_text_model(model: str, revision: str | None, device: torch.device,
                          dtype: torch.dtype, trust_remote_code: bool = False) -> ImageTextModel:
    """The processor and model of `model` (a directory, a hub id, or `tiny`), on `device`."""
    from transformers import AutoModelForImageTextToText, AutoProcessor

    location = str(tiny_vlm_dir()) if model == TINY_VLM else model
    hub = {"revision": revision, "trust_remote_code": trust_remote_code}
    with quiet_transformers():
        processor = AutoProcessor.from_pretrained(location, **hub)
        network = AutoModelForImageTextToText.from_pretrained(location, dtype=dtype, **hub)
    tokenizer = getattr(processor, "tokenizer", None)
    if tokenizer is not None:
        tokenizer.padding_side = "left"  # batched generation continues every row at its end
    network = network.to(device).eval()
    return ImageTextModel(processor, network, vlm_identity(model, revision, dtype_name(dtype)))


def process_image_text_model(model: str, revision: str | None, device: torch.device,
                             dtype: torch.dtype, trust_remote_code: bool = False
                             ) -> ImageTextModel:
    """`load_image_text_model`, once per process: kept while model, dtype and device stay."""
    key = (vlm_identity(model, revision, dtype_name(dtype)), trust_remote_code, str(device))
    return PROCESS_MODELS.get("captioner", key, lambda: load_image_text_model(
        model, revision, device, dtype, trust_remote_code))
