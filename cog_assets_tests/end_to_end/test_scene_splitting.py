"""Long videos on real footage: cuts where the shots change, scores, and only what changed
is scanned again.

The long video is edited together in the test from stretches of five corpus videos and one
generated clip (fixtures/multishot.py), so the true cut times are known exactly.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from cog_assets.core.choices import (
    ArtifactKind,
    CaptionSource,
    ResizeMode,
    SceneDetectorKind,
    ShortClipPolicy,
    StartPolicy,
)
from cog_assets.core.config import Settings
from cog_assets.core.profiles import get_profile
from cog_assets.core.reasons import RejectReason
from cog_assets.media.decode import FrameSpec, read_clip_frames
from cog_assets.media.errors import MediaError
from cog_assets.media.frame_policy import FramePolicy
from cog_assets.media.probe import probe_video
from cog_assets.media.scan import ScanSpec, ScanTask, scan_source
from cog_assets.media.synthetic import read_frame_index
from cog_assets.stages.manifest import build_manifest
from cog_assets.stages.scene_segments import split_segments
from cog_assets.stages.validation import validate_clips
from cog_assets.store.content_store import ContentStore
from cog_assets_tests.fixtures.aesthetic import write_tiny_aesthetic_weights
from cog_assets_tests.fixtures.multishot import (
    FPS,
    SHOTS,
    Shot,
    shot_frames,
    write_frames,
    write_multishot,
)

CUT_TOLERANCE_S = 0.25
SHOT_STARTS = np.cumsum([0.0, *(s.seconds for s in SHOTS)])  # 0, 3, 7, 10, 13, 16, 19
GENERATED = 2  # SHOTS[2] is the generated clip (frames carry their index)
STATIC = 1  # SHOTS[1]: NASA's near-static, dark shot
BLACK = 5  # SHOTS[5]: a red dot on black


@pytest.fixture(scope="module")
def multishot(shared_media, tmp_path_factory) -> tuple[Path, list[float]]:
    path = tmp_path_factory.mktemp("multishot") / "long.mp4"
    return path, write_multishot(path, shared_media)


def _scan(path: Path, detector=SceneDetectorKind.adaptive):
    probe = probe_video(path)
    return scan_source(ScanTask(str(path), probe.width, probe.height, probe.rotation, probe.fps,
                                ScanSpec(detector)))


@pytest.mark.parametrize("detector", list(SceneDetectorKind))
def test_cuts_land_within_a_quarter_second_of_the_true_boundaries(multishot, detector):
    path, truth = multishot
    scan = _scan(path, detector)
    assert len(scan.cuts) == len(truth), (scan.cuts, truth)
    assert np.abs(scan.cuts - np.asarray(truth)).max() <= CUT_TOLERANCE_S, (scan.cuts, truth)
    assert scan.end_s == pytest.approx(SHOT_STARTS[-1], abs=1 / FPS)


def test_frames_are_sampled_inside_the_segment_only(multishot):
    """The generated shot's frames carry their index: a window filling the whole segment
    starts at its first frame and ends at its last, never in the neighbouring shots."""
    path, _ = multishot
    start, end = SHOT_STARTS[GENERATED], SHOT_STARTS[GENERATED + 1]
    count = round((end - start) * FPS)

    def indices(num_frames, fps, where=StartPolicy.start):
        spec = FrameSpec(num_frames, 180, 320, fps, where, 0, ResizeMode.cover,
                         ShortClipPolicy.reject)
        return [read_frame_index(f) for f in read_clip_frames(path, spec, segment=(start, end))]

    assert indices(count, FPS) == list(range(count))
    centred = indices(5, 2.0, StartPolicy.centre)  # 2 s of the segment's 3, in its middle
    assert 0 < centred[0] and centred[-1] < count - 1
    assert {b - a for a, b in zip(centred, centred[1:])} <= {12, 13}  # 0.5 s apart at 25 fps
    assert centred[0] + centred[-1] == pytest.approx(count - 1, abs=1)
    with pytest.raises(MediaError) as caught:  # one more frame would need the next shot
        indices(count + 1, FPS)
    assert caught.value.reason == RejectReason.too_short


def _dataset(root: Path, videos: dict[str, Path], captions: dict[str, str]) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    for name, source in videos.items():
        shutil.copy(source, root / name)
    (root / "videos.txt").write_text("".join(f"{name}\n" for name in videos))
    (root / "prompts.txt").write_text("".join(f"{captions.get(name, '')}\n" for name in videos))
    return root


def _split(settings: Settings, store: ContentStore, workers: int | None = 0):
    manifest = build_manifest(settings.sources, "shard-00000")
    return split_segments(manifest, settings.sources, settings.segments, settings.limits, store,
                          workers=workers)


def _settings(root: Path, tmp_path: Path, **flat) -> Settings:
    return Settings.of(**{"data_root": str(root), "store": str(tmp_path / "store"), "shards": 1,
                          **flat})


def _rows(table: pl.DataFrame) -> dict[str, dict]:
    return {r["clip_id"]: r for r in table.iter_rows(named=True)}


def test_a_static_clip_is_rejected_as_low_motion(shared_media, tmp_path):
    media = tmp_path / "media"
    still = write_frames(media / "still.mp4", shot_frames(shared_media, Shot(
        "decord__flipping_a_pancake.mkv", 1.0, 4.0, still=True)))
    moving = write_frames(media / "moving.mp4", shot_frames(shared_media, Shot(
        "decord__flipping_a_pancake.mkv", 1.0, 4.0)))
    root = _dataset(tmp_path / "data", {"still.mp4": still, "moving.mp4": moving},
                    {"still.mp4": "a kitchen", "moving.mp4": "a pancake is flipped"})
    settings = _settings(root, tmp_path, min_motion=0.005)
    table, stats, _ = _split(settings, ContentStore(settings.store.url), workers=None)
    rows = _rows(table)
    assert rows["still.mp4"]["issue_reason"] == RejectReason.low_motion
    assert "motion_score" in rows["still.mp4"]["issue_message"]
    assert "min_motion 0.005" in rows["still.mp4"]["issue_message"]
    assert rows["still.mp4"]["motion_score"] < 0.005 < rows["moving.mp4"]["motion_score"]
    assert rows["moving.mp4"]["issue_reason"] is None
    assert stats.computed == 2
    # validated_clips records it as a reject of the segments stage, with its score
    validated = validate_clips(table, root, FramePolicy.build(get_profile("tiny")),
                               settings.limits)
    verdicts = _rows(validated)
    assert (verdicts["still.mp4"]["reason"], verdicts["still.mp4"]["stage"]) == (
        RejectReason.low_motion, "segments")
    assert verdicts["moving.mp4"]["accepted"]


def test_a_long_video_becomes_its_shots_each_scored_and_judged(multishot, tmp_path):
    path, truth = multishot
    root = _dataset(tmp_path / "data", {"long.mp4": path}, {"long.mp4": "a compilation"})
    settings = _settings(root, tmp_path, split_scenes=True, min_clip_s=2.0, min_motion=0.005,
                         min_brightness=0.05)
    table, stats, per_source = _split(settings, ContentStore(settings.store.url))
    assert table["clip_id"].to_list() == [
        f"long.mp4#t={a:.3f},{b:.3f}" for a, b in zip(SHOT_STARTS, SHOT_STARTS[1:])]
    assert table["start_s"].to_list() == pytest.approx(list(SHOT_STARTS[:-1]), abs=0.25)
    assert set(table["source_video"]) == {"long.mp4"}
    assert set(table["caption_source"]) == {CaptionSource.inherited}
    reasons = table["issue_reason"].to_list()
    assert reasons[STATIC] == RejectReason.low_motion
    assert reasons[BLACK] == RejectReason.too_dark
    assert [r for i, r in enumerate(reasons) if i not in (STATIC, BLACK)] == [None] * 4
    assert table["issue_stage"].to_list()[STATIC] == "segments"
    row = per_source.row(0, named=True)
    assert row | {"scan_seconds": None, "kept_s": None, "dropped_s": None} == {
        "source_video": "long.mp4", "status": "computed", "duration_s": 19.0, "cuts": 5,
        "segments": 6, "kept": 4, "kept_s": None, "dropped_s": None, "decode_errors": 0,
        "scan_seconds": None}
    # the footage in no kept clip: the static shot and the dark one, 7 s of 19
    assert row["dropped_s"] == pytest.approx(7.0, abs=0.5)
    assert row["kept_s"] + row["dropped_s"] == pytest.approx(19.0)
    assert stats.extra["footage_dropped_s"] == row["dropped_s"]
    assert stats.extra["footage_scanned_s"] == pytest.approx(19.0)


def test_editing_one_source_rescans_only_that_source(multishot, shared_media, tmp_path):
    path, _ = multishot
    media = tmp_path / "media"
    other = media / "other.mp4"
    write_multishot(other, shared_media, (SHOTS[3], SHOTS[0]))
    third = media / "third.mp4"
    write_multishot(third, shared_media, (SHOTS[4], SHOTS[2]), seed=3)
    root = _dataset(tmp_path / "data", {"long.mp4": path, "other.mp4": other,
                                        "third.mp4": third},
                    {"long.mp4": "a compilation", "other.mp4": "colour bars then a pancake",
                     "third.mp4": "a driver then a square"})
    settings = _settings(root, tmp_path, split_scenes=True, min_clip_s=2.0)
    store = ContentStore(settings.store.url)
    first, stats, _ = _split(settings, store, workers=None)
    assert (stats.computed, stats.reused) == (3, 0)
    again, stats, _ = _split(settings, store)
    assert (stats.computed, stats.reused) == (0, 3)
    assert again.equals(first)  # the same clips, ids and scores

    write_multishot(root / "other.mp4", shared_media, (SHOTS[0], SHOTS[5], SHOTS[3]))
    edited, stats, per_source = _split(settings, store)
    assert (stats.computed, stats.reused) == (1, 2)
    assert dict(zip(per_source["source_video"], per_source["status"])) == {
        "long.mp4": "reused", "other.mp4": "computed", "third.mp4": "reused"}
    unchanged = pl.col("source_video") != "other.mp4"
    assert edited.filter(unchanged).equals(first.filter(unchanged))
    assert edited.filter(~unchanged)["clip_id"].to_list() == [
        "other.mp4#t=0.000,3.000", "other.mp4#t=3.000,6.000", "other.mp4#t=6.000,9.000"]


def test_changing_thresholds_and_lengths_refilters_from_stored_scores(multishot, tmp_path):
    path, _ = multishot
    root = _dataset(tmp_path / "data", {"long.mp4": path}, {"long.mp4": "a compilation"})
    settings = _settings(root, tmp_path, split_scenes=True, min_clip_s=2.0)
    store = ContentStore(settings.store.url)
    before, stats, _ = _split(settings, store)
    assert stats.computed == 1 and before["issue_reason"].is_null().all()
    scans = list((tmp_path / "store" / "cas" / ArtifactKind.scene_scan).rglob("*.safetensors"))
    stamps = {p: p.stat().st_mtime_ns for p in scans}

    stricter = settings.with_(min_motion=0.005, min_sharpness=50.0, max_clip_s=2.0)
    after, stats, _ = _split(stricter, store)
    assert (stats.computed, stats.reused) == (0, 1)  # nothing decoded
    assert {p: p.stat().st_mtime_ns for p in scans} == stamps
    assert len(after) > len(before)  # scenes of 3-4 s now give 2 s windows (and rests)
    reasons = set(after["issue_reason"].drop_nulls())
    assert reasons == {RejectReason.low_motion, RejectReason.blurry,
                       RejectReason.segment_too_short}
    # the same score measured once: a window's motion comes from the samples inside it
    assert after.filter(pl.col("clip_id") == "long.mp4#t=0.000,2.000")["motion_score"].item() \
        > 0.005


def test_a_corrupt_stored_scan_is_scanned_again(multishot, tmp_path):
    path, _ = multishot
    root = _dataset(tmp_path / "data", {"long.mp4": path}, {"long.mp4": "a compilation"})
    settings = _settings(root, tmp_path, split_scenes=True, min_clip_s=2.0)
    store = ContentStore(settings.store.url)
    first, _, _ = _split(settings, store)
    [scan] = (tmp_path / "store" / "cas" / ArtifactKind.scene_scan).rglob("*.safetensors")
    scan.write_bytes(b"\x00" * 64)
    again, stats, _ = _split(settings, store)
    assert (stats.computed, stats.reused) == (1, 0)
    assert again.equals(first)


def test_segments_take_captions_from_the_table_or_are_rejected_without_one(multishot, tmp_path):
    path, _ = multishot
    root = tmp_path / "data"
    root.mkdir()
    shutil.copy(path, root / "long.mp4")
    (root / "sources.jsonl").write_text('{"video": "long.mp4", "caption": ""}\n')  # none
    (root / "segments.csv").write_text(
        "video,start_s,end_s,caption\n"
        "long.mp4,0,3.1,a woman flips a pancake\n"
        "long.mp4,6.9,10,a white square slides right\n")
    settings = _settings(root, tmp_path, split_scenes=True, min_clip_s=2.0,
                         segment_captions="segments.csv")
    table, _, _ = _split(settings, ContentStore(settings.store.url))
    captions = table["caption"].to_list()
    assert captions[0] == "a woman flips a pancake"
    assert captions[GENERATED] == "a white square slides right"
    assert table["caption_source"].to_list()[0] == CaptionSource.segment_table
    others = table.filter(~pl.int_range(pl.len()).is_in([0, GENERATED]))
    assert set(others["issue_reason"]) == {RejectReason.no_caption}
    assert "sources.jsonl:1" in others["issue_message"][0]


def test_the_trigger_word_begins_table_captions_as_it_begins_inherited_ones(multishot, tmp_path):
    path, _ = multishot
    root = tmp_path / "data"
    root.mkdir()
    shutil.copy(path, root / "long.mp4")
    (root / "sources.jsonl").write_text('{"video": "long.mp4", "caption": "a compilation"}\n')
    (root / "segments.csv").write_text("video,start_s,end_s,caption\n"
                                       "long.mp4,0,3.1,a woman flips a pancake\n")
    settings = _settings(root, tmp_path, split_scenes=True, min_clip_s=2.0,
                         segment_captions="segments.csv", id_token="TOK")
    table, _, _ = _split(settings, ContentStore(settings.store.url))
    by_origin = dict(zip(table["caption_source"], table["caption"]))
    assert by_origin[CaptionSource.segment_table] == "TOK a woman flips a pancake"
    assert by_origin[CaptionSource.inherited] == "TOK a compilation"


def test_the_next_shard_decoded_ahead_is_cut_into_the_segments_its_run_reads(multishot,
                                                                            tmp_path):
    """A backfill decodes the next shard's frames while this one encodes: with scenes split,
    those are the segments' frames, under the keys the shard's own run asks for."""
    from dagster import instance_for_test

    from cog_assets.defs.runs import materialize_shards
    from cog_assets.media.synthetic import write_test_video
    from cog_assets.sources.sharding import shard_for

    path, _ = multishot
    first = next(n for n in (f"plain_{i}.mp4" for i in range(40))
                 if shard_for(n, 2) == "shard-00000")
    later = next(n for n in (f"long_{i}.mp4" for i in range(40))
                 if shard_for(n, 2) == "shard-00001")
    plain = write_test_video(tmp_path / "plain.mp4", width=320, height=240, seconds=4.0, seed=3)
    root = _dataset(tmp_path / "data", {first: plain, later: path},
                    {first: "a plain clip", later: "shots"})
    settings = _settings(root, tmp_path, split_scenes=True, min_clip_s=2.0, shards=2,
                         device="cpu")
    with instance_for_test() as instance:
        summaries = materialize_shards(settings, instance)
    assert all(s.success for s in summaries.values()), [s.failure for s in summaries.values()]
    later = summaries["shard-00001"]
    assert later.accepted > 1
    assert later.decoded_ahead == later.accepted + 1  # its segments' frames and its scan
    # every frame decoded was a segment's: all of them dropped once their shard was published
    assert not list((tmp_path / "store" / "cas" / "frames").rglob("*.safetensors"))


def test_a_damaged_source_is_scanned_past_its_bad_packet_and_garbage_is_left_to_validation(
        shared_media, tmp_path):
    root = _dataset(tmp_path / "data", {
        "corrupted.mp4": shared_media / "edge" / "decord__corrupted.mp4",
        "pancake.mkv": shared_media / "videos" / "decord__flipping_a_pancake.mkv"},
        {"corrupted.mp4": "damaged", "pancake.mkv": "a pancake"})
    (root / "garbage.mp4").write_bytes(b"\x00\x01 not a video " * 50)
    with open(root / "videos.txt", "a") as handle:
        handle.write("garbage.mp4\n")
    with open(root / "prompts.txt", "a") as handle:
        handle.write("nothing\n")
    settings = _settings(root, tmp_path, split_scenes=True, min_clip_s=1.0)
    table, stats, per_source = _split(settings, ContentStore(settings.store.url), workers=None)
    errors = dict(zip(per_source["source_video"], per_source["decode_errors"]))
    assert errors == {"corrupted.mp4": 1, "pancake.mkv": 0}
    assert stats.computed == 2
    garbage = table.filter(pl.col("source_video") == "garbage.mp4")
    assert garbage["clip_id"].to_list() == ["garbage.mp4"] and garbage["scan_key"].is_null().all()
    validated = validate_clips(table, root, FramePolicy.build(get_profile("tiny")),
                               settings.limits)
    assert validated.filter(pl.col("clip_id") == "garbage.mp4")["reason"].item() == \
        RejectReason.unreadable


def test_a_scan_over_its_time_limit_is_stopped_and_its_source_rejected(multishot, tmp_path):
    path, _ = multishot
    root = _dataset(tmp_path / "data", {"long.mp4": path}, {"long.mp4": "a compilation"})
    settings = _settings(root, tmp_path, split_scenes=True, decode_timeout_s=0.01)
    table, stats, per_source = _split(settings, ContentStore(settings.store.url), workers=1)
    [row] = table.to_dicts()
    assert (row["clip_id"], row["issue_reason"], row["issue_stage"]) == (
        "long.mp4", RejectReason.decode_timeout, "segments")
    assert "decode_timeout_s per minute of footage" in row["issue_message"]
    assert per_source["status"].to_list() == ["rejected"] and stats.computed == 0


def test_aesthetic_scores_with_tiny_weights_filter_and_key_the_scan(multishot, tmp_path):
    path, _ = multishot
    root = _dataset(tmp_path / "data", {"long.mp4": path}, {"long.mp4": "a compilation"})
    weights = write_tiny_aesthetic_weights(tmp_path / "aesthetic")
    settings = _settings(root, tmp_path, split_scenes=True, min_clip_s=2.0,
                         aesthetic_weights=str(weights))
    store = ContentStore(settings.store.url)
    _split(settings.with_(aesthetic_weights=None), store)
    scored, stats, _ = _split(settings, store)
    assert stats.computed == 1  # the weights are part of the scan's key
    values = scored["aesthetic_score"].to_list()
    assert None not in values and len(set(values)) == len(values)
    strict, stats, _ = _split(settings.with_(min_aesthetic=max(values) + 1), store)
    assert stats.computed == 0
    assert set(strict["issue_reason"]) == {RejectReason.low_aesthetic}
    write_tiny_aesthetic_weights(weights, seed=1)  # other weights: scored again
    _, stats, _ = _split(settings, store)
    assert stats.computed == 1


def test_scan_settings_that_change_cuts_change_the_key(multishot, tmp_path):
    path, _ = multishot
    root = _dataset(tmp_path / "data", {"long.mp4": path}, {"long.mp4": "a compilation"})
    settings = _settings(root, tmp_path, split_scenes=True, min_clip_s=2.0)
    store = ContentStore(settings.store.url)
    _split(settings, store)
    for changed in (settings.with_(scene_detector="content"),
                    settings.with_(scene_threshold=5.0)):
        _, stats, _ = _split(changed, store)
        assert stats.computed == 1, changed.segments


@pytest.mark.slow
def test_a_shard_of_long_videos_through_dagster_the_loader_and_an_export(multishot, tmp_path):
    """The whole graph: first as plain clips, then split; the index, the UI's metadata, the
    loader and an export carry where each clip comes from and its scores; a stricter
    threshold then re-runs the shard without decoding or encoding anything."""
    from dagster import AssetKey, instance_for_test
    from torch.utils.data import default_collate

    from cog_assets.defs.runs import materialize_shards
    from cog_assets.exports import export_cogvideo_finetune, export_cogvideox_factory
    from cog_assets.loader import CogVideoXLatentDataset
    from cog_assets.media.clip_cut import ClipEncoding
    from cog_assets.stages.clip_files import ClipSource, cut_clip_files

    path, _ = multishot
    root = _dataset(tmp_path / "data", {"long.mp4": path}, {"long.mp4": "a compilation"})
    plain = _settings(root, tmp_path, device="cpu")
    split = plain.with_(split_scenes=True, min_clip_s=2.0, min_brightness=0.02)
    dataset = tmp_path / "store" / "datasets" / "tiny"
    with instance_for_test() as instance:
        [summary] = materialize_shards(plain, instance).values()
        assert summary.success, summary.failure
        index = pl.read_parquet(dataset / "shard-00000" / "index.parquet")
        assert index.select("clip_id", "source_video", "start_s", "end_s", "caption_source"
                            ).row(0) == ("long.mp4", "long.mp4", 0.0, 19.0, "manifest")
        assert index["motion_score"].is_null().all()

        [summary] = materialize_shards(split, instance).values()
        assert summary.success and not summary.failed_checks, summary.failure
        assert (summary.clips, summary.accepted) == (6, 5)
        assert summary.rejects_by_reason == {"too_dark": 1}
        index = pl.read_parquet(dataset / "shard-00000" / "index.parquet").sort("start_s")
        assert index["clip_id"][0] == "long.mp4#t=0.000,3.000"
        assert index["caption_source"].unique().to_list() == ["inherited"]
        assert index["motion_score"].is_not_null().all() and index["brightness"].min() > 0.02

        segments = instance.get_latest_materialization_event(
            AssetKey("scene_segments")).asset_materialization.metadata
        [per_source] = segments["segments_per_source"].value.records
        assert (per_source.data["segments"], per_source.data["cuts"]) == ("6", "5")
        assert "**motion_score** (6 clips" in segments["score_distributions"].value
        sheet = instance.get_latest_materialization_event(
            AssetKey("frame_tensors")).asset_materialization.metadata["contact_sheet"]
        assert sheet.value.startswith("![contact sheet](data:image/jpeg;base64,")

        items = CogVideoXLatentDataset(dataset, "tiny")
        batch = default_collate([items[0], items[1]])  # the new fields collate as they are
        assert batch["source_video"] == ["long.mp4", "long.mp4"]
        assert batch["end_s"].dtype.is_floating_point
        report = export_cogvideox_factory(dataset, tmp_path / "export", get_profile("tiny"))
        clips = pl.read_parquet(tmp_path / "export" / "clips.parquet")
        assert clips["stem"].n_unique() == report.clips == 5
        assert set(clips["source_video"]) == {"long.mp4"}
        listed = (tmp_path / "export" / "videos.txt").read_text().split()
        assert sorted(listed) == sorted(f"videos/{stem}.mp4" for stem in clips["stem"])
        assert clips["aesthetic_score"].dtype == pl.Float64  # null, yet a number column
        # CogVideo's finetune layout names each clip's own segment, cut as a file (before:
        # a symlink to the whole source, which its trainer decodes on a cache miss)
        files = cut_clip_files([ClipSource(r["clip_id"], r["source_video"], r["content_hash"],
                                           r["start_s"], r["end_s"])
                                for r in index.iter_rows(named=True)], root,
                               ContentStore(str(tmp_path / "store")), ClipEncoding(crf=18))
        export_cogvideo_finetune(dataset, tmp_path / "finetune", get_profile("tiny"),
                                 clip_files=files.files)
        videos = sorted((tmp_path / "finetune" / "videos").iterdir())
        assert len(videos) == 5 and len({p.stat().st_ino for p in videos}) == 5
        for row in index.iter_rows(named=True):
            assert files.files[row["clip_id"]].frames == round(
                (row["end_s"] - row["start_s"]) * FPS)

        [summary] = materialize_shards(split.with_(min_motion=0.005), instance).values()
        assert summary.success and summary.rejects_by_reason == {"too_dark": 1, "low_motion": 1}
        assert summary.computed == 0  # scans, frames, latents, embeddings: all reused
