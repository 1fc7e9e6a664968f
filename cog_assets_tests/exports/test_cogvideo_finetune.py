"""The CogVideo `finetune/` export, read back the way its dataset classes read the cache.

The reader below follows THUDM/CogVideo `finetune/datasets/utils.py` (`load_prompts`,
`load_videos`, `load_images`) and `finetune/datasets/t2v_dataset.py` / `i2v_dataset.py`
(`__getitem__`: cache paths, `video.stem`, sha256 of the prompt, safetensors keys).
"""

from __future__ import annotations

import shlex

import av
import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

from cog_assets.core.profiles import get_profile
from cog_assets.exports import export_cogvideo_finetune
from cog_assets.exports.cogvideo_finetune import sample_seed
from cog_assets.exports.naming import clip_stems
from cog_assets.loader import sample_from_moments
from cog_assets.store.content_store import ContentStore
from cog_assets_tests.fixtures.clips import cut_sources
from cog_assets_tests.fixtures.datasets import (
    CLIPS,
    FLAT,
    build_dataset,
    leftover_temp_files,
)
from cog_assets_tests.fixtures.trainer_datasets import (
    cogvideo_finetune_items,
    read_lines,
    read_picture,
)

TINY = get_profile("tiny")
TINY_I2V = get_profile("tiny-i2v")


def expected_draw(moments: torch.Tensor, seed: int, clip_id: str) -> torch.Tensor:
    generator = torch.Generator().manual_seed(sample_seed(seed, clip_id))
    return sample_from_moments(moments, generator) * TINY.scaling_factor


def test_export_fills_the_cache_the_trainer_reads(tmp_path):
    expected = build_dataset(tmp_path / "ds")
    out = tmp_path / "out"
    report = export_cogvideo_finetune(tmp_path / "ds", out, TINY, seed=7)
    assert report.clips == len(CLIPS)
    assert {run[run.index("--train_resolution") + 1] for run in report.trainer_args} == {
        "9x64x96", "17x64x64"}
    assert not (out / "videos.txt").exists()  # two buckets: one manifest pair per bucket
    seen = []
    for run in report.trainer_args:
        resolution = run[run.index("--train_resolution") + 1]
        assert run[run.index("--model_name") + 1] == "cogvideox-t2v"
        assert run[run.index("--video_column") + 1] == f"videos_{resolution}.txt"
        for item in cogvideo_finetune_items(out, "cogvideox-t2v", resolution, f"_{resolution}"):
            matches = [cid for cid, e in expected.items()
                       if e.bucket == tuple(map(int, resolution.split("x")))
                       and torch.equal(item["encoded_video"],
                                       expected_draw(e.moments, 7, cid))]
            assert len(matches) == 1
            clip = expected[matches[0]]
            seen.append(matches[0])
            latent = item["encoded_video"]
            c, f_lat, h, w = TINY.latent_shape(*clip.bucket)
            assert latent.shape == (c // 2, f_lat, h, w) and latent.dtype == torch.float32
            mean, logvar = clip.moments.chunk(2)
            z = (latent / TINY.scaling_factor - mean) / torch.exp(0.5 * logvar)
            assert z.abs().max() < 7 and 0.5 < z.std() < 1.5  # a real draw, not the mean
            assert item["prompt"] == FLAT[clip.caption]
            assert torch.equal(item["prompt_embedding"], clip.embedding)
            assert item["video"].stat().st_size == 0  # placeholder, never read on a cache hit
    assert sorted(seen) == sorted(expected)
    assert not leftover_temp_files(out)


def test_same_seed_same_cache_other_seed_other_draw(tmp_path):
    build_dataset(tmp_path / "ds")
    export_cogvideo_finetune(tmp_path / "ds", tmp_path / "a", TINY, seed=1)
    export_cogvideo_finetune(tmp_path / "ds", tmp_path / "b", TINY, seed=1)
    export_cogvideo_finetune(tmp_path / "ds", tmp_path / "c", TINY, seed=2)
    latents = sorted((tmp_path / "a" / "cache" / "video_latent").rglob("*.safetensors"))
    assert len(latents) == len(CLIPS)
    for path in latents:
        rel = path.relative_to(tmp_path / "a")
        assert path.read_bytes() == (tmp_path / "b" / rel).read_bytes()
        assert not torch.equal(load_file(path)["encoded_video"],
                               load_file(tmp_path / "c" / rel)["encoded_video"])


def test_single_bucket_gets_plain_manifests_and_videos_are_the_clip_files(tmp_path):
    clips = [c for c in CLIPS if c[3] == 9]
    build_dataset(tmp_path / "ds", clips)
    files = cut_sources(tmp_path / "data", [c[1] for c in clips],
                        ContentStore(str(tmp_path / "store")))
    export_cogvideo_finetune(tmp_path / "ds", tmp_path / "out", TINY, clip_files=files.files,
                             model_name="my-model", dtype=torch.bfloat16)
    items = cogvideo_finetune_items(tmp_path / "out", "my-model", "9x64x96", "")
    assert all(i["encoded_video"].dtype == torch.bfloat16 for i in items)
    assert all(i["prompt_embedding"].dtype == torch.bfloat16 for i in items)
    clip_of = {stem: clip_id for clip_id, stem in clip_stems(c[1] for c in clips).items()}
    for item in items:
        video = item["video"]
        assert not video.is_symlink()  # a hard link: no absolute path to break on a move
        assert video.samefile(files.files[clip_of[video.stem]].path)
        with av.open(str(video)) as container:  # a real MP4 of the clip, read on a cache miss
            assert container.format.name.startswith("mov,mp4")
            assert container.streams.video[0].frames == files.files[clip_of[video.stem]].frames
    for line in read_lines(tmp_path / "out" / "videos.txt"):
        assert line.startswith("videos/") and line.endswith(".mp4")  # relative to data_root


def test_i2v_pictures_are_the_shards_first_frames_decoded_by_pil(tmp_path):
    expected = build_dataset(tmp_path / "ds", image_latents=True)
    report = export_cogvideo_finetune(tmp_path / "ds", tmp_path / "out", TINY_I2V)
    seen = []
    for run in report.trainer_args:
        assert run[run.index("--model_name") + 1] == "cogvideox-i2v"
        assert run[run.index("--model_type") + 1] == "i2v"
        resolution = run[run.index("--train_resolution") + 1]
        assert run[run.index("--image_column") + 1] == f"images_{resolution}.txt"
        f, h, w = map(int, resolution.split("x"))
        for item in cogvideo_finetune_items(tmp_path / "out", "cogvideox-i2v", resolution,
                                  f"_{resolution}", i2v=True):
            picture = read_picture(item["image"], h, w)
            owners = [cid for cid, e in expected.items() if e.picture is not None
                      and e.picture.shape == picture.shape and np.array_equal(e.picture, picture)]
            assert len(owners) == 1
            clip_id = owners[0]
            seen.append(clip_id)
            assert item["image"].stem == item["video"].stem
            assert item["prompt"] == FLAT[expected[clip_id].caption]  # its own caption
            assert torch.equal(item["encoded_video"],
                               expected_draw(expected[clip_id].moments, 0, clip_id))
    assert sorted(seen) == sorted(expected)


def test_i2v_pictures_given_by_the_caller_replace_the_shards(tmp_path):
    expected = build_dataset(tmp_path / "ds", image_latents=True)
    pictures = {}
    for n, clip_id in enumerate(expected):
        pictures[clip_id] = tmp_path / "pictures" / f"{n}.png"
        pictures[clip_id].parent.mkdir(exist_ok=True)
        Image.fromarray(np.full((48, 80, 3), n * 40, dtype=np.uint8)).save(pictures[clip_id])
    export_cogvideo_finetune(tmp_path / "ds", tmp_path / "out", TINY_I2V, images=pictures)
    for resolution in ("9x64x96", "17x64x64"):
        for item in cogvideo_finetune_items(tmp_path / "out", "cogvideox-i2v", resolution,
                                  f"_{resolution}", i2v=True):
            clip_id = next(c for c, e in expected.items()
                           if torch.equal(item["encoded_video"], expected_draw(e.moments, 0, c)))
            assert item["image"].read_bytes() == pictures[clip_id].read_bytes()


def test_i2v_clip_without_a_picture_is_refused_naming_it(tmp_path):
    build_dataset(tmp_path / "ds", image_latents=True, missing_image="clips/a.mp4")
    with pytest.raises(ValueError, match="'clips/a.mp4'.*picture"):
        export_cogvideo_finetune(tmp_path / "ds", tmp_path / "out", TINY_I2V)
    assert not (tmp_path / "out").exists()


def test_trainer_arguments_match_the_tensors_and_are_written_beside_the_export(tmp_path):
    build_dataset(tmp_path / "ds")
    report = export_cogvideo_finetune(tmp_path / "ds", tmp_path / "out", TINY,
                                      dtype=torch.bfloat16, id_token="BW_STYLE")
    written = (tmp_path / "out" / "trainer_args.txt").read_text()
    assert written == report.args_text() and report.args_file == tmp_path / "out" / (
        "trainer_args.txt")
    for run in report.trainer_args:
        assert run[run.index("--mixed_precision") + 1] == "bf16"  # an fp32 run would fail
        assert shlex.join(run) in written.splitlines()
    assert "'BW_STYLE'" in written


def test_15_profiles_use_the_15_trainers(tmp_path):
    clips = [("shard-00000", "clips/a.mp4", "a red ball", 17, 64, 96)]
    build_dataset(tmp_path / "ds", clips, profile=get_profile("tiny-1.5"))
    report = export_cogvideo_finetune(tmp_path / "ds", tmp_path / "out",
                                      get_profile("tiny-1.5"))
    (run,) = report.trainer_args
    assert run[run.index("--model_name") + 1] == "cogvideox1.5-t2v"
    latent = load_file(next((tmp_path / "out" / "cache" / "video_latent").rglob("*.safetensors"))
                       )["encoded_video"]
    assert latent.shape[1] == 5  # the trainer pads to even itself (compute_loss)


def test_an_export_after_a_bucket_change_keeps_no_stale_manifest(tmp_path):
    one_bucket = [c for c in CLIPS if c[3] == 9]
    build_dataset(tmp_path / "ds", one_bucket)
    export_cogvideo_finetune(tmp_path / "ds", tmp_path / "out", TINY)
    assert (tmp_path / "out" / "videos.txt").is_file()
    build_dataset(tmp_path / "ds", CLIPS, seed=99)  # a second bucket: per-bucket manifests
    export_cogvideo_finetune(tmp_path / "ds", tmp_path / "out", TINY)
    names = sorted(p.name for p in (tmp_path / "out").iterdir())
    assert "videos.txt" not in names and "prompts.txt" not in names, names
    assert {"videos_9x64x96.txt", "videos_17x64x64.txt"} <= set(names)
    listed = {line for p in (tmp_path / "out").glob("videos_*.txt")
              for line in read_lines(p)}
    on_disk = {f"videos/{p.name}" for p in (tmp_path / "out" / "videos").iterdir()}
    assert listed == on_disk  # no video of the previous export left behind


def test_f_that_is_no_train_resolution_is_refused_naming_the_clip(tmp_path):
    build_dataset(tmp_path / "ds", CLIPS + [("shard-00000", "clips/t.mp4", "t", 13, 64, 64)])
    with pytest.raises(ValueError, match=r"'clips/t.mp4'.*F=13"):
        export_cogvideo_finetune(tmp_path / "ds", tmp_path / "out", TINY)
    assert not (tmp_path / "out").exists()


def test_captions_that_flatten_alike_are_refused(tmp_path):
    build_dataset(tmp_path / "ds", [("shard-00000", "clips/a.mp4", "a cat\nsits", 9, 64, 96),
                                    ("shard-00000", "clips/b.mp4", "a cat sits", 9, 64, 96)])
    with pytest.raises(ValueError, match="'clips/b.mp4'.*'clips/a.mp4'"):
        export_cogvideo_finetune(tmp_path / "ds", tmp_path / "out", TINY)
