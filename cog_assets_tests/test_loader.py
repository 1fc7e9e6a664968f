"""The training-side reader: scaling conventions, 1.5 frame padding, bucket batches."""

import polars as pl
import torch
from safetensors.torch import save_file

from cog_assets.loader import (
    BucketBatchSampler,
    CogVideoXLatentDataset,
    pad_latent_frames,
)


def _shard(tmp_path, latent_frames: int, image: bool = False):
    shard = tmp_path / "shard-00000"
    shard.mkdir()
    moments = torch.randn(32, latent_frames, 4, 6)
    moments[16:] = -4.0  # small logvar
    save_file({"a.mp4": moments}, str(shard / "latents.safetensors"))
    save_file({"h": torch.randn(226, 8)}, str(shard / "prompt_embeds.safetensors"))
    columns = {"clip_id": ["a.mp4"], "caption": ["x"], "caption_sha256": ["h"],
               "bucket": ["81x32x48"], "has_image_latent": [image]}
    if image:
        save_file({"a.mp4": moments[:, :1].clone()}, str(shard / "image_latents.safetensors"))
    pl.DataFrame(columns).write_parquet(shard / "index.parquet")
    return tmp_path, moments


def test_15_pads_odd_latent_frames_by_repeating_the_first(tmp_path):
    root, moments = _shard(tmp_path, 21)
    item = CogVideoXLatentDataset(root, "cogvideox1.5-5b", sample=False)[0]
    assert item["latents"].shape == (16, 22, 4, 6)
    expected = moments[:16] * 0.7
    torch.testing.assert_close(item["latents"][:, 1:], expected)
    torch.testing.assert_close(item["latents"][:, 0], expected[:, 0])


def test_10_keeps_latent_frames_and_scales_by_the_factor(tmp_path):
    root, moments = _shard(tmp_path, 13)
    item = CogVideoXLatentDataset(root, "cogvideox-2b", sample=False)[0]
    torch.testing.assert_close(item["latents"], moments[:16] * 1.15258426)


def test_invert_scale_latents_divides_image_latents(tmp_path):
    root, moments = _shard(tmp_path, 21, image=True)
    item = CogVideoXLatentDataset(root, "cogvideox1.5-5b-i2v", sample=False)[0]
    torch.testing.assert_close(item["image_latents"], moments[:16, :1] / 0.7)


def test_samples_are_seeded_and_near_the_mean(tmp_path):
    root, moments = _shard(tmp_path, 13)
    a = CogVideoXLatentDataset(root, "cogvideox-5b", seed=1)[0]["latents"]
    b = CogVideoXLatentDataset(root, "cogvideox-5b", seed=1)[0]["latents"]
    c = CogVideoXLatentDataset(root, "cogvideox-5b", seed=2)[0]["latents"]
    assert torch.equal(a, b) and not torch.equal(a, c)
    noise = a / 0.7 - moments[:16]
    assert abs(noise.mean()) < 0.01 and abs(noise.std() - torch.exp(torch.tensor(-2.0))) < 0.01


def test_pad_is_a_no_op_for_even_counts():
    latent = torch.randn(16, 4, 2, 2)
    assert pad_latent_frames(latent, 2) is latent


def test_bucket_batches_never_mix_buckets():
    buckets = ["a"] * 5 + ["b"] * 3 + ["a"] * 2
    sampler = BucketBatchSampler(buckets, batch_size=2, seed=3)
    batches = list(sampler)
    assert sorted(i for b in batches for i in b) == list(range(10))
    for batch in batches:
        assert len({buckets[i] for i in batch}) == 1
    sampler.set_epoch(1)
    assert list(sampler) != batches or len(batches) < 3
    assert all(len(b) == 2 for b in BucketBatchSampler(buckets, 2, drop_last=True))
