"""raw_manifest's rows: a video without a caption is hashed like any other."""

from __future__ import annotations

from cog_assets.core.config import SourceSettings
from cog_assets.core.keys import file_sha256
from cog_assets.stages.manifest import build_manifest
from cog_assets_tests.fixtures.media import write_clip


def test_videos_without_a_caption_are_hashed_so_their_scenes_and_frames_have_keys(tmp_path):
    # Their scenes may be captioned (a segment table, the caption step): a missing hash gave
    # every uncaptioned video the same scan and frames keys.
    root = tmp_path / "data"
    write_clip(root / "a.mp4", seconds=1.0)
    write_clip(root / "b.mp4", seconds=1.5)
    (root / "meta.jsonl").write_text('{"video": "a.mp4", "caption": ""}\n'
                                     '{"video": "b.mp4", "caption": " "}\n')
    table = build_manifest(SourceSettings(data_root=str(root), shard_count=1), "shard-00000")
    rows = {row["clip_id"]: row for row in table.iter_rows(named=True)}
    assert {r["issue_reason"] for r in rows.values()} == {"caption_empty"}
    assert rows["a.mp4"]["content_hash"] == file_sha256(root / "a.mp4")
    assert rows["b.mp4"]["content_hash"] == file_sha256(root / "b.mp4")
