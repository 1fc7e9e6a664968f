"""The shape and finiteness checks on stored tensors cover the I2V image moments too."""

import polars as pl
import torch

from cog_assets.core.choices import ArtifactKind
from cog_assets.core.profiles import get_profile
from cog_assets.store.content_store import ContentStore
from cog_assets.store.tensor_checks import latent_problems

I2V = get_profile("tiny-i2v")


def _latents(tmp_path, **tensors):
    store = ContentStore(str(tmp_path))
    store.put_tensors(ArtifactKind.latents, "k" * 64, tensors)
    table = pl.DataFrame({"clip_id": ["clips/a.mp4"], "latent_key": ["k" * 64],
                          "bucket": ["9x64x96"]})
    return latent_problems(table, store, I2V)


def test_whole_i2v_moments_pass(tmp_path):
    assert _latents(tmp_path, moments=torch.zeros(32, 3, 8, 12),
                    image_moments=torch.zeros(32, 1, 8, 12)) == []


def test_a_nan_image_latent_fails_naming_the_clip(tmp_path):
    image = torch.zeros(32, 1, 8, 12)
    image[3, 0, 2, 2] = float("nan")
    assert _latents(tmp_path, moments=torch.zeros(32, 3, 8, 12), image_moments=image) == [
        "clips/a.mp4 (image): 1 NaN/Inf values"]


def test_image_moments_of_the_wrong_shape_or_missing_fail(tmp_path):
    problems = _latents(tmp_path, moments=torch.zeros(32, 3, 8, 12),
                        image_moments=torch.zeros(32, 3, 8, 12))
    assert problems == ["clips/a.mp4 (image): shape (32, 3, 8, 12), expected (32, 1, 8, 12)"]
    assert _latents(tmp_path, moments=torch.zeros(32, 3, 8, 12)) == [
        "clips/a.mp4: no image moments (the profile is I2V)"]


def test_a_corrupt_latent_is_a_problem_naming_its_key_and_path(tmp_path):
    store = ContentStore(str(tmp_path))
    path = tmp_path / store.put_tensors(ArtifactKind.latents, "k" * 64,
                                        {"moments": torch.zeros(32, 3, 8, 12)})
    data = bytearray(path.read_bytes())
    data[-1] ^= 1
    path.write_bytes(bytes(data))
    (problem,) = latent_problems(pl.DataFrame({"clip_id": ["a"], "latent_key": ["k" * 64],
                                               "bucket": ["9x64x96"]}), store, I2V)
    assert problem.startswith(f"a: vae_moments artefact {'k' * 64} at {path} is corrupt")
