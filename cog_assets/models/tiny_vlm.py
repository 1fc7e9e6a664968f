"""A seeded toy image-text-to-text model (`caption_model=tiny`): a real transformers VLM at
toy width, saved once per process and loaded like real weights, so the local captioner's whole
path (AutoProcessor, AutoModelForImageTextToText, the chat template, batched `generate`) runs on
a CPU with nothing downloaded.

It is LLaVA's layout (a CLIP vision tower, a projector, a Qwen2 language model) with two layers
of width 32 and a word-level tokenizer over a small English vocabulary, so what it writes is
words. Not Qwen2-VL itself: transformers' Qwen2-VL processor needs torchvision for its video
half, and no CPU build of it matching the pinned torch is installable here.
"""

from __future__ import annotations

import atexit
import shutil
import tempfile
from functools import cache
from pathlib import Path

import torch

from cog_assets.models.tiny import TINY_SEED, _WORDS, quiet_transformers

TINY_VLM = "tiny"  # the caption_model value that selects it
TINY_VLM_IDENTITY = "tiny-vlm-seed0-v1"
IMAGE_SIZE = 28  # the vision tower's input: 2x2 patches of 14
_SPECIAL = ("<pad>", "<s>", "</s>", "<image>", "[UNK]")
_ROLES = ("USER:", "ASSISTANT:", ".", ",")
# One user turn, images first, as Qwen2-VL's and LLaVA's templates place them.
CHAT_TEMPLATE = (
    "{% for m in messages %}{{ m['role'] | upper }}: {% if m['content'] is string %}"
    "{{ m['content'] }}{% else %}{% for c in m['content'] %}{% if c['type'] == 'image' %}"
    "<image> {% elif c['type'] == 'text' %}{{ c['text'] }}{% endif %}{% endfor %}{% endif %} "
    "{% endfor %}{% if add_generation_prompt %}ASSISTANT:{% endif %}")


def _tokenizer():
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {token: i for i, token in enumerate((*_SPECIAL, *_WORDS, *_ROLES))}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok.decoder = decoders.WordPiece(prefix="##")  # words joined by spaces
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>",
                                   pad_token="<pad>", unk_token="[UNK]", padding_side="left",
                                   extra_special_tokens={"image_token": "<image>"})


def save_tiny_vlm(folder: Path) -> Path:
    """The toy VLM, its processor and chat template, saved in `folder` as a hub model is."""
    from transformers import (
        CLIPImageProcessor,
        LlavaConfig,
        LlavaForConditionalGeneration,
        LlavaProcessor,
    )

    tokenizer = _tokenizer()
    ids = tokenizer.convert_tokens_to_ids
    processor = LlavaProcessor(
        image_processor=CLIPImageProcessor(size={"shortest_edge": IMAGE_SIZE},
                                           crop_size={"height": IMAGE_SIZE, "width": IMAGE_SIZE}),
        tokenizer=tokenizer, chat_template=CHAT_TEMPLATE, patch_size=14,
        vision_feature_select_strategy="default", num_additional_image_tokens=1)
    config = LlavaConfig(
        text_config=dict(model_type="qwen2", vocab_size=len(tokenizer), hidden_size=32,
                         intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                         num_key_value_heads=2, max_position_embeddings=2048,
                         bos_token_id=ids("<s>"), eos_token_id=ids("</s>"),
                         pad_token_id=ids("<pad>")),
        vision_config=dict(model_type="clip_vision_model", hidden_size=32,
                           intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                           image_size=IMAGE_SIZE, patch_size=14, projection_dim=32),
        image_token_id=ids("<image>"), vision_feature_layer=-1,
        vision_feature_select_strategy="default", projector_hidden_act="gelu")
    torch.manual_seed(TINY_SEED)
    with quiet_transformers():
        LlavaForConditionalGeneration(config).eval().save_pretrained(folder)
        processor.save_pretrained(folder)
    return folder


@cache
def tiny_vlm_dir() -> Path:
    """The toy VLM saved once per process (a temporary folder removed at exit)."""
    folder = Path(tempfile.mkdtemp(prefix="cog-assets-tiny-vlm-"))
    atexit.register(shutil.rmtree, folder, ignore_errors=True)
    return save_tiny_vlm(folder)
