"""Asset checks: every kept clip has a caption; shapes, dtypes and finiteness per the profile;
nothing accepted goes missing."""


import polars as pl
from dagster import (
    AssetCheckExecutionContext,
    AssetCheckResult,
    AssetCheckSeverity,
    AssetIn,
    AssetKey,
    asset_check,
)

from cog_assets.core.profiles import get_profile
from cog_assets.defs.partitions import shards_partitions
from cog_assets.defs.resources import ModelResource, StoreResource
from cog_assets.store.tensor_checks import (
    completeness_problems,
    embedding_problems,
    latent_problems,
)

MAX_REJECT_RATIO = 0.5
SHOWN_PROBLEMS = 20


def _result(problems: list[str], severity: AssetCheckSeverity = AssetCheckSeverity.ERROR,
            **metadata) -> AssetCheckResult:
    return AssetCheckResult(passed=not problems, severity=severity, metadata={
        "problems": len(problems), "details": "\n".join(problems[:SHOWN_PROBLEMS]) or "none",
        **metadata,
    })


@asset_check(asset=AssetKey("vae_latents"), partitions_def=shards_partitions, blocking=True)
def latents_match_profile(context: AssetCheckExecutionContext, vae_latents: pl.DataFrame,
                          model: ModelResource, store: StoreResource) -> AssetCheckResult:
    """Moments are [32, (F-1)/4+1, H/8, W/8], floating point, no NaN/Inf."""
    return _result(latent_problems(vae_latents, store.open(), get_profile(model.profile)),
                   checked=len(vae_latents))


@asset_check(asset=AssetKey("t5_embeddings"), partitions_def=shards_partitions, blocking=True)
def embeddings_match_profile(context: AssetCheckExecutionContext, t5_embeddings: pl.DataFrame,
                             model: ModelResource, store: StoreResource) -> AssetCheckResult:
    """Embeddings are [226, D] with D the profile's text width, no NaN/Inf."""
    return _result(embedding_problems(t5_embeddings, store.open(), get_profile(model.profile)),
                   checked=len(t5_embeddings))


@asset_check(asset=AssetKey("clip_captions"), partitions_def=shards_partitions, blocking=True)
def every_kept_clip_has_a_caption(context: AssetCheckExecutionContext,
                                  clip_captions: pl.DataFrame) -> AssetCheckResult:
    """Every clip the caption step keeps has a caption and says where it came from: T5 never
    encodes an empty prompt, and no caption is of unknown origin."""
    kept = clip_captions.filter(pl.col("issue_reason").is_null())
    problems = [f"{row['clip_id']}: " + ("no caption" if not row["caption"] else
                                         "no caption_source")
                for row in kept.iter_rows(named=True)
                if not row["caption"] or not row["caption_source"]]
    return _result(problems, checked=len(kept))


@asset_check(asset=AssetKey("training_dataset"), partitions_def=shards_partitions,
             additional_ins={"validated_clips": AssetIn("validated_clips"),
                             "frame_tensors": AssetIn("frame_tensors")})
def every_clip_has_latent_and_embedding(context: AssetCheckExecutionContext,
                                        training_dataset: pl.DataFrame,
                                        validated_clips: pl.DataFrame,
                                        frame_tensors: pl.DataFrame) -> AssetCheckResult:
    """Every accepted, decoded clip is in the finished index with a latent and an embedding."""
    return _result(completeness_problems(validated_clips, frame_tensors, training_dataset),
                   indexed=len(training_dataset))


@asset_check(asset=AssetKey("training_dataset"), partitions_def=shards_partitions,
             additional_ins={"validated_clips": AssetIn("validated_clips")})
def reject_ratio_under_threshold(context: AssetCheckExecutionContext,
                                 training_dataset: pl.DataFrame,
                                 validated_clips: pl.DataFrame) -> AssetCheckResult:
    """Warns when more than half of a shard's rows were rejected: usually a config mistake."""
    total = len(validated_clips)
    ratio = 0.0 if total == 0 else 1 - len(training_dataset) / total
    problems = [] if ratio <= MAX_REJECT_RATIO else [
        f"{ratio:.0%} of {total} rows rejected (threshold {MAX_REJECT_RATIO:.0%}); "
        "see the rejects table of training_dataset"]
    return _result(problems, AssetCheckSeverity.WARN, reject_ratio=round(ratio, 4))


ALL_CHECKS = [every_kept_clip_has_a_caption, latents_match_profile, embeddings_match_profile,
              every_clip_has_latent_and_embedding, reject_ratio_under_threshold]
