"""The asset checks on tables a test writes (the runs' own are in end_to_end/)."""

from __future__ import annotations

import polars as pl
from dagster import build_asset_check_context

from cog_assets.defs.asset_checks import every_kept_clip_has_a_caption


def test_a_kept_clip_without_a_caption_or_its_origin_fails_the_caption_check():
    table = pl.DataFrame({
        "clip_id": ["a.mp4", "b.mp4", "c.mp4", "d.mp4"],
        "caption": ["a cat", "", "a dog", ""],
        "caption_source": ["manifest", "generated", None, None],
        "issue_reason": [None, None, None, "no_caption"]})  # d: rejected, so it may lack one
    result = every_kept_clip_has_a_caption(build_asset_check_context(), table)
    assert not result.passed
    assert result.metadata["details"].text == "b.mp4: no caption\nc.mp4: no caption_source"
    assert every_kept_clip_has_a_caption(build_asset_check_context(), table.head(1)).passed
