"""Bad and unusual inputs generated here (no shared media), through the real stages.

One shard holds good clips beside rotated, variable-frame-rate, truncated, zero-byte and
audio-only files: each bad file gets its verdict with a reason, and the good clips of the same
shard still come out, with the right frames (every generated frame shows its own index and a
red marker in its top-left corner; see fixtures/media.py). A hanging and a crashing decoder
(stand-ins at the worker process boundary, fixtures/decoders.py) must cost only their clip.
"""

from __future__ import annotations

import inspect
import time
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from cog_assets.core.choices import ArtifactKind
from cog_assets.core.config import FrameSettings, MediaLimits, SourceSettings
from cog_assets.core.profiles import get_profile
from cog_assets.media.frame_policy import FramePolicy
from cog_assets.stages.dataset import collect_rejects
from cog_assets.stages.frames import extract_frames
from cog_assets.stages.manifest import build_manifest
from cog_assets.stages.validation import validate_clips
from cog_assets.store.content_store import ContentStore
from cog_assets_tests.fixtures import decoders
from cog_assets_tests.fixtures.media import (
    display_rotation_of,
    frame_index,
    marker_corner,
    packet_offset,
    write_audio_only,
    write_clip,
    write_cut_copy,
    write_rotated_clip,
    write_vfr_clip,
    write_zero_bytes,
)
from cog_assets_tests.fixtures.reference import shown_at

SHARD = "shard-00000"
FPS, NUM_FRAMES = 8, 9  # tiny: 9 frames at 8 fps, a 1 s window
LANDSCAPE, PORTRAIT = "9x64x96", "9x96x64"
SOURCE_FPS = 24
# Reasons a truncated file may honestly be refused with.
TRUNCATED_REASONS = {"truncated", "decode_error", "unreadable"}
MEDIA_REASONS = TRUNCATED_REASONS | {"empty_file", "no_video_stream", "too_short", "too_small"}
# Frame i of the tiny window shows source frame 3*i (24 fps source, 8 fps samples).
EXACT = [i * SOURCE_FPS // FPS for i in range(NUM_FRAMES)]
# A variable-frame-rate clip: bursts, a 700 ms hold, an irregular tail (seconds).
VFR_TIMES = [0.0, 0.02, 0.04, 0.3, 0.31, 0.33, 0.5, 1.2, 1.25, 1.27, 1.5, 1.9, 2.0]
# clockwise degrees a viewer turns the coded frame -> where the top-left marker lands
ROTATIONS = {90: "top-right", 180: "bottom-right", 270: "bottom-left"}


def _layout(root: Path) -> dict[str, str]:
    """Write every case under root; return clip_id -> case name."""
    cases = {}

    def add(rel: str, case: str) -> Path:
        cases[rel] = case
        return root / rel

    for i in range(3):
        write_clip(add(f"good/clip_{i}.mp4", "good"), seconds=1.5)
    for clockwise in ROTATIONS:
        ccw = {90: -90, 180: 180, 270: 90}[clockwise]  # FFmpeg's display matrix angle
        path = write_rotated_clip(add(f"rotated/cw_{clockwise}.mp4", "rotated"),
                                  rotation_ccw=ccw)
        assert round(display_rotation_of(path)) % 360 == ccw % 360  # the writer wrote it
    write_vfr_clip(add("vfr/irregular.mp4", "vfr"), VFR_TIMES)
    full = write_clip(root / "sources/full_3s.mp4", seconds=3.0, faststart=True)
    # Cut after 12 packets (0.5 s of 3 s): the 1 s window runs past the end of the data.
    write_cut_copy(full, add("truncated/half_second_left.mp4", "truncated_short"),
                   packet_offset(full, 12))
    # Cut after 40 packets (1.67 s): the 1 s window is all there.
    write_cut_copy(full, add("truncated/window_left.mp4", "truncated_fits"),
                   packet_offset(full, 40))
    write_zero_bytes(add("empty/zero.mp4", "empty"))
    write_audio_only(add("audio/tone.m4a", "audio"), codec="aac")
    write_audio_only(add("audio/tone.ogg", "audio"), codec="libopus")
    names = list(cases)
    (root / "videos.txt").write_text("\n".join(names) + "\n")
    (root / "prompts.txt").write_text("\n".join(f"case {cases[n]}: {n}" for n in names) + "\n")
    return cases


def _stages(root: Path, store: ContentStore, policy: FramePolicy, **frames_kwargs):
    manifest = build_manifest(SourceSettings(data_root=str(root), shard_count=1), SHARD)
    validated = validate_clips(manifest, root, policy, MediaLimits())
    frames, stats = extract_frames(validated, root, store, policy,
                                   **{"decode_timeout_s": 60.0, **frames_kwargs})
    return manifest, validated, frames, stats


@pytest.fixture(scope="module")
def shard(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("fixtures")
    root = tmp / "data"
    cases = _layout(root)
    store = ContentStore(str(tmp / "store"))
    policy = FramePolicy.build(get_profile("tiny"),
                               FrameSettings(buckets=[LANDSCAPE, PORTRAIT]))
    manifest, validated, frames, stats = _stages(root, store, policy, workers=2)
    return {"root": root, "cases": cases, "store": store, "policy": policy,
            "manifest": manifest, "validated": validated, "frames": frames, "tmp": tmp}


def _verdict(shard, clip_id: str) -> dict:
    """The clip's final row: from frames if it got there, else from validation."""
    frames = shard["frames"].filter(pl.col("clip_id") == clip_id)
    if len(frames):
        return frames.row(0, named=True) | {"accepted": frames["status"][0] != "rejected"}
    return shard["validated"].filter(pl.col("clip_id") == clip_id).row(0, named=True)


def _stored(shard, clip_id: str) -> np.ndarray:
    row = _verdict(shard, clip_id)
    assert row["accepted"], row
    return shard["store"].get_tensors(ArtifactKind.frames, row["frames_key"])["frames"].numpy()


def _of(shard, case: str) -> list[str]:
    return [clip for clip, c in shard["cases"].items() if c == case]


def test_good_clips_of_the_shard_come_out_with_the_right_frames(shard):
    for clip in _of(shard, "good"):
        frames = _stored(shard, clip)
        assert frames.shape == (NUM_FRAMES, 64, 96, 3) and frames.dtype == np.uint8
        assert [frame_index(f) for f in frames] == EXACT, clip
        assert all(marker_corner(f) == "top-left" for f in frames)


def test_every_row_is_accepted_or_rejected_with_a_reason(shard):
    rejects = collect_rejects(shard["validated"], shard["frames"])
    accepted = shard["frames"].filter(pl.col("status") != "rejected")["clip_id"].to_list()
    assert sorted(accepted + rejects["clip_id"].to_list()) == sorted(shard["cases"])
    for row in rejects.iter_rows(named=True):
        assert row["reason"] and row["message"] and row["clip_id"] in row["message"], row


@pytest.mark.parametrize("clockwise", sorted(ROTATIONS))
def test_rotated_clip_is_turned_as_its_display_matrix_says(shard, clockwise):
    clip = f"rotated/cw_{clockwise}.mp4"
    row = shard["validated"].filter(pl.col("clip_id") == clip).row(0, named=True)
    assert row["rotation"] == clockwise
    portrait = clockwise in (90, 270)
    assert (row["width"], row["height"]) == ((64, 96) if portrait else (96, 64))
    assert row["bucket"] == (PORTRAIT if portrait else LANDSCAPE)
    frames = _stored(shard, clip)
    assert frames.shape[1:3] == ((96, 64) if portrait else (64, 96))
    assert [marker_corner(f) for f in frames] == [ROTATIONS[clockwise]] * NUM_FRAMES
    # Turned back counter-clockwise, each frame is the upright source frame it should be.
    upright = [np.rot90(f, k=clockwise // 90) for f in frames]
    assert [frame_index(f) for f in upright] == EXACT


def test_vfr_clip_is_sampled_by_presentation_time(shard):
    frames = _stored(shard, "vfr/irregular.mp4")
    want = [shown_at(VFR_TIMES, i / FPS) for i in range(NUM_FRAMES)]
    assert [frame_index(f) for f in frames] == want
    # Sampling by index at the average rate would have picked something else.
    row = shard["validated"].filter(pl.col("clip_id") == "vfr/irregular.mp4").row(0, named=True)
    by_index = [min(len(VFR_TIMES) - 1, round(i / FPS * row["fps"])) for i in range(NUM_FRAMES)]
    assert by_index != want


def test_truncated_copy_whose_window_is_intact_is_used(shard):
    frames = _stored(shard, "truncated/window_left.mp4")
    assert [frame_index(f) for f in frames] == EXACT


def test_truncated_copy_whose_window_runs_past_the_data_is_rejected(shard):
    """The index (moov first) promises 3 s, the data stops after 0.5 s. Frames 4-8 of the
    window do not exist: they must not be made up by repeating the last decoded one."""
    row = _verdict(shard, "truncated/half_second_left.mp4")
    if row["accepted"]:
        shown = [frame_index(f) for f in _stored(shard, "truncated/half_second_left.mp4")]
        pytest.fail(f"accepted with source frames {shown} (wanted {EXACT}): the missing end of "
                    "a truncated file was filled with copies of its last frame")
    assert (row["accepted"], row["reason"]) == (False, "truncated"), row
    assert "truncated/half_second_left.mp4" in row["message"]


def test_zero_byte_file_is_rejected_as_empty(shard):
    row = _verdict(shard, "empty/zero.mp4")
    assert (row["accepted"], row["reason"]) == (False, "empty_file")
    assert "zero bytes" in row["message"]


@pytest.mark.parametrize("clip", ["audio/tone.m4a", "audio/tone.ogg"])
def test_audio_only_file_is_rejected_for_having_no_video(shard, clip):
    row = _verdict(shard, clip)
    assert (row["accepted"], row["reason"]) == (False, "no_video_stream")
    assert "audio" in row["message"]  # names the streams it does have


def test_truncated_moov_at_end_files_never_crash_validation(tmp_path):
    """A plain mp4 keeps its index (moov) at the end; a download cut inside it must give a
    verdict per file, not an exception that fails the whole shard."""
    root = tmp_path / "data"
    full = write_clip(tmp_path / "full.mp4", seconds=2.0)
    data = full.read_bytes()
    moov = data.rfind(b"moov") - 4
    assert moov > len(data) // 2  # the index really is at the end
    cuts = list(range(moov, len(data), 5))
    names = []
    for cut in cuts:
        write_cut_copy(full, root / f"cut/{cut:06d}.mp4", cut)
        names.append(f"cut/{cut:06d}.mp4")
    (root / "videos.txt").write_text("\n".join(names) + "\n")
    (root / "prompts.txt").write_text("\n".join(f"cut {n}" for n in names) + "\n")
    policy = FramePolicy.build(get_profile("tiny"))
    manifest = build_manifest(SourceSettings(data_root=str(root), shard_count=1), SHARD)
    crashed = []
    for clip in names:  # one at a time, to list every file that raises
        try:
            validate_clips(manifest.filter(pl.col("clip_id") == clip), root, policy,
                           MediaLimits())
        except Exception as exc:  # noqa: BLE001 - what we are looking for
            crashed.append(f"{clip}: {type(exc).__name__}: {exc}")
    assert not crashed, (f"{len(crashed)} of {len(names)} cut files raised out of "
                         f"validate_clips, e.g. {crashed[:3]}")
    validated = validate_clips(manifest, root, policy, MediaLimits())
    rejected = validated.filter(~pl.col("accepted"))
    assert set(rejected["reason"].to_list()) <= MEDIA_REASONS
    store = ContentStore(str(tmp_path / "store"))
    frames, _ = extract_frames(validated, root, store, policy, workers=2, decode_timeout_s=60.0)
    for row in frames.filter(pl.col("status") != "rejected").iter_rows(named=True):
        got = store.get_tensors(ArtifactKind.frames, row["frames_key"])["frames"].numpy()
        assert [frame_index(f) for f in got] == EXACT, row["clip_id"]


def _bad_decoder_shard(tmp_path, bad_name: str):
    root = tmp_path / "data"
    names = [f"good/clip_{i}.mp4" for i in range(3)] + [f"bad/{bad_name}.mp4"]
    for i, name in enumerate(names):  # distinct bytes: the same content would decode once
        write_clip(root / name, seconds=1.5 + 0.25 * i)
    (root / "videos.txt").write_text("\n".join(names) + "\n")
    (root / "prompts.txt").write_text("\n".join(f"clip {n}" for n in names) + "\n")
    return root, names


@pytest.mark.slow
def test_decode_timeout_rejects_only_the_hanging_clip(tmp_path):
    params = inspect.signature(extract_frames).parameters
    assert "decode_timeout_s" in params and "decode" in params, (
        "extract_frames has no decode_timeout_s / decode keywords")
    root, names = _bad_decoder_shard(tmp_path, f"{decoders.HANG_MARK}_forever")
    policy = FramePolicy.build(get_profile("tiny"))
    store = ContentStore(str(tmp_path / "store"))
    started = time.monotonic()
    _, _, frames, stats = _stages(root, store, policy, workers=2, decode_timeout_s=3.0,
                                  decode=decoders.hang_or_decode)
    elapsed = time.monotonic() - started
    assert elapsed < 45, f"the shard took {elapsed:.0f} s with a 3 s decode timeout"
    rows = {r["clip_id"]: r for r in frames.iter_rows(named=True)}
    bad = rows[names[-1]]
    assert (bad["status"], bad["reason"]) == ("rejected", "decode_timeout"), bad
    assert names[-1] in bad["message"] and "3 s" in bad["message"], bad["message"]
    for name in names[:-1]:
        assert rows[name]["status"] == "computed", rows[name]
        got = store.get_tensors(ArtifactKind.frames, rows[name]["frames_key"])["frames"].numpy()
        assert [frame_index(f) for f in got] == EXACT
    assert (stats.computed, stats.rejected) == (3, 1)


def test_decoder_crash_rejects_only_the_crashing_clip(tmp_path):
    root, names = _bad_decoder_shard(tmp_path, f"{decoders.CRASH_MARK}_here")
    policy = FramePolicy.build(get_profile("tiny"))
    store = ContentStore(str(tmp_path / "store"))
    _, _, frames, stats = _stages(root, store, policy, workers=2, decode_timeout_s=60.0,
                                  decode=decoders.crash_or_decode)
    rows = {r["clip_id"]: r for r in frames.iter_rows(named=True)}
    bad = rows[names[-1]]
    assert (bad["status"], bad["reason"]) == ("rejected", "decode_crash"), bad
    assert "SIGSEGV" in bad["message"], bad["message"]
    assert [rows[n]["status"] for n in names[:-1]] == ["computed"] * 3
    assert (stats.computed, stats.rejected) == (3, 1)
