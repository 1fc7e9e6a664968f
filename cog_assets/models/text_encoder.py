"""The T5 text encoder with the settings every CogVideoX model was trained with.

226 tokens, padding to max_length, truncation, special tokens added, no attention mask passed
to the encoder, the last hidden state kept (DESIGN §5).

Precision: T5 is loaded by `T5EncoderModel.from_pretrained(torch_dtype=...)` and never cast
whole afterwards, so it runs in the dtype layout transformers gives it. In float16 that keeps
the modules of `_keep_in_fp32_modules` (`wo`, whose activations overflow fp16 in T5 v1.1) in
float32; bfloat16 and float32 are uniform (transformers' `_get_dtype_plan`). diffusers'
pipelines and cogvideox-factory's prepare_dataset.py load it the same way; CogVideo's
finetune/trainer.py casts every component whole (`__move_components_to_device`).
`bench/bench_t5_precision.py` measures the difference.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch

from cog_assets.models.devices import dtype_name
from cog_assets.models.tiny import (
    quiet_transformers,
    tiny_text_encoder_dir,
    tiny_tokenizer,
)
from cog_assets.models.weights import WeightsSource, check_loaded

if TYPE_CHECKING:  # imported where a model is loaded: importing this module stays light
    from transformers import PreTrainedTokenizerBase, T5EncoderModel


def precision_of(dtype: torch.dtype) -> str:
    """The dtype layout T5 runs in when loaded in `dtype` (part of the embeddings' key):
    float16 keeps `_keep_in_fp32_modules` in float32, as transformers loads it."""
    if dtype != torch.float16:  # (asked first: no transformers import when it is not needed)
        return dtype_name(dtype)
    from transformers import T5EncoderModel

    kept = sorted(T5EncoderModel._keep_in_fp32_modules or [])
    if kept:
        return f"float16/{','.join(kept)}=float32"
    return dtype_name(dtype)


@dataclass
class TextEncoder:
    tokenizer: PreTrainedTokenizerBase
    model: T5EncoderModel
    max_length: int

    def tokenize(self, captions: list[str]) -> torch.Tensor:
        return self.tokenizer(
            captions, padding="max_length", max_length=self.max_length, truncation=True,
            add_special_tokens=True, return_tensors="pt",
        ).input_ids

    @torch.no_grad()
    def encode(self, captions: list[str]) -> torch.Tensor:
        """[B, L, D] last hidden state, on the CPU."""
        ids = self.tokenize(captions).to(self.model.device)
        return self.model(ids)[0].cpu()


def count_tokens(tokenizer: PreTrainedTokenizerBase, captions: list[str]) -> list[int]:
    """Untruncated token counts (with </s>), so over-long captions can be flagged."""
    ids = tokenizer(captions, add_special_tokens=True, truncation=False, verbose=False).input_ids
    return [len(row) for row in ids]


def load_tokenizer(source: WeightsSource) -> PreTrainedTokenizerBase:
    if source.is_tiny():
        return tiny_tokenizer()
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(source.location, subfolder="tokenizer",
                                         revision=source.revision)


def load_text_encoder(source: WeightsSource, device: torch.device, dtype: torch.dtype
                      ) -> TextEncoder:
    """T5 in `dtype` as transformers loads it (see the module's note on precision)."""
    from transformers import T5EncoderModel

    tokenizer = load_tokenizer(source)
    if source.is_tiny():
        with quiet_transformers():
            model = T5EncoderModel.from_pretrained(
                tiny_text_encoder_dir(len(tokenizer), source.profile.text_dim), torch_dtype=dtype)
    else:
        model = T5EncoderModel.from_pretrained(
            source.location, subfolder="text_encoder", revision=source.revision,
            torch_dtype=dtype,
        )
        check_loaded(source, "text_encoder", model.config.to_dict())
        check_loaded(source, "tokenizer", {"model_max_length": tokenizer.model_max_length})
    model = model.to(device=device).eval()  # no dtype: a whole cast would undo its fp32 layers
    return TextEncoder(tokenizer, model, source.profile.text_max_length)
