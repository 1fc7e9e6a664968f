"""I2V: image latents are the VAE's moments of the clean first frame (or the supplied image)."""

import numpy as np
import polars as pl
import pytest
import torch
from dagster import instance_for_test
from PIL import Image
from safetensors.torch import load_file

from cog_assets.core.config import Settings
from cog_assets.core.profiles import get_profile
from cog_assets.defs.runs import materialize_shards
from cog_assets.loader import CogVideoXLatentDataset
from cog_assets.media.image import read_image
from cog_assets.media.synthetic import write_test_dataset
from cog_assets.models.vae import load_vae
from cog_assets.models.weights import WeightsSource
from cog_assets_tests.fixtures.frames import read_frames
from cog_assets_tests.fixtures.reference import encode_moments

pytestmark = pytest.mark.slow

PROFILE = get_profile("tiny-i2v")


@pytest.fixture(scope="module")
def i2v_shard(tmp_path_factory):
    root = write_test_dataset(tmp_path_factory.mktemp("data"), 3, broken=False)
    image = np.zeros((120, 180, 3), dtype=np.uint8)
    image[:, :, 1] = 200  # a green still for clip 1
    Image.fromarray(image).save(root / "still.png")
    (root / "images.txt").write_text("\nstill.png\n\n")
    settings = Settings.of(data_root=str(root), store=str(tmp_path_factory.mktemp("store")),
                           profile="tiny-i2v", shards=1, device="cpu")
    with instance_for_test() as instance:
        [summary] = materialize_shards(settings, instance).values()
    assert summary.success, summary.failure
    return root, settings, summary


def test_image_latents_equal_vae_moments_of_first_frame(i2v_shard):
    root, settings, summary = i2v_shard
    shard_dir = summary.index_path.rsplit("/", 1)[0]
    index = pl.read_parquet(summary.index_path)
    image_latents = load_file(f"{shard_dir}/{index['image_latents_file'][0]}")
    vae = load_vae(WeightsSource(PROFILE), torch.device("cpu"), torch.float32)
    for row in index.iter_rows(named=True):
        assert row["has_image_latent"]
        if row["clip_id"] == "clips/clip_01.mp4":  # images.txt supplies its first frame
            first = read_image(root / "still.png", PROFILE.height, PROFILE.width, "cover")
        else:
            first = read_frames(root / row["clip_id"], num_frames=9, fps=8,
                                     height=PROFILE.height, width=PROFILE.width)[0]
        expected = encode_moments(vae, torch.from_numpy(first)[None, None])[0]
        got = image_latents[row["clip_id"]]
        assert got.shape == (32, 1, 8, 12)
        torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-4)
        png = np.asarray(Image.open(f"{shard_dir}/{row['first_frame_png']}"))
        assert np.array_equal(png, first)


def test_loader_returns_scaled_image_latents(i2v_shard):
    _, settings, _ = i2v_shard
    dataset = CogVideoXLatentDataset(f"{settings.store.url}/datasets/tiny-i2v", "tiny-i2v",
                                     sample=False)
    item = dataset[0]
    assert item["image_latents"].shape == (16, 1, 8, 12)
    shard_dir, file = dataset.index.select("shard_dir", "image_latents_file").row(0)
    moments = load_file(f"{shard_dir}/{file}")[item["clip_id"]]
    torch.testing.assert_close(item["image_latents"], moments[:16] * PROFILE.scaling_factor)
