"""T5 as CogVideoX uses it: the real SentencePiece tokenizer's ids, diffusers' prompt encoding,
and the precision transformers loads T5 in (no whole-model cast undoing its fp32 layers)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from diffusers import CogVideoXPipeline
from transformers import T5Config, T5EncoderModel

from cog_assets.core.profiles import get_profile
from cog_assets.models.text_encoder import (
    TextEncoder,
    load_text_encoder,
    load_tokenizer,
    precision_of,
)
from cog_assets.models.tiny import (
    quiet_transformers,
    tiny_text_encoder_dir,
    tiny_tokenizer,
)
from cog_assets.models.weights import WeightsSource, effective_profile

CPU = torch.device("cpu")
CAPTIONS = [
    "A red ball rolls across a wooden floor, filmed from a low angle.",
    "  two  spaces\tand a tab  ",
    "Café crème, naïve façade — 東京 at night 🚀",
    "BW_STYLE A black and white animated scene of a rabbit",
    "a very long caption " * 80,  # over 226 tokens: truncated, </s> kept last
]


@pytest.fixture(scope="module")
def real_tokenizer_dir(shared_media) -> Path:
    folder = shared_media / "tokenizer"
    if not (folder / "spiece.model").is_file():
        pytest.skip(f"no SentencePiece tokenizer at {folder}: the T5 parity tests need the "
                    "corpus's tokenizer/ (spiece.model, tokenizer.json)")
    return folder


def test_token_ids_are_sentencepieces_own_with_eos_and_padding(real_tokenizer_dir):
    """What T5 reads: the SentencePiece pieces of the caption, </s> (1), then <pad> (0) up to
    226, truncated to 225 pieces + </s>; through our loader of a diffusers-layout folder."""
    import sentencepiece

    processor = sentencepiece.SentencePieceProcessor(
        model_file=str(real_tokenizer_dir / "spiece.model"))
    source = WeightsSource(get_profile("cogvideox-5b"), str(real_tokenizer_dir.parent))
    ids = TextEncoder(load_tokenizer(source), None, 226).tokenize(CAPTIONS)
    assert ids.shape == (len(CAPTIONS), 226)
    for caption, row in zip(CAPTIONS, ids.tolist()):
        pieces = processor.encode(caption)[:225] + [1]
        assert row == pieces + [0] * (226 - len(pieces)), caption


def _real_vocab_t5(folder: Path) -> Path:
    """A diffusers-layout folder: the real tokenizer beside a seeded toy T5 of its vocab."""
    torch.manual_seed(0)
    config = T5Config(vocab_size=32128, d_model=32, d_kv=8, d_ff=64, num_layers=2, num_heads=4,
                      feed_forward_proj="gated-gelu", tie_word_embeddings=False)
    with quiet_transformers():
        T5EncoderModel(config).save_pretrained(folder / "text_encoder")
    return folder


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
def test_embeddings_equal_diffusers_prompt_encoding(real_tokenizer_dir, tmp_path, dtype):
    """Our encoder against `CogVideoXPipeline._get_t5_prompt_embeds` (diffusers' own code)
    run on the same folder loaded as diffusers' pipelines load it."""
    weights = _real_vocab_t5(tmp_path)
    # the real tokenizer, with CogVideoX's model_max_length (its tokenizer_config says 226;
    # the corpus's copy, from SD3, says 512)
    shutil.copytree(real_tokenizer_dir, weights / "tokenizer")
    config = json.loads((weights / "tokenizer" / "tokenizer_config.json").read_text())
    (weights / "tokenizer" / "tokenizer_config.json").write_text(
        json.dumps({**config, "model_max_length": 226}))
    # a toy T5 is 32 wide: the tiny profile takes the weights' width (a named one refuses it)
    source = WeightsSource(effective_profile(WeightsSource(get_profile("tiny"), str(weights))),
                           str(weights))
    assert source.profile.text_dim == 32 and source.profile.text_max_length == 226
    ours = load_text_encoder(source, CPU, dtype).encode(CAPTIONS)
    with quiet_transformers():
        pipeline_parts = SimpleNamespace(
            tokenizer=load_tokenizer(source), _execution_device=CPU,
            text_encoder=T5EncoderModel.from_pretrained(weights / "text_encoder",
                                                        torch_dtype=dtype))
    with torch.no_grad():  # as in the pipeline's __call__, which runs under no_grad
        theirs = CogVideoXPipeline._get_t5_prompt_embeds(pipeline_parts, prompt=CAPTIONS,
                                                         max_sequence_length=226, device=CPU,
                                                         dtype=dtype)
    assert ours.shape == (len(CAPTIONS), 226, 32) and ours.dtype == dtype
    assert torch.equal(ours, theirs)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
def test_t5_runs_in_the_precision_transformers_loads_it_in(dtype):
    """No whole-model cast after loading: in float16 the `wo` layers stay float32, as
    `from_pretrained(torch_dtype=...)` leaves them, and the embeddings' key says so."""
    encoder = load_text_encoder(WeightsSource(get_profile("tiny")), CPU, dtype)
    with quiet_transformers():
        reference = T5EncoderModel.from_pretrained(
            tiny_text_encoder_dir(len(tiny_tokenizer()), 32), torch_dtype=dtype)
    ours = {name: p.dtype for name, p in encoder.model.named_parameters()}
    assert ours == {name: p.dtype for name, p in reference.named_parameters()}
    wo = {d for name, d in ours.items() if ".wo." in name}
    assert wo == ({torch.float32} if dtype == torch.float16 else {dtype})
    assert precision_of(dtype) == ("float16/wo=float32" if dtype == torch.float16
                                   else str(dtype).removeprefix("torch."))
