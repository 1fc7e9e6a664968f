"""The cogvideox-factory export, read back the way its `--load_tensors` dataset reads it.

The reader below follows a-r-r-o-w/cogvideox-factory `training/dataset.py`
(`_load_dataset_from_local_path`, `_load_preprocessed_latents_and_embeds`, `__getitem__`) and
`BucketSampler`'s lookup of `(F, H, W)` in frame x height x width buckets.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import torch

from cog_assets.exports import ExportReport, export_cogvideox_factory
from cog_assets.profiles import get_profile
from cog_assets_tests.test_export_source import (
    CLIPS,
    FLAT,
    Expected,
    build_dataset,
    leftover_temp_files,
)

TINY = get_profile("tiny")
TINY_I2V = dataclasses.replace(TINY, name="tiny-i2v", i2v=True)


def trainer_items(data_root: Path, image_to_video: bool = False) -> list[dict]:
    """What the trainer's dataset yields per line of videos.txt / prompts.txt."""
    with open(data_root / "prompts.txt", encoding="utf-8") as file:
        prompts = [line.strip() for line in file.readlines() if len(line.strip()) > 0]
    with open(data_root / "videos.txt", encoding="utf-8") as file:
        videos = [data_root.joinpath(line.strip()) for line in file.readlines()
                  if len(line.strip()) > 0]
    assert len(prompts) == len(videos)
    items = []
    for prompt, path in zip(prompts, videos):
        pt = f"{path.name.split('.')[0]}.pt"
        load = lambda folder: torch.load(path.parent.parent / folder / pt,  # noqa: E731
                                         map_location="cpu", weights_only=True)
        latents = load("video_latents")
        f_lat = latents.size(1)
        num_frames = f_lat * 4 if f_lat % 2 == 0 else (f_lat - 1) * 4 + 1
        items.append({"prompt": prompt, "path": path, "video": latents,
                      "embeds": load("prompt_embeds"),
                      "image": load("image_latents") if image_to_video else None,
                      "fhw": (num_frames, latents.size(2) * 8, latents.size(3) * 8)})
    return items


def trainer_buckets(report: ExportReport) -> set[tuple[int, int, int]]:
    """The (F, H, W) keys BucketSampler builds from the reported --*_buckets arguments."""
    (args,) = report.trainer_args
    groups, flag = {}, None
    for arg in args:
        if arg.startswith("--"):
            flag = arg
            groups[flag] = []
        else:
            groups[flag].append(arg)
    return {(int(f), int(h), int(w)) for h in groups["--height_buckets"]
            for w in groups["--width_buckets"] for f in groups["--frame_buckets"]}


def match(expected: dict[str, Expected], latents: torch.Tensor) -> str:
    found = [cid for cid, e in expected.items() if torch.equal(e.moments, latents)]
    assert len(found) == 1
    return found[0]


def test_export_reads_back_as_the_dataset(tmp_path):
    expected = build_dataset(tmp_path / "ds")
    report = export_cogvideox_factory(tmp_path / "ds", tmp_path / "out", TINY)
    items = trainer_items(tmp_path / "out")
    assert report.clips == len(CLIPS) == len(items)
    assert all(p.is_file() for p in report.files)
    assert [a for a in report.trainer_args[0][:2]] == ["--data_root", str(tmp_path / "out")]
    seen = set()
    for item in items:
        clip_id = match(expected, item["video"])
        seen.add(clip_id)
        clip = expected[clip_id]
        assert item["video"].dtype == torch.float32
        assert tuple(item["video"].shape) == TINY.latent_shape(*clip.bucket)
        assert item["fhw"] == clip.bucket  # F round-trips through the latent frame count
        assert item["fhw"] in trainer_buckets(report)
        assert torch.equal(item["embeds"], clip.embedding)
        assert tuple(item["embeds"].shape) == (226, 32)
        assert item["prompt"] == FLAT[clip.caption]
        assert item["path"].parent == tmp_path / "out" / "videos"
    assert seen == set(expected)
    assert len({item["path"].name.split(".")[0] for item in items}) == len(items)
    assert not leftover_temp_files(tmp_path / "out")


def test_image_latents_for_an_i2v_profile(tmp_path):
    expected = build_dataset(tmp_path / "ds", image_latents=True)
    export_cogvideox_factory(tmp_path / "ds", tmp_path / "out", TINY_I2V)
    for item in trainer_items(tmp_path / "out", image_to_video=True):
        clip = expected[match(expected, item["video"])]
        assert torch.equal(item["image"], clip.image_latent)
        assert item["image"].shape[1] == 1


def test_missing_image_latent_is_refused_naming_the_clip(tmp_path):
    build_dataset(tmp_path / "ds", image_latents=True, missing_image="clips/x/y.mp4")
    with pytest.raises(ValueError, match="'clips/x/y.mp4'.*image latent"):
        export_cogvideox_factory(tmp_path / "ds", tmp_path / "out", TINY_I2V)
    assert not (tmp_path / "out").exists()


def test_f_that_does_not_round_trip_is_refused_naming_the_clip(tmp_path):
    clips = CLIPS + [("shard-00001", "clips/odd/thirteen.mp4", "too long by four", 13, 64, 64)]
    build_dataset(tmp_path / "ds", clips)
    with pytest.raises(ValueError, match=r"'clips/odd/thirteen.mp4'.*F=13.*F=16"):
        export_cogvideox_factory(tmp_path / "ds", tmp_path / "out", TINY)
    assert not (tmp_path / "out").exists()  # checked before anything is written


def test_f_outside_the_frame_buckets_is_refused_naming_the_clip(tmp_path):
    build_dataset(tmp_path / "ds")
    with pytest.raises(ValueError, match=r"'clips/x_y.mp4'.*F=17.*\[9\]"):
        export_cogvideox_factory(tmp_path / "ds", tmp_path / "out", TINY, frame_buckets=[9])


def test_latents_of_the_wrong_shape_are_refused(tmp_path):
    build_dataset(tmp_path / "ds")
    wrong = get_profile("cogvideox-5b")  # 4096-wide text, so the embeddings do not fit
    with pytest.raises(ValueError, match="prompt embedding has shape"):
        export_cogvideox_factory(tmp_path / "ds", tmp_path / "out", wrong)


def test_an_empty_caption_is_refused(tmp_path):
    build_dataset(tmp_path / "ds", [("shard-00000", "clips/blank.mp4", " \n\t ", 9, 64, 96)])
    with pytest.raises(ValueError, match="'clips/blank.mp4'.*empty"):
        export_cogvideox_factory(tmp_path / "ds", tmp_path / "out", TINY)
