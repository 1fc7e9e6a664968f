"""T5 in half precision: as transformers loads it vs cast whole (CogVideo finetune/), against
float32, on the same captions in one run.

- "loaded": `T5EncoderModel.from_pretrained(torch_dtype=...)`, what cog-assets, diffusers'
  pipelines and cogvideox-factory's prepare_dataset.py run. transformers' dtype plan keeps the
  `_keep_in_fp32_modules` (`wo`) in float32 for float16 only; bfloat16 is uniform.
- "cast": the same model then `.to(dtype)` whole, as CogVideo's finetune/trainer.py
  (`__move_components_to_device`) does before encoding prompts for its cache.

Models: the tiny profile's T5 with its toy tokenizer and, with `--tokenizer DIR` (a T5
SentencePiece tokenizer folder, e.g. ../shared/media/tokenizer), a toy T5 of the real vocabulary
(32128) with that tokenizer. Both have seeded random weights at d_model 32: the figures show the
rounding the two layouts introduce, not the fp16 overflow in `wo` that real T5 v1.1 XXL weights
produce (the reason transformers keeps it in float32).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402
from transformers import AutoTokenizer, T5Config, T5EncoderModel  # noqa: E402

from cog_assets.demo import DEMO_CLIPS  # noqa: E402
from cog_assets.models.text_encoder import TextEncoder  # noqa: E402
from cog_assets.models.tiny import (  # noqa: E402
    quiet_transformers,
    tiny_text_encoder_dir,
    tiny_tokenizer,
)

CAPTIONS = [clip[4] for clip in DEMO_CLIPS]


@torch.no_grad()
def embeddings(folder: Path, tokenizer, dtype: torch.dtype, cast: bool) -> torch.Tensor:
    with quiet_transformers():
        model = T5EncoderModel.from_pretrained(folder, torch_dtype=dtype).eval()
    if cast:
        model = model.to(dtype)
    return TextEncoder(tokenizer, model, 226).encode(CAPTIONS).float()


def compare(label: str, folder: Path, tokenizer) -> None:
    reference = embeddings(folder, tokenizer, torch.float32, cast=False)
    scale = reference.abs().mean().item()
    for dtype in (torch.bfloat16, torch.float16):
        loaded = embeddings(folder, tokenizer, dtype, cast=False)
        cast = embeddings(folder, tokenizer, dtype, cast=True)
        row = [label, str(dtype).removeprefix("torch.")]
        for name, value in (("loaded", loaded), ("cast", cast)):
            error = (value - reference).abs()
            row += [f"{error.max().item():.2e}", f"{error.mean().item() / scale:.2e}"]
        between = (loaded - cast).abs()
        row += [f"{between.max().item():.2e}", "identical" if torch.equal(loaded, cast)
                else "differ"]
        print(" | ".join(row))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tokenizer", type=Path,
                        help="a T5 SentencePiece tokenizer folder (e.g. ../shared/media/tokenizer)")
    args = parser.parse_args()
    print("model | dtype | loaded: max abs err | mean rel err | cast: max abs err | mean rel "
          "err | loaded vs cast: max abs | same?")
    tokenizer = tiny_tokenizer()
    compare("tiny T5 (toy vocab)", tiny_text_encoder_dir(len(tokenizer), 32), tokenizer)
    if args.tokenizer:
        with tempfile.TemporaryDirectory() as folder:
            torch.manual_seed(0)
            config = T5Config(vocab_size=32128, d_model=32, d_kv=8, d_ff=64, num_layers=2,
                              num_heads=4, feed_forward_proj="gated-gelu",
                              tie_word_embeddings=False)
            with quiet_transformers():
                T5EncoderModel(config).save_pretrained(folder)
            compare("toy T5, real tokenizer", Path(folder),
                    AutoTokenizer.from_pretrained(args.tokenizer))


if __name__ == "__main__":
    main()
