"""Segments of long videos from a scan's cut list and samples; captions for them; settings."""

from __future__ import annotations

import json
import math
from io import BytesIO

import numpy as np
import pytest
from PIL import Image

from cog_assets.core.choices import CaptionSource
from cog_assets.core.config import Settings, SettingsError, load_settings
from cog_assets.media.contact_sheet import THUMB_HEIGHT, contact_sheet
from cog_assets.media.scan import SAMPLE_COLUMNS
from cog_assets.media.scene_cuts import (
    Segment,
    segment_id,
    segment_scores,
    split_scenes,
)
from cog_assets.media.synthetic import write_test_dataset
from cog_assets.sources.manifests import ManifestError, read_manifests
from cog_assets.sources.segment_captions import match_caption, read_segment_captions
from cog_assets.sources.sharding import shard_for
from cog_assets.sources.uploads import LocalLister, refresh_snapshot, shard_fingerprints
from cog_assets.stages.manifest import build_manifest
from cog_assets.stages.scene_segments import split_segments
from cog_assets.store.content_store import ContentStore


def test_long_scenes_are_cut_into_equal_windows_no_longer_than_max_clip_s():
    segments = split_scenes(np.array([3.0, 7.0, 10.0]), 19.0, max_clip_s=4.0)
    assert [(s.start_s, s.end_s) for s in segments] == [
        (0.0, 3.0), (3.0, 7.0), (7.0, 10.0), (10.0, 13.0), (13.0, 16.0), (16.0, 19.0)]
    # no cuts: one scene, the whole video; cuts outside the video are ignored
    assert split_scenes(np.array([0.0, 25.0]), 5.0, 10.0) == [Segment(0.0, 5.0)]


def test_a_shot_just_over_max_clip_s_becomes_two_halves_not_a_window_and_a_scrap():
    # before: 10.0 s plus a 0.32 s rest rejected as segment_too_short (footage dropped)
    halves = split_scenes(np.array([]), 10.32, max_clip_s=10.0, min_clip_s=3.0)
    assert [(s.start_s, s.end_s) for s in halves] == [(0.0, 5.16), (5.16, 10.32)]
    assert sum(s.duration_s for s in halves) == pytest.approx(10.32)
    # equal windows under min_clip_s would all be rejected: windows of max_clip_s instead,
    # and the rest (too short to keep) last
    kept = split_scenes(np.array([]), 10.32, max_clip_s=10.0, min_clip_s=6.0)
    assert [(s.start_s, s.end_s) for s in kept] == [(0.0, 10.0), (10.0, 10.32)]


def test_segment_bounds_and_ids_are_kept_to_the_millisecond():
    [first, second] = split_scenes(np.array([1.23456]), 2.5, 10.0)
    assert (first.end_s, second.start_s) == (1.235, 1.235)
    assert segment_id("videos/a b.mp4", second) == "videos/a b.mp4#t=1.235,2.500"


def _samples(rows: list[tuple]) -> np.ndarray:
    assert all(len(r) == len(SAMPLE_COLUMNS) for r in rows)
    return np.asarray(rows, dtype=np.float64)


def test_segment_scores_average_the_samples_inside_and_never_count_motion_across_a_cut():
    nan = math.nan
    samples = _samples([
        # time, previous frame's time, brightness, sharpness, motion, aesthetic
        (0.0, nan, 0.2, 100.0, nan, 4.0),
        (0.5, 0.46, 0.4, 300.0, 0.02, 6.0),
        (1.0, 0.96, 0.9, 50.0, 5.0, nan),  # the first frame after a cut at 1.0 ...
        (1.5, 1.46, 0.7, 70.0, 0.04, nan),
    ])
    first = segment_scores(samples, Segment(0.0, 1.0))
    assert first == pytest.approx({"motion_score": 0.02, "brightness": 0.3, "sharpness": 200.0,
                                   "aesthetic_score": 5.0})
    second = segment_scores(samples, Segment(1.0, 2.0))
    assert second["motion_score"] == pytest.approx(0.04)  # ... whose flow spans the cut
    assert second["aesthetic_score"] is None  # not measured: null, not 0
    assert segment_scores(samples, Segment(5.0, 6.0))["brightness"] is None


def _write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


def test_segment_captions_match_by_the_largest_overlap_covering_half(tmp_path):
    _write_jsonl(tmp_path / "captions.jsonl", [
        {"video": "./long.mp4", "start_s": 0.0, "end_s": 4.0, "caption": "a pancake"},
        {"video": "long.mp4", "start_s": 4.0, "end_s": 9.0, "caption": "a spacecraft"},
        {"video": "long.mp4", "start_s": 9.0, "end_s": 12.0, "caption": ""},
    ])
    sources = Settings.of(data_root=str(tmp_path), segment_captions="captions.jsonl").sources
    table = read_segment_captions(sources)
    assert set(table) == {"long.mp4"}
    rows = table["long.mp4"]
    assert match_caption(rows, 0.0, 3.0).caption == "a pancake"
    assert match_caption(rows, 3.0, 7.0).caption == "a spacecraft"  # 3 s of 4 beats 1 s
    assert match_caption(rows, 8.0, 12.0) is None  # 1 s of 4 captioned; an empty row is none
    assert match_caption(rows, 3.0, 7.0).source == "captions.jsonl:2"


@pytest.mark.parametrize("row, problem", [
    ({"video": "a.mp4", "start_s": 5, "end_s": 2, "caption": "x"}, "end_s 2 is not after"),
    ({"video": "a.mp4", "start_s": "soon", "end_s": 2, "caption": "x"}, "not a number"),
    ({"video": "../a.mp4", "start_s": 0, "end_s": 2, "caption": "x"}, "climbs out"),
])
def test_a_bad_segment_caption_row_stops_with_its_file_and_line(tmp_path, row, problem):
    good = {"video": "a.mp4", "start_s": 0, "end_s": 1, "caption": "fine"}
    _write_jsonl(tmp_path / "seg.jsonl", [good, row])
    sources = Settings.of(data_root=str(tmp_path), segment_captions="seg.jsonl").sources
    with pytest.raises(ManifestError, match=f"seg.jsonl:2: .*{problem}"):
        read_segment_captions(sources)


def test_the_segment_caption_table_is_not_read_as_a_manifest(tmp_path):
    root = write_test_dataset(tmp_path, 2, broken=False)
    # it has a video and a caption column, like a table manifest
    _write_jsonl(root / "segments.jsonl", [
        {"video": "clips/clip_00.mp4", "start_s": 0, "end_s": 1, "caption": "first second"}])
    plain = Settings.of(data_root=str(root)).sources
    assert len(read_manifests(plain)) == 3  # without the setting it is one more manifest
    with_table = Settings.of(data_root=str(root), segment_captions="segments.jsonl").sources
    listed = [r.clip_id for r in read_manifests(with_table)]
    assert listed == ["clips/clip_00.mp4", "clips/clip_01.mp4"]


def test_a_segment_caption_change_moves_only_its_videos_shard_fingerprint(tmp_path):
    root = write_test_dataset(tmp_path, 6, broken=False)
    sources = Settings.of(data_root=str(root), shards=3, segment_captions="seg.jsonl").sources
    caption = {"video": "clips/clip_04.mp4", "start_s": 0, "end_s": 1, "caption": "a square"}
    _write_jsonl(root / "seg.jsonl", [caption])
    before = shard_fingerprints(sources, refresh_snapshot(None, LocalLister(root)).snapshot)
    _write_jsonl(root / "seg.jsonl", [{**caption, "caption": "a white square"}])
    after = shard_fingerprints(sources, refresh_snapshot(None, LocalLister(root)).snapshot)
    moved = {shard for shard in before if before[shard] != after[shard]}
    assert moved == {shard_for("clips/clip_04.mp4", 3)}


def test_segment_settings_are_checked_together(monkeypatch):
    with pytest.raises(SettingsError, match="max_clip_s .* is under min_clip_s"):
        Settings.of(min_clip_s=5, max_clip_s=4)
    with pytest.raises(SettingsError, match="min_aesthetic needs aesthetic_weights"):
        Settings.of(min_aesthetic=5.0)
    with pytest.raises(SettingsError, match="min_brightness"):
        Settings.of(min_brightness=2)
    settings = load_settings(env={"COG_ASSETS_SPLIT_SCENES": "1", "COG_ASSETS_MIN_CLIP_S": "2",
                                  "COG_ASSETS_SCENE_DETECTOR": "content"})
    assert settings.segments.split_scenes and settings.segments.min_clip_s == 2.0
    assert settings.segments.scene_detector == "content"
    assert not Settings().segments.active  # off by default: manifest rows pass through


def test_with_splitting_and_scores_off_every_row_passes_through_unscanned(tmp_path):
    root = write_test_dataset(tmp_path / "data", 3)
    settings = Settings.of(data_root=str(root), store=str(tmp_path / "store"), shards=1)
    manifest = build_manifest(settings.sources, "shard-00000")
    table, stats, per_source = split_segments(manifest, settings.sources, settings.segments,
                                              settings.limits, ContentStore(settings.store.url))
    assert table.select(manifest.columns).equals(manifest)
    assert table["source_video"].to_list() == manifest["clip_id"].to_list()
    assert table["start_s"].is_null().all() and table["motion_score"].is_null().all()
    assert set(table["caption_source"]) == {CaptionSource.manifest}
    assert (stats.computed, stats.reused, len(per_source)) == (0, 0, 0)
    assert not (tmp_path / "store").exists()  # nothing scanned, nothing stored


def test_the_contact_sheet_prints_each_frames_label_under_it():
    frames = [np.full((64, 96, 3), 40 * i, dtype=np.uint8) for i in range(3)]
    plain = contact_sheet(frames)
    labelled = contact_sheet(frames, labels=[["a.mp4#t=0.000,3.000", "motion 0.05"]] * 3)
    plain_image, image = Image.open(BytesIO(plain)), Image.open(BytesIO(labelled))
    assert plain_image.height == THUMB_HEIGHT
    assert image.height > THUMB_HEIGHT + 20  # two lines of text under the frames
    text = np.asarray(image.convert("L"))[THUMB_HEIGHT + 2:]
    assert text.max() > 200  # light text on the dark strip


@pytest.mark.parametrize("name, text, problem", [
    ("seg.jsonl", '{"video": "a.mp4", "start_s": 0, "end_s": 1, "caption": "x"}\n\n'
                  '{"video": "a.mp4", "start_s": 3, "end_s": 2, "caption": "y"}\n',
     r"seg.jsonl:3: end_s 2 is not after"),  # after a blank line
    ("seg.jsonl", '{"video": "a.mp4", "start_s": 0, "end_s": 1, "caption": "x"}\n'
                  '{"video": "a.mp4", "start_s": 1,\n',
     r"seg.jsonl:2: the line is not valid JSON"),
    ("seg.csv", 'video,start_s,end_s,caption\na.mp4,0,1,"two\nlines"\na.mp4,3,2,y\n',
     r"seg.csv:4: end_s 2 is not after"),  # after a caption over two lines
])
def test_a_bad_segment_caption_row_is_named_by_the_line_it_starts_on(tmp_path, name, text,
                                                                     problem):
    (tmp_path / name).write_text(text)
    sources = Settings.of(data_root=str(tmp_path), segment_captions=name).sources
    with pytest.raises(ManifestError, match=problem):
        read_segment_captions(sources)
