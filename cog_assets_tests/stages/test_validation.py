"""Caption checks with the real T5 SentencePiece tokenizer in ../shared/media/tokenizer."""

import polars as pl

from cog_assets.core.config import MediaLimits, SourceSettings
from cog_assets.core.profiles import get_profile
from cog_assets.media.frame_policy import FramePolicy
from cog_assets.media.synthetic import write_test_dataset
from cog_assets.models.text_encoder import count_tokens, load_tokenizer
from cog_assets.models.weights import WeightsSource
from cog_assets.stages.manifest import build_manifest
from cog_assets.stages.validation import validate_clips


def _weights_dir(tmp_path, shared_media):
    weights = tmp_path / "weights"
    weights.mkdir()
    (weights / "tokenizer").symlink_to(shared_media / "tokenizer")
    return weights


def test_real_tokenizer_counts_and_flags_long_captions(tmp_path, shared_media):
    profile = get_profile("cogvideox-5b")
    tokenizer = load_tokenizer(WeightsSource(profile, str(_weights_dir(tmp_path, shared_media))))
    long_captions = (shared_media / "captions/opensora_t2v_pllava.txt").read_text(
        encoding="utf-8").splitlines()
    counts = count_tokens(tokenizer, ["a cat", *long_captions])
    assert counts[0] == len(tokenizer("a cat").input_ids) and counts[0] <= 4  # ▁a ▁cat </s>
    assert tokenizer.convert_ids_to_tokens(tokenizer("a cat").input_ids)[-1] == "</s>"
    assert max(counts) > 226  # some real captions are longer than T5 reads


def test_truncated_captions_are_flagged_not_rejected(tmp_path, shared_media):
    root = write_test_dataset(tmp_path / "data", 2, seconds=7.0, broken=False)
    long_caption = max((shared_media / "captions/opensora_t2v_pllava.txt").read_text(
        encoding="utf-8").splitlines(), key=len)
    (root / "prompts.txt").write_text(f"a short caption\n{long_caption}\n", encoding="utf-8")
    profile = get_profile("cogvideox-5b")
    tokenizer = load_tokenizer(WeightsSource(profile, str(_weights_dir(tmp_path, shared_media))))
    manifest = build_manifest(SourceSettings(data_root=str(root), shard_count=1), "shard-00000")
    validated = validate_clips(manifest, root, FramePolicy.build(profile), MediaLimits(),
                               lambda c: count_tokens(tokenizer, c)).sort("clip_id")
    assert validated["accepted"].to_list() == [True, True]
    assert validated["caption_truncated"].to_list() == [False, True]
    flagged = validated.filter(pl.col("caption_truncated")).row(0, named=True)
    assert flagged["caption_tokens"] > 226
    assert "videos.txt:2" in flagged["message"] and "truncated" in flagged["message"]
