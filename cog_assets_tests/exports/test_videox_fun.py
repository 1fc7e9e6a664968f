"""The VideoX-Fun export, read back the way VideoX-Fun's `ImageVideoDataset` reads it
(fixtures/trainer_datasets.py: `json.load`, `os.path.join(train_data_dir, file_path)`, decord's
`VideoReader`, frames by index with a stride)."""

from __future__ import annotations

import json
import shlex
import shutil

import numpy as np
import pytest

from cog_assets.core.profiles import get_profile
from cog_assets.exports import export_videox_fun
from cog_assets.exports.videox_fun import sample_size, video_tokens
from cog_assets.media.synthetic import read_frame_index
from cog_assets.store.content_store import ContentStore
from cog_assets_tests.fixtures.clips import FPS, SECONDS, cut_sources
from cog_assets_tests.fixtures.datasets import CLIPS, build_dataset, leftover_temp_files
from cog_assets_tests.fixtures.trainer_datasets import videox_fun_items

TINY = get_profile("tiny")
IDS = [clip_id for _, clip_id, *_ in CLIPS]


@pytest.fixture
def exported(tmp_path):
    expected = build_dataset(tmp_path / "ds")
    files = cut_sources(tmp_path / "data", IDS, ContentStore(str(tmp_path / "store")))
    report = export_videox_fun(tmp_path / "ds", tmp_path / "out", TINY, files.files)
    return tmp_path / "out", expected, files, report


def test_every_clip_is_read_by_videox_funs_dataset_with_its_caption_and_frames(exported):
    out, expected, files, report = exported
    assert report.clips == len(CLIPS)
    items = videox_fun_items(out, out / "metadata.json", n_frames=9, stride=3, seed=1)
    assert sorted(item["entry"]["clip_id"] for item in items) == sorted(IDS)
    for item in items:
        clip_id = item["entry"]["clip_id"]
        assert item["text"] == expected[clip_id].caption  # the final caption, exactly
        assert item["entry"]["type"] == "video"
        assert not item["entry"]["file_path"].startswith("/")  # relative to the export
        assert item["frames"] == round(SECONDS * FPS) and item["fps"] == pytest.approx(FPS)
        frames = item["pixel_values"]
        assert frames.shape == (9, item["entry"]["height"], item["entry"]["width"], 3)
        # each sampled index is the clip's own frame of that index
        assert [read_frame_index(f) for f in frames] == item["batch_index"].tolist()
        assert item["path"].samefile(files.files[clip_id].path)  # a hard link, not a copy


def test_the_export_moved_elsewhere_still_reads(exported, tmp_path):
    out, _, _, _ = exported
    moved = tmp_path / "elsewhere" / "videox-fun"
    shutil.copytree(out, moved)  # as rsync/cp -r to a training machine: links become files
    shutil.rmtree(out.resolve())
    items = videox_fun_items(moved, moved / "metadata.json", n_frames=5, stride=4)
    assert len(items) == len(CLIPS)
    assert all(not p.is_symlink() for p in (moved / "train").iterdir())


def test_metadata_is_ascii_json_with_the_clip_files_size_and_the_scores(exported):
    out, _, files, _ = exported
    raw = (out / "metadata.json").read_bytes()
    raw.decode("ascii")  # any locale's default encoding reads it
    entries = json.loads(raw)
    for entry in entries:
        clip = files.files[entry["clip_id"]]
        assert (entry["width"], entry["height"]) == (clip.width, clip.height)
        assert entry["num_frames"] == clip.frames and entry["fps"] == pytest.approx(clip.fps)
        assert {"start_s", "end_s", "source_video", "motion_score", "brightness",
                "sharpness", "aesthetic_score", "caption_source"} <= set(entry)
    listed = {entry["file_path"] for entry in entries}
    on_disk = {f"train/{p.name}" for p in (out / "train").iterdir()}
    assert listed == on_disk


def test_trainer_arguments_point_at_the_export_and_match_the_profile(exported):
    out, _, _, report = exported
    [run] = report.trainer_args
    value = {run[i]: run[i + 1] for i in range(len(run) - 1) if run[i].startswith("--")}
    assert value["--train_data_dir"] == str(out)
    assert value["--train_data_meta"] == str(out / "metadata.json")
    assert value["--token_sample_size"] == value["--video_sample_size"] == "80"
    assert value["--video_sample_n_frames"] == "17"  # the dataset's longest bucket
    assert value["--video_sample_stride"] == "3"  # 24 fps clips, an 8 fps model
    assert value["--train_mode"] == "normal" and value["--mixed_precision"] == "no"
    assert "--training_with_video_token_length" in run and "--enable_bucket" in run
    assert shlex.join(run) in (out / "trainer_args.txt").read_text().splitlines()


def test_sample_sizes_give_videox_funs_token_budgets_for_the_real_profiles():
    from cog_assets.exports.source import ClipRecord

    def clip(f, h, w):
        return ClipRecord("c", "caption", "0", f, h, w, None, False)

    assert sample_size([clip(49, 480, 720)]) == 592  # the area of 480x720 as a square
    assert sample_size([clip(81, 768, 1360)]) == 1024
    assert video_tokens(49, 512) == 13312 and video_tokens(49, 768) == 29952
    assert video_tokens(49, 1024) == 53248


def test_keyframes_are_the_first_and_last_frames_of_each_clip(tmp_path):
    from PIL import Image

    build_dataset(tmp_path / "ds")
    files = cut_sources(tmp_path / "data", IDS, ContentStore(str(tmp_path / "store")),
                        keyframes=True)
    export_videox_fun(tmp_path / "ds", tmp_path / "out", get_profile("tiny-i2v"), files.files,
                      keyframes=True)
    entries = json.loads((tmp_path / "out" / "metadata.json").read_text())
    for entry in entries:
        first = np.asarray(Image.open(tmp_path / "out" / entry["first_frame"]).convert("RGB"))
        last = np.asarray(Image.open(tmp_path / "out" / entry["last_frame"]).convert("RGB"))
        assert (read_frame_index(first), read_frame_index(last)) == (0, entry["num_frames"] - 1)
    args = (tmp_path / "out" / "trainer_args.txt").read_text()
    assert "--train_mode inpaint" in args  # an image-to-video profile


def test_a_clip_without_a_clip_file_is_refused_naming_it(tmp_path):
    build_dataset(tmp_path / "ds")
    files = cut_sources(tmp_path / "data", IDS, ContentStore(str(tmp_path / "store")))
    del files.files["clips/x.y.mp4"]
    with pytest.raises(ValueError, match="'clips/x.y.mp4'.*no clip file"):
        export_videox_fun(tmp_path / "ds", tmp_path / "out", TINY, files.files)
    assert not (tmp_path / "out").exists()
    with pytest.raises(ValueError, match="first/last frame"):  # pictures were not kept
        export_videox_fun(tmp_path / "ds", tmp_path / "out", TINY,
                          cut_sources(tmp_path / "data2", IDS,
                                      ContentStore(str(tmp_path / "store2"))).files,
                          keyframes=True)


def test_a_new_export_replaces_the_old_one_whole(exported, tmp_path):
    out, _, files, _ = exported
    fewer = [c for c in CLIPS if c[1] != "clips/a.mp4"]
    build_dataset(tmp_path / "ds", fewer, live={c[0] for c in fewer}, seed=5)
    export_videox_fun(tmp_path / "ds", out, TINY, files.files)
    names = {p.name for p in (out / "train").iterdir()}
    assert len(names) == len(fewer) and "clips_a.mp4" not in names
    assert not leftover_temp_files(out.parent)
