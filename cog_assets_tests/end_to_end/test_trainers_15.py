"""CogVideoX 1.5 exports train: a toy `CogVideoXTransformer3DModel(patch_size_t=2)` forward on
what each trainer makes of the exported tensors, for the 1.5 twins, T2V and I2V.

The twins (`tiny-1.5`, `tiny-1.5-i2v`) have 1.5's frame rule (17 frames: 5 latent frames, odd
like 81 frames' 21), temporal patch 2 and inverted latent scaling, so the failure the issue
saw (`shape '[1, 10, 2, ...]' is invalid`, 21 latent frames) shows here as 5 frames.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest
import torch
from dagster import instance_for_test
from PIL import Image
from safetensors.torch import load_file

from cog_assets.core.config import Settings
from cog_assets.core.profiles import ModelProfile, get_profile
from cog_assets.defs.runs import materialize_shards
from cog_assets.exports import export_cogvideo_finetune, export_cogvideox_factory
from cog_assets.media.synthetic import write_test_dataset
from cog_assets.models.tiny import tiny_vae
from cog_assets_tests.fixtures.datasets import build_dataset
from cog_assets_tests.fixtures.trainer_datasets import (
    cogvideox_factory_items,
    read_lines,
    read_picture,
)
from cog_assets_tests.fixtures.trainers import (
    cogvideo_image_latent,
    cogvideo_pad,
    factory_latent,
    forward,
    toy_transformer,
)

TWINS = ["tiny-1.5", "tiny-1.5-i2v"]


def train_on_factory_export(profile: ModelProfile, out: Path) -> int:
    """Every clip of a cogvideox-factory export through the toy transformer; returns how many."""
    transformer = toy_transformer(profile)
    items = cogvideox_factory_items(out, image_to_video=profile.i2v)
    for item in items:
        video = factory_latent(item["video"], profile.scaling_factor)
        image = (factory_latent(item["image"], profile.scaling_factor) if profile.i2v
                 else None)
        prediction = forward(transformer, video, item["embeds"], image)
        assert prediction.shape == (1, video.shape[1], 16, *video.shape[2:])
        assert torch.isfinite(prediction).all()
    return len(items)


def train_on_finetune_export(profile: ModelProfile, out: Path) -> int:
    """Every clip of a CogVideo finetune/ export, prepared as its trainers do."""
    transformer = toy_transformer(profile)
    vae = tiny_vae(profile.scaling_factor, profile.invert_scale_latents)
    model = f"{profile.family}-{'i2v' if profile.i2v else 't2v'}"
    done = 0
    for latent_path in sorted((out / "cache" / "video_latent" / model).rglob("*.safetensors")):
        stem, resolution = latent_path.stem, latent_path.parent.name
        f, h, w = map(int, resolution.split("x"))
        prompts = read_lines(out / f"prompts_{resolution}.txt")
        videos = read_lines(out / f"videos_{resolution}.txt")
        prompt = prompts[[Path(v).stem for v in videos].index(stem)]
        embeds = load_file(out / "cache" / "prompt_embeddings" /
                           f"{hashlib.sha256(prompt.encode()).hexdigest()}.safetensors"
                           )["prompt_embedding"]
        video = cogvideo_pad(load_file(latent_path)["encoded_video"].float(),
                             profile.temporal_patch)
        image = None
        if profile.i2v:
            image = cogvideo_image_latent(vae, read_picture(out / "images" / f"{stem}.png", h, w))
        prediction = forward(transformer, video, embeds, image)
        assert prediction.shape == (1, video.shape[1], 16, h // 8, w // 8)
        done += 1
    return done


@pytest.mark.parametrize("name", TWINS)
def test_15_exports_go_through_the_15_transformer(tmp_path, name):
    profile = get_profile(name)
    clips = [("shard-00000", "clips/a.mp4", "a red ball", 17, 64, 96),
             ("shard-00001", "clips/b.mp4", "a blue cube", 33, 64, 96)]
    build_dataset(tmp_path / "ds", clips, profile=profile, image_latents=profile.i2v)
    export_cogvideox_factory(tmp_path / "ds", tmp_path / "factory", profile)
    export_cogvideo_finetune(tmp_path / "ds", tmp_path / "finetune", profile)
    assert train_on_factory_export(profile, tmp_path / "factory") == 2
    assert train_on_finetune_export(profile, tmp_path / "finetune") == 2


def test_unpadded_15_latents_are_what_the_transformer_refuses():
    """The control: odd latent frames, as the factory export wrote them before, fail."""
    profile = get_profile("tiny-1.5")
    odd = torch.randn(16, profile.latent_frames(17), 8, 12)
    with pytest.raises(RuntimeError, match=r"shape '\[1, 2, 2, .*' is invalid"):
        forward(toy_transformer(profile), odd, torch.randn(226, 32))


@pytest.fixture(scope="module")
def materialized_twins(tmp_path_factory):
    """Both 1.5 twins materialized by the pipeline from generated videos (and one PNG)."""
    root = write_test_dataset(tmp_path_factory.mktemp("data"), 3, broken=False)
    Image.fromarray(np.full((120, 180, 3), (30, 200, 90), dtype=np.uint8)).save(root / "s.png")
    (root / "images.txt").write_text("\ns.png\n\n")
    store = tmp_path_factory.mktemp("store")
    with instance_for_test() as instance:
        for name in TWINS:
            settings = Settings.of(data_root=str(root), store=str(store), profile=name,
                                   shards=2, device="cpu")
            summaries = materialize_shards(settings, instance)
            assert all(s.success for s in summaries.values()), summaries
            assert sum(s.accepted for s in summaries.values()) == 3
    return store


@pytest.mark.slow
@pytest.mark.parametrize("name", TWINS)
def test_pipeline_15_datasets_export_and_train(materialized_twins, tmp_path, name):
    profile = get_profile(name)
    dataset = materialized_twins / "datasets" / name
    export_cogvideox_factory(dataset, tmp_path / "factory", profile)
    export_cogvideo_finetune(dataset, tmp_path / "finetune", profile)
    assert train_on_factory_export(profile, tmp_path / "factory") == 3
    assert train_on_finetune_export(profile, tmp_path / "finetune") == 3
