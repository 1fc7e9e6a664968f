"""The T5 text encoder with the settings every CogVideoX model was trained with.

226 tokens, padding to max_length, truncation, special tokens added, no attention mask passed
to the encoder, the last hidden state kept (DESIGN §5).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from typing import TYPE_CHECKING

from cog_assets.models.tiny import tiny_text_encoder, tiny_tokenizer
from cog_assets.models.weights import WeightsSource

if TYPE_CHECKING:  # imported where a model is loaded: importing this module stays light
    from transformers import PreTrainedTokenizerBase, T5EncoderModel


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
    tokenizer = load_tokenizer(source)
    if source.is_tiny():
        model = tiny_text_encoder(len(tokenizer), source.profile.text_dim)
    else:
        from transformers import T5EncoderModel

        model = T5EncoderModel.from_pretrained(
            source.location, subfolder="text_encoder", revision=source.revision,
            torch_dtype=dtype,
        )
    model = model.to(device=device, dtype=dtype).eval()
    return TextEncoder(tokenizer, model, source.profile.text_max_length)
