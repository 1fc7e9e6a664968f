"""The clip_files stage: each clip cut once, found again by its key, cut again only when its
source changed; damaged files cut again; one bad source stops nothing else."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from cog_assets.core.keys import file_sha256
from cog_assets.core.reasons import RejectReason
from cog_assets.media.clip_cut import ClipEncoding
from cog_assets.media.synthetic import write_test_video
from cog_assets.stages.clip_files import ClipSource, clip_key, cut_clip_files
from cog_assets.store import layout
from cog_assets.store.content_store import ContentStore
from cog_assets_tests.fixtures.clips import write_sources

ENCODING = ClipEncoding(crf=18)


def segments(source: ClipSource, *bounds: tuple[float, float]) -> list[ClipSource]:
    return [ClipSource(f"{source.clip_id}#t={a:.3f},{b:.3f}", source.source_video,
                       source.content_hash, a, b) for a, b in bounds]


@pytest.fixture
def two_sources(tmp_path):
    a, b = write_sources(tmp_path / "data", ["a.mp4", "b.mp4"])
    clips = [*segments(a, (0.0, 1.0), (1.0, 2.0)), *segments(b, (0.25, 1.75))]
    return tmp_path / "data", ContentStore(str(tmp_path / "store")), clips


def test_clips_are_cut_once_and_found_again_by_their_keys(two_sources):
    data, store, clips = two_sources
    first = cut_clip_files(clips, data, store, ENCODING, workers=1)
    assert (first.stats.computed, first.stats.reused, first.failed) == (3, 0, {})
    for clip in clips:
        stored = first.files[clip.clip_id]
        assert stored.key == clip_key(clip, ENCODING) and stored.path.is_file()
        assert abs(stored.duration_s - (clip.end_s - clip.start_s)) <= 0.25
    again = cut_clip_files(clips, data, store, ENCODING, workers=1)
    assert (again.stats.computed, again.stats.reused) == (0, 3)
    assert again.files == first.files


def test_an_edited_source_cuts_again_only_its_own_clips(two_sources):
    data, store, clips = two_sources
    cut_clip_files(clips, data, store, ENCODING, workers=0)
    write_test_video(data / "b.mp4", width=96, height=64, seconds=2.0, seed=7)  # new bytes
    edited = [ClipSource(c.clip_id, c.source_video, file_sha256(str(data / "b.mp4")),
                         c.start_s, c.end_s) if c.source_video == "b.mp4" else c
              for c in clips]
    result = cut_clip_files(edited, data, store, ENCODING, workers=0)
    assert (result.stats.computed, result.stats.reused) == (1, 2)
    for before, after in zip(clips, edited):
        moved = result.files[after.clip_id].key != clip_key(before, ENCODING)
        assert moved == (after.source_video == "b.mp4")


def test_the_caption_is_no_part_of_a_clip_files_key_the_encoding_is(two_sources):
    _, _, clips = two_sources
    clip = clips[0]
    assert clip_key(clip, ENCODING) == clip_key(ClipSource("another id", clip.source_video,
                                                           clip.content_hash, clip.start_s,
                                                           clip.end_s), ENCODING)
    assert clip_key(clip, ENCODING) != clip_key(clip, ClipEncoding(crf=23))


def test_a_damaged_clip_file_is_quarantined_and_cut_again(two_sources):
    data, store, clips = two_sources
    first = cut_clip_files(clips, data, store, ENCODING, workers=0)
    damaged = first.files[clips[0].clip_id]
    data_bytes = bytearray(damaged.path.read_bytes())
    data_bytes[len(data_bytes) // 2] ^= 0xFF
    damaged.path.write_bytes(bytes(data_bytes))  # same size: only a full check sees it
    assert cut_clip_files(clips, data, store, ENCODING, workers=0).stats.computed == 0
    strict = ContentStore(store.url, verify_reuse=True)
    again = cut_clip_files(clips, data, strict, ENCODING, workers=0)
    assert again.stats.computed == 1 and len(again.stats.corrupt) == 1
    assert "moved to" in again.stats.corrupt[0]
    assert list((Path(store.root) / "quarantine" / "clip_file").iterdir())


def test_pictures_asked_for_later_are_made_without_cutting_again(two_sources):
    data, store, clips = two_sources
    cut_clip_files(clips, data, store, ENCODING, workers=0)
    later = cut_clip_files(clips, data, store, ENCODING, keyframes=True, workers=0)
    assert later.stats.computed == 0
    for stored in later.files.values():
        assert stored.pictures and stored.picture("first").is_file()
        record = json.loads(store.read_bytes(store.path(layout.clip_record_path(stored.key))))
        assert record["pictures"] is True


def test_a_source_that_cannot_be_cut_is_reported_and_the_others_are_cut(two_sources):
    data, store, clips = two_sources
    (data / "b.mp4").write_bytes(b"not a video at all" * 100)
    result = cut_clip_files(clips, data, store, ENCODING, workers=1)
    [(clip_id, (reason, message))] = result.failed.items()
    assert clip_id.startswith("b.mp4#") and reason == RejectReason.deferred
    assert "changed since its shard was made" in message and clip_id in message
    assert len(result.files) == 2 and result.stats.rejected == 1
    assert not list(store.fs.glob(f"{store.root}/cas/clip_file/*/*.tmp-*"))


def test_a_cut_over_its_time_limit_is_stopped_and_its_clips_reported(tmp_path):
    data, store = tmp_path / "data", ContentStore(str(tmp_path / "store"))
    path = write_test_video(data / "long.mp4", width=320, height=240, seconds=20.0)
    source = ClipSource("long.mp4", "long.mp4", file_sha256(str(path)), 0.0, 20.0)
    clips = segments(source, (0.3, 9.7), (9.7, 19.9))  # off keyframes: encoded again
    result = cut_clip_files(clips, data, store, ENCODING, workers=1, decode_timeout_s=0.01)
    assert set(result.failed) == {c.clip_id for c in clips} and not result.files
    reasons = {reason for reason, _ in result.failed.values()}
    assert reasons == {RejectReason.decode_timeout}
    assert "decode_timeout_s per minute of footage" in next(iter(result.failed.values()))[1]
    assert not list(store.fs.glob(f"{store.root}/cas/clip_file/*/*.tmp-*"))
