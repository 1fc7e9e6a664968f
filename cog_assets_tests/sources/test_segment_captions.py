"""The segment_captions table: captions for parts of long videos, fed back from
needs_captions lists."""

from __future__ import annotations

import json

import pytest

from cog_assets.core.config import Settings
from cog_assets.sources.manifests import ManifestError
from cog_assets.sources.segment_captions import read_segment_captions


def table(tmp_path, rows: list[dict]) -> Settings:
    (tmp_path / "captions.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return Settings.of(data_root=str(tmp_path), segment_captions="captions.jsonl")


def test_rows_are_read_by_video_with_their_times_and_lines(tmp_path):
    settings = table(tmp_path, [
        {"video": "long.mp4", "start_s": 0, "end_s": 4.5, "caption": "A dog runs."},
        {"video": "long.mp4", "start_s": 4.5, "end_s": 9, "caption": "It sleeps."}])
    [first, second] = read_segment_captions(settings.sources)["long.mp4"]
    assert (first.start_s, first.end_s, first.caption) == (0.0, 4.5, "A dog runs.")
    assert second.source == "captions.jsonl:2"


def test_a_whole_file_row_of_a_needs_captions_list_says_where_its_caption_goes(tmp_path):
    """needs_captions lists whole-file clips with empty times; pasted into segment_captions,
    the row names the video and says the caption belongs in the manifest."""
    settings = table(tmp_path, [
        {"video": "long.mp4", "start_s": 0, "end_s": 4.5, "caption": "A dog runs."},
        {"video": "short.mp4", "start_s": None, "end_s": None, "caption": "A cat."}])
    with pytest.raises(ManifestError, match=r"captions.jsonl:2: short.mp4 has no start_s and "
                                            r"end_s: a whole video's caption goes in its "
                                            r"manifest"):
        read_segment_captions(settings.sources)
