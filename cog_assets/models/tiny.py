"""The `tiny` profile's models: the real classes at toy width with seeded random weights.

Tests and the demo run these on a CPU with nothing downloaded. The architecture is the real
one (AutoencoderKLCogVideoX, T5EncoderModel, a SentencePiece-style Unigram tokenizer with T5's
special tokens), so every code path that runs on real weights runs here too.
"""

from __future__ import annotations

import atexit
import shutil
import string
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from tokenizers import (
    Tokenizer,
    decoders,
    models,
    normalizers,
    pre_tokenizers,
    processors,
)

if TYPE_CHECKING:  # imported where used: `import cog_assets.models.weights` stays light
    from diffusers import AutoencoderKLCogVideoX
    from transformers import PreTrainedTokenizerFast, T5EncoderModel

TINY_SEED = 0
TINY_IDENTITY = "tiny-seed0-v2"  # v2: the VAE's tiles aligned as the real one's

_WORDS = (
    "a the of and in on with to is at by from an its into over under near through while "
    "red green blue yellow white black orange purple bright dark small large moving square "
    "circle ball camera slowly quickly across left right up down sky water forest city street "
    "person dog cat car bird tree sun light shadow video scene frame close view shot"
).split()


def tiny_vae(scaling_factor: float, invert_scale_latents: bool = False) -> AutoencoderKLCogVideoX:
    """Four down blocks (8x spatial, 4x temporal) and 16 latent channels, as the real VAE.

    Its sample size sets the tiles of `enable_tiling` as the real VAE's 480x720 does: tiles of
    half the sample size, whose steps (5/6 of a tile's height, 4/5 of its width) are whole
    latent pixels, so tiled latents have the untiled shape (64x96 would give 26- and 38-pixel
    steps, and one latent row too many)."""
    from diffusers import AutoencoderKLCogVideoX

    torch.manual_seed(TINY_SEED)
    return AutoencoderKLCogVideoX(
        block_out_channels=(8, 8, 16, 16), layers_per_block=1, norm_num_groups=4,
        latent_channels=16, sample_height=96, sample_width=160, scaling_factor=scaling_factor,
        invert_scale_latents=invert_scale_latents,
    ).eval()


def tiny_tokenizer() -> PreTrainedTokenizerFast:
    """A Unigram tokenizer with T5's conventions: <pad>=0, </s>=1 appended, <unk>=2, '▁' spaces."""
    pieces = ["<pad>", "</s>", "<unk>"]
    pieces += [f"▁{w}" for w in _WORDS]
    pieces += ["▁"] + list(string.ascii_lowercase + string.ascii_uppercase + string.digits)
    pieces += list(string.punctuation)
    vocab = [(p, 0.0) for p in pieces[:3]] + [
        (p, -1.0 if p.startswith("▁") and len(p) > 1 else -5.0) for p in pieces[3:]
    ]
    tok = Tokenizer(models.Unigram(vocab, unk_id=2, byte_fallback=False))
    tok.normalizer = normalizers.NFKC()
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always")
    tok.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="always")
    tok.post_processor = processors.TemplateProcessing(
        single="$A </s>", pair="$A </s> $B </s>", special_tokens=[("</s>", 1)]
    )
    from transformers import PreTrainedTokenizerFast

    return PreTrainedTokenizerFast(
        tokenizer_object=tok, pad_token="<pad>", eos_token="</s>", unk_token="<unk>",
        model_max_length=512,
    )


def tiny_text_encoder(vocab_size: int, d_model: int) -> T5EncoderModel:
    """T5 v1.1 layout (gated-gelu, no bias) at d_model=32, two layers."""
    from transformers import T5Config, T5EncoderModel

    torch.manual_seed(TINY_SEED)
    config = T5Config(
        vocab_size=vocab_size, d_model=d_model, d_kv=8, d_ff=64, num_layers=2, num_heads=4,
        feed_forward_proj="gated-gelu", relative_attention_num_buckets=8,
        relative_attention_max_distance=32, tie_word_embeddings=False,
    )
    return T5EncoderModel(config).eval()


@cache
def tiny_text_encoder_dir(vocab_size: int, d_model: int) -> Path:
    """The seeded tiny T5 saved in diffusers/transformers layout (once per process), so it is
    loaded by `T5EncoderModel.from_pretrained` like real weights: same dtype handling."""
    folder = Path(tempfile.mkdtemp(prefix="cog-assets-tiny-t5-"))
    atexit.register(shutil.rmtree, folder, ignore_errors=True)
    with quiet_transformers():
        tiny_text_encoder(vocab_size, d_model).save_pretrained(folder)
    return folder


@contextmanager
def quiet_transformers() -> Iterator[None]:
    """No progress bars for the toy models' save and load (they take milliseconds)."""
    from transformers.utils import logging as transformers_logging

    enabled = transformers_logging.is_progress_bar_enabled()
    transformers_logging.disable_progress_bar()
    try:
        yield
    finally:
        if enabled:
            transformers_logging.enable_progress_bar()
