"""The asset checks on tables a test writes (the runs' own are in end_to_end/)."""

from __future__ import annotations

import polars as pl

from cog_assets.core.config import Settings
from cog_assets.defs.asset_checks import every_kept_clip_has_a_caption
from cog_assets.defs.build import build_definitions


def test_a_kept_clip_without_a_caption_or_its_origin_fails_the_caption_check():
    table = pl.DataFrame({
        "clip_id": ["a.mp4", "b.mp4", "c.mp4", "d.mp4"],
        "caption": ["a cat", "", "a dog", ""],
        "caption_source": ["manifest", "generated", None, None],
        "issue_reason": [None, None, None, "no_caption"]})  # d: rejected, so it may lack one
    result = every_kept_clip_has_a_caption(table)
    assert not result.passed
    assert result.metadata["details"].text == "b.mp4: no caption\nc.mp4: no caption_source"
    assert every_kept_clip_has_a_caption(table.head(1)).passed


def test_checks_run_in_their_assets_steps_not_steps_of_their_own():
    """A shard's run has one step per asset: the checks cost no launch, events or reads of
    their own (1.3 s of a one-clip change when they were 5 steps)."""
    job = build_definitions(Settings()).resolve_job_def("prepare_shards")
    steps = {node.name for node in job.graph.nodes}
    assert steps == {"raw_manifest", "scene_segments", "clip_captions", "validated_clips",
                     "frame_tensors", "vae_latents", "t5_embeddings", "training_dataset"}
