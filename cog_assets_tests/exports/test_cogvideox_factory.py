"""The cogvideox-factory export, read back the way its `--load_tensors` dataset reads it.

The reader below follows a-r-r-o-w/cogvideox-factory `training/dataset.py`
(`_load_dataset_from_local_path`, `_load_preprocessed_latents_and_embeds`, `__getitem__`) and
`BucketSampler`'s lookup of `(F, H, W)` in frame x height x width buckets, whose defaults
(`HEIGHT_BUCKETS`, `WIDTH_BUCKETS`, `FRAME_BUCKETS`) are copied below as that file has them.
"""

from __future__ import annotations

import math
import shlex

import pytest
import torch
from diffusers.models.autoencoders.vae import DiagonalGaussianDistribution

from cog_assets.core.profiles import get_profile
from cog_assets.exports import ExportReport, export_cogvideox_factory
from cog_assets.exports.naming import clip_stems
from cog_assets_tests.fixtures.datasets import (
    CLIPS,
    FLAT,
    Expected,
    build_dataset,
    leftover_temp_files,
)
from cog_assets_tests.fixtures.trainer_datasets import (
    cogvideox_factory_items,
)

TINY = get_profile("tiny")
TINY_I2V = get_profile("tiny-i2v")

# training/dataset.py, the defaults a run without --*_buckets uses
HEIGHT_BUCKETS = [256, 320, 384, 480, 512, 576, 720, 768, 960, 1024, 1280, 1536]
WIDTH_BUCKETS = [256, 320, 384, 480, 512, 576, 720, 768, 960, 1024, 1280, 1536]
FRAME_BUCKETS = [16, 24, 32, 48, 64, 80]


def parsed_args(report: ExportReport) -> dict[str, list[str]]:
    (args,) = report.trainer_args
    groups, flag = {}, None
    for arg in args:
        if arg.startswith("--"):
            flag = arg
            groups[flag] = []
        else:
            groups[flag].append(arg)
    return groups


def trainer_buckets(report: ExportReport) -> set[tuple[int, int, int]]:
    """The (F, H, W) keys BucketSampler builds from the reported --*_buckets arguments."""
    groups = parsed_args(report)
    return {(int(f), int(h), int(w)) for h in groups["--height_buckets"]
            for w in groups["--width_buckets"] for f in groups["--frame_buckets"]}


def sampler_batches(items: list[dict], resolutions: set[tuple[int, int, int]]) -> list[list]:
    """BucketSampler.__iter__: each item goes to `self.buckets[(f, h, w)]`, a dict made of
    the resolutions; an item whose key is missing raises KeyError mid-epoch."""
    buckets: dict[tuple[int, int, int], list] = {r: [] for r in resolutions}
    for item in items:
        buckets[item["fhw"]].append(item)
    return [b for b in buckets.values() if b]


def match(expected: dict[str, Expected], latents: torch.Tensor) -> str:
    found = [cid for cid, e in expected.items() if torch.equal(e.moments, latents)]
    assert len(found) == 1
    return found[0]


def test_export_reads_back_as_the_dataset(tmp_path):
    expected = build_dataset(tmp_path / "ds")
    report = export_cogvideox_factory(tmp_path / "ds", tmp_path / "out", TINY)
    items = cogvideox_factory_items(tmp_path / "out")
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
    assert sum(map(len, sampler_batches(items, trainer_buckets(report)))) == len(items)


def test_the_factorys_default_buckets_would_fail_the_emitted_ones_do_not(tmp_path):
    build_dataset(tmp_path / "ds")
    report = export_cogvideox_factory(tmp_path / "ds", tmp_path / "out", TINY)
    items = cogvideox_factory_items(tmp_path / "out")
    defaults = {(f, h, w) for h in HEIGHT_BUCKETS for w in WIDTH_BUCKETS for f in FRAME_BUCKETS}
    with pytest.raises(KeyError, match=r"\(9, 64, 96\)"):
        sampler_batches(items, defaults)
    assert len(sampler_batches(items, trainer_buckets(report))) == 2  # two shapes, no error
    written = (tmp_path / "out" / "trainer_args.txt").read_text().splitlines()
    assert shlex.join(report.trainer_args[0]) in written  # exactly what the CLI prints


def test_each_prompt_line_is_its_own_clips_caption(tmp_path):
    """The pairing a trainer relies on: line i of prompts.txt is the caption of the clip whose
    tensors line i of videos.txt names (matched by stem, not by "the prompt exists")."""
    expected = build_dataset(tmp_path / "ds")
    export_cogvideox_factory(tmp_path / "ds", tmp_path / "out", TINY)
    stems = clip_stems(expected)
    by_stem = {stem: clip_id for clip_id, stem in stems.items()}
    items = cogvideox_factory_items(tmp_path / "out")
    for item in items:
        clip_id = by_stem[item["path"].name.split(".")[0]]
        assert item["prompt"] == FLAT[expected[clip_id].caption]
        assert torch.equal(item["video"], expected[clip_id].moments)
    assert len(items) == len(expected)


def test_mixed_precision_follows_the_tensors_dtype(tmp_path):
    build_dataset(tmp_path / "ds", dtype=torch.bfloat16)
    report = export_cogvideox_factory(tmp_path / "ds", tmp_path / "out", TINY, id_token="BW")
    args = parsed_args(report)
    assert args["--mixed_precision"] == ["bf16"] and args["--id_token"] == ["BW"]
    assert cogvideox_factory_items(tmp_path / "out")[0]["video"].dtype == torch.bfloat16


def test_15_latents_are_padded_to_even_with_their_frame_buckets(tmp_path):
    profile = get_profile("tiny-1.5")
    clips = [("shard-00000", "clips/a.mp4", "a", 17, 64, 96),
             ("shard-00000", "clips/b.mp4", "b", 33, 64, 96)]
    expected = build_dataset(tmp_path / "ds", clips, profile=profile)
    report = export_cogvideox_factory(tmp_path / "ds", tmp_path / "out", profile)
    assert parsed_args(report)["--frame_buckets"] == ["24", "40"]  # 4·F' for F' = 6 and 10
    items = cogvideox_factory_items(tmp_path / "out")
    for item in items:
        moments = expected[{"a": "clips/a.mp4", "b": "clips/b.mp4"}[item["prompt"]]].moments
        assert item["video"].shape[1] == moments.shape[1] + 1 and item["video"].shape[1] % 2 == 0
        assert torch.equal(item["video"][:, 1:], moments)  # the clip's own frames, in order
        assert torch.equal(item["video"][:, 0], moments[:, 0])  # the first one repeated
    assert sum(map(len, sampler_batches(items, trainer_buckets(report)))) == 2


@pytest.mark.parametrize("scaling", ["inference", "multiply"])
def test_15_i2v_image_latents_follow_the_scaling_choice(tmp_path, scaling):
    """What the factory's I2V script computes from image_latents/<stem>.pt,
    `DiagonalGaussianDistribution(images).sample() * VAE_SCALING_FACTOR`, is the chosen
    convention applied to a draw of the stored moments, with the same noise."""
    profile = get_profile("tiny-1.5-i2v")
    clips = [("shard-00000", "clips/a.mp4", "a", 17, 64, 96)]
    expected = build_dataset(tmp_path / "ds", clips, profile=profile, image_latents=True)
    export_cogvideox_factory(tmp_path / "ds", tmp_path / "out", profile,
                             image_latent_scaling=scaling)
    (item,) = cogvideox_factory_items(tmp_path / "out", image_to_video=True)
    scale = profile.scaling_factor
    trainer = DiagonalGaussianDistribution(item["image"][None]).sample(
        torch.Generator().manual_seed(5))[0] * scale
    original = DiagonalGaussianDistribution(expected["clips/a.mp4"].image_latent[None]).sample(
        torch.Generator().manual_seed(5))[0]
    factor = 1 / scale if scaling == "inference" else scale
    torch.testing.assert_close(trainer, original * factor, rtol=1e-5, atol=1e-5)
    assert math.isclose(factor, 1 / 0.7) or math.isclose(factor, 0.7)


def test_image_latents_for_an_i2v_profile(tmp_path):
    expected = build_dataset(tmp_path / "ds", image_latents=True)
    export_cogvideox_factory(tmp_path / "ds", tmp_path / "out", TINY_I2V)
    for item in cogvideox_factory_items(tmp_path / "out", image_to_video=True):
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


def test_segment_stems_keep_both_times_whole():
    from cog_assets.exports.naming import clip_stems

    stems = clip_stems(["trailers/a.mp4#t=10.320,17.000", "trailers/a.mp4#t=0.000,10.320",
                        "trailers/a.mp4"])
    # before: "trailers_a_mp4_t_10_320_17" (the end time cut at its dot)
    assert stems == {"trailers/a.mp4#t=10.320,17.000": "trailers_a_t10s320-17s000",
                     "trailers/a.mp4#t=0.000,10.320": "trailers_a_t0s000-10s320",
                     "trailers/a.mp4": "trailers_a"}
