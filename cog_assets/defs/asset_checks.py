"""Asset checks: every kept clip has a caption; shapes, dtypes and finiteness per the profile;
nothing accepted goes missing.

Each check runs in its asset's own step (the asset declares its `check_specs` and yields the
results after its output), on the table the step has just made: as separate steps they cost
a shard's run five more steps (their launch, their events, loading each input back from the
store), about 1.3 s of a one-clip change. A failed blocking check still fails its asset's
step, so the assets downstream do not run; the UI shows the same checks under the same names.
"""

import polars as pl
from dagster import AssetCheckResult, AssetCheckSeverity, AssetCheckSpec

from cog_assets.core.profiles import ModelProfile
from cog_assets.store.content_store import ContentStore
from cog_assets.store.tensor_checks import (
    completeness_problems,
    embedding_problems,
    latent_problems,
)

MAX_REJECT_RATIO = 0.5
SHOWN_PROBLEMS = 20

CAPTION_CHECKS = [AssetCheckSpec(
    "every_kept_clip_has_a_caption", asset="clip_captions", blocking=True,
    description="Every clip the caption step keeps has a caption and says where it came "
                "from: T5 never encodes an empty prompt, and no caption is of unknown origin.")]
LATENT_CHECKS = [AssetCheckSpec(
    "latents_match_profile", asset="vae_latents", blocking=True,
    description="Moments are [32, (F-1)/4+1, H/8, W/8], floating point, no NaN/Inf.")]
EMBEDDING_CHECKS = [AssetCheckSpec(
    "embeddings_match_profile", asset="t5_embeddings", blocking=True,
    description="Embeddings are [226, D] with D the profile's text width, no NaN/Inf.")]
DATASET_CHECKS = [
    AssetCheckSpec("every_clip_has_latent_and_embedding", asset="training_dataset",
                   description="Every accepted, decoded clip is in the finished index with a "
                               "latent and an embedding."),
    AssetCheckSpec("reject_ratio_under_threshold", asset="training_dataset",
                   description="Warns when more than half of a shard's rows were rejected: "
                               "usually a config mistake."),
]


def _result(name: str, problems: list[str],
            severity: AssetCheckSeverity = AssetCheckSeverity.ERROR, **metadata
            ) -> AssetCheckResult:
    return AssetCheckResult(check_name=name, passed=not problems, severity=severity, metadata={
        "problems": len(problems), "details": "\n".join(problems[:SHOWN_PROBLEMS]) or "none",
        **metadata,
    })


def latents_match_profile(vae_latents: pl.DataFrame, store: ContentStore,
                          profile: ModelProfile) -> AssetCheckResult:
    return _result("latents_match_profile", latent_problems(vae_latents, store, profile),
                   checked=len(vae_latents))


def embeddings_match_profile(t5_embeddings: pl.DataFrame, store: ContentStore,
                             profile: ModelProfile) -> AssetCheckResult:
    return _result("embeddings_match_profile", embedding_problems(t5_embeddings, store, profile),
                   checked=len(t5_embeddings))


def every_kept_clip_has_a_caption(clip_captions: pl.DataFrame) -> AssetCheckResult:
    kept = clip_captions.filter(pl.col("issue_reason").is_null())
    problems = [f"{row['clip_id']}: " + ("no caption" if not row["caption"] else
                                         "no caption_source")
                for row in kept.iter_rows(named=True)
                if not row["caption"] or not row["caption_source"]]
    return _result("every_kept_clip_has_a_caption", problems, checked=len(kept))


def dataset_checks(training_dataset: pl.DataFrame, validated_clips: pl.DataFrame,
                   frame_tensors: pl.DataFrame) -> list[AssetCheckResult]:
    """every_clip_has_latent_and_embedding, reject_ratio_under_threshold."""
    total = len(validated_clips)
    ratio = 0.0 if total == 0 else 1 - len(training_dataset) / total
    too_many = [] if ratio <= MAX_REJECT_RATIO else [
        f"{ratio:.0%} of {total} rows rejected (threshold {MAX_REJECT_RATIO:.0%}); "
        "see the rejects table of training_dataset"]
    return [
        _result("every_clip_has_latent_and_embedding",
                completeness_problems(validated_clips, frame_tensors, training_dataset),
                indexed=len(training_dataset)),
        _result("reject_ratio_under_threshold", too_many, AssetCheckSeverity.WARN,
                reject_ratio=round(ratio, 4)),
    ]
