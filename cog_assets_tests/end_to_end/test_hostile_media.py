"""Uploads written to read outside the data root, hang the pipeline or pass for what they are
not (DESIGN §9, issue 12): each gets its verdict, none reads outside the root, none hangs.

The data root is generated (fixtures/hostile.py): ffconcat lists and HLS playlists naming a
clip outside the root (through a symlinked directory, by absolute and by relative path), a FIFO
no one writes to, and themselves; symlinks out of the root; a FIFO, a directory and an empty
file listed as videos; beside honest clips. Everything runs through the real stages.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch

from cog_assets.core.choices import ArtifactKind
from cog_assets.core.config import MediaLimits, SourceSettings
from cog_assets.core.profiles import get_profile
from cog_assets.media.decode import ClipTask, decode_clip_task
from cog_assets.media.errors import MediaError
from cog_assets.media.frame_policy import FramePolicy
from cog_assets.media.probe import probe_video
from cog_assets.media.probe_task import ProbeTask, probe_task
from cog_assets.media.safe_open import (
    FileStamp,
    hash_at_rest,
    open_media,
    open_regular_file,
)
from cog_assets.media.synthetic import write_test_dataset
from cog_assets.stages.frames import extract_frames
from cog_assets.stages.manifest import build_manifest
from cog_assets.stages.validation import validate_clips
from cog_assets.store.content_store import ContentStore
from cog_assets_tests.fixtures.decoders import stuck_or_crashing_probe
from cog_assets_tests.fixtures.frames import frame_spec, read_frames
from cog_assets_tests.fixtures.hostile import write_hostile_root
from cog_assets_tests.fixtures.media import packet_offset, write_rotated_clip

SHARD = "shard-00000"
POLICY = FramePolicy.build(get_profile("tiny"))
TINY = dict(num_frames=9, fps=8, height=64, width=96)


@pytest.fixture(scope="module")
def hostile(tmp_path_factory):
    return write_hostile_root(tmp_path_factory.mktemp("hostile"))


@pytest.fixture(scope="module")
def validated(hostile):
    manifest = build_manifest(SourceSettings(data_root=str(hostile.root), shard_count=1), SHARD)
    # A probe that hung would be stopped after probe_timeout_s and say so: none may.
    return validate_clips(manifest, hostile.root, POLICY, MediaLimits(probe_timeout_s=60))


def test_every_hostile_upload_gets_its_verdict_and_none_hangs(hostile, validated):
    got = {row["source"]: row for row in validated.iter_rows(named=True)}
    for number, case in enumerate(hostile.cases, start=1):
        row = got[f"videos.txt:{number}"]
        assert row["reason"] == case.expected, (case, row["message"])
        if case.expected is not None:
            assert row["message"], case
    assert "probe_timeout" not in validated["reason"].to_list()


def test_refused_containers_are_named_in_the_message(hostile, validated):
    messages = dict(zip(validated["clip_id"].to_list(), validated["message"].to_list()))
    assert "'concat'" in messages["concat_dirlink.mp4"]
    assert "'hls'" in messages["hls_abs.m3u8"] and "'hls'" in messages["hls_hidden.mp4"]
    assert "'png_pipe'" in messages["picture.mp4"]
    assert "FIFO" in messages["fifo.mp4"] and "directory" in messages["dir.mp4"]
    assert "other.mp4" in validated["clip_id"].to_list()  # sub/../other.mp4 is inside


def test_no_frame_from_outside_the_root_reaches_the_store(hostile, validated, tmp_path):
    store = ContentStore(str(tmp_path / "store"))
    frames, stats = extract_frames(validated, hostile.root, store, POLICY, workers=1,
                                   decode_timeout_s=60)
    assert sorted(frames["clip_id"].to_list()) == ["good.mp4", "link_in.mp4", "other.mp4"]
    assert stats.rejected == 0
    secret = torch.from_numpy(read_frames(hostile.outside / "secret.mp4", **TINY))
    for row in frames.iter_rows(named=True):
        stored = store.get_tensors(ArtifactKind.frames, row["frames_key"])["frames"]
        assert not torch.equal(stored, secret), row["clip_id"]
        expected = read_frames(hostile.root / row["clip_id"], **TINY)
        assert torch.equal(stored, torch.from_numpy(expected)), row["clip_id"]


def test_the_decoder_refuses_on_its_own_what_the_probe_refused(hostile):
    """Defence in depth: a worker given a playlist (or a path out of the root) refuses it."""
    spec = frame_spec(**TINY)
    for name, reason in [("concat_dirlink.mp4", "unsupported_container"),
                         ("hls_rel.m3u8", "unsupported_container"),
                         ("dirlink/secret.mp4", "path_outside_root"),
                         ("fifo.mp4", "not_a_file")]:
        with pytest.raises(MediaError) as info:
            decode_clip_task(ClipTask(str(hostile.root / name), spec, root=str(hostile.root)))
        assert info.value.reason == reason, (name, info.value.message)


def test_a_file_swapped_after_it_was_hashed_is_deferred_not_read(tmp_path):
    """Validated as an mp4, replaced by an ffconcat list before decoding: the decoder sees the
    stamp moved and defers the clip; it never opens what the list names."""
    root = write_test_dataset(tmp_path / "data", 1, broken=False)
    clip = root / "clips" / "clip_00.mp4"
    stamp, _ = hash_at_rest(clip, root)
    clip.write_text("ffconcat version 1.0\nfile clip_00.mp4\n")
    task = ClipTask(str(clip), frame_spec(**TINY), root=str(root), stamp=stamp.text())
    with pytest.raises(MediaError) as info:
        decode_clip_task(task)
    assert info.value.reason == "deferred" and "changed since it was hashed" in info.value.message


def test_open_regular_file_refuses_what_is_not_one_without_blocking(hostile):
    for name, reason in [("fifo.mp4", "not_a_file"), ("dir.mp4", "not_a_file"),
                         ("link_out.mp4", "path_outside_root"),
                         ("link_dev.mp4", "path_outside_root"), ("missing.mp4", "missing_file"),
                         ("sub\x00.mp4", "invalid_path")]:
        with pytest.raises(MediaError) as info:
            os.close(open_regular_file(hostile.root / name, hostile.root))
        assert info.value.reason == reason, name
    os.close(open_regular_file(hostile.root / "link_in.mp4", hostile.root))  # inside: fine


def test_open_media_reads_only_through_its_checked_descriptor(hostile):
    with open_media(hostile.root / "good.mp4", root=hostile.root) as container:
        assert container.format.name.startswith("mov")
        assert container.name.startswith("/proc/self/fd/") or not Path("/proc").is_dir()


# -- rotation from the headers ---------------------------------------------------------------

def test_rotation_comes_from_the_headers_even_when_the_first_frame_is_broken(tmp_path):
    """The first packet zeroed: no frame 0 to read a rotation from. A portrait phone clip must
    still be seen as portrait, never assumed unrotated."""
    clip = write_rotated_clip(tmp_path / "portrait.mp4", rotation_ccw=-90)
    data = bytearray(clip.read_bytes())
    start, end = packet_offset(clip, 0), packet_offset(clip, 1)
    data[start:end] = bytes(end - start)
    clip.write_bytes(bytes(data))
    probe = probe_video(clip)
    assert probe.rotation == 90 and (probe.width, probe.height) == (64, 96)


def test_a_rotation_that_is_no_quarter_turn_rejects_the_clip(tmp_path):
    clip = write_rotated_clip(tmp_path / "tilted.mp4", rotation_ccw=45)
    with pytest.raises(MediaError) as info:
        probe_video(clip)
    assert info.value.reason == "unknown_rotation" and "45" in info.value.message


# -- probing in isolated workers ---------------------------------------------------------------

def test_a_hanging_or_crashing_probe_rejects_only_its_file(tmp_path):
    root = write_test_dataset(tmp_path / "data", 3, broken=False)
    clips = root / "clips"
    (clips / "clip_00.mp4").rename(clips / "hang.mp4")
    (clips / "clip_01.mp4").rename(clips / "segfault.mp4")
    (root / "videos.txt").write_text("clips/hang.mp4\nclips/segfault.mp4\nclips/clip_02.mp4\n")
    manifest = build_manifest(SourceSettings(data_root=str(root), shard_count=1), SHARD)
    validated = validate_clips(manifest, root, POLICY, MediaLimits(probe_timeout_s=2.0),
                               workers=2, probe=stuck_or_crashing_probe)
    got = dict(zip(validated["clip_id"].to_list(), validated["reason"].to_list()))
    assert got == {"clips/hang.mp4": "probe_timeout", "clips/segfault.mp4": "probe_crash",
                   "clips/clip_02.mp4": None}
    messages = dict(zip(validated["clip_id"].to_list(), validated["message"].to_list()))
    assert "probe_timeout_s" in messages["clips/hang.mp4"]
    assert "SIGSEGV" in messages["clips/segfault.mp4"]


def test_the_limits_are_checked_on_a_first_look_that_decodes_nothing(tmp_path):
    """FFmpeg's stream analysis decodes the first frames at full size (an 8000x8000 file took
    seconds); the limits see a probe made before that: h264's pixel format, which only its
    decoder reports, is still unknown there."""
    clip = write_rotated_clip(tmp_path / "a.mp4", rotation_ccw=0)
    first_looks = []
    probe = probe_video(clip, before_decoding=first_looks.append)
    [first] = first_looks
    assert (first.coded_width, first.coded_height, first.pix_fmt) == (96, 64, "")
    assert probe.pix_fmt == "yuv420p"
    with pytest.raises(MediaError) as info:
        probe_task(ProbeTask(str(clip), limits=MediaLimits(max_pixels=96 * 64 - 1)))
    assert info.value.reason == "too_large" and "max_pixels" in info.value.message


def test_stamp_round_trips_and_names_what_moved(tmp_path):
    path = tmp_path / "f"
    path.write_bytes(b"abc")
    before = FileStamp.of(path.stat())
    assert FileStamp.parse(before.text()) == before
    with open(path, "ab") as handle:
        handle.write(b"d")
    after = FileStamp.of(path.stat())
    assert "size 3 -> 4 bytes" in before.differences(after)
    assert np.isfinite(before.age_s())
