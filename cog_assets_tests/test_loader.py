"""The training-side reader: only what the catalog lists, every file checked when it is built,
scaling conventions, 1.5 frame padding, bucket batches."""

import shutil
import warnings

import pytest
import torch

from cog_assets.loader import (
    BadShardWarning,
    BucketBatchSampler,
    CogVideoXLatentDataset,
    pad_latent_frames,
)
from cog_assets.store.catalog import DatasetError
from cog_assets_tests.fixtures.datasets import CLIPS, build_dataset

ONE_15 = [("shard-00000", "a.mp4", "x", 81, 32, 48)]


def _15(tmp_path, profile="cogvideox1.5-5b", image=False):
    from cog_assets.core.profiles import get_profile

    expected = build_dataset(tmp_path / "ds", ONE_15, profile=get_profile(profile),
                             image_latents=image)
    return tmp_path / "ds", expected["a.mp4"]


def test_15_pads_odd_latent_frames_by_repeating_the_first(tmp_path):
    root, clip = _15(tmp_path)
    item = CogVideoXLatentDataset(root, "cogvideox1.5-5b", sample=False)[0]
    assert item["latents"].shape == (16, 22, 4, 6)
    expected = clip.moments[:16] * 0.7
    torch.testing.assert_close(item["latents"][:, 1:], expected)
    torch.testing.assert_close(item["latents"][:, 0], expected[:, 0])


def test_10_keeps_latent_frames_and_scales_by_the_factor(tmp_path):
    from cog_assets.core.profiles import get_profile

    expected = build_dataset(tmp_path / "ds", [("shard-00000", "a.mp4", "x", 49, 32, 48)],
                             profile=get_profile("cogvideox-2b"))
    item = CogVideoXLatentDataset(tmp_path / "ds", "cogvideox-2b", sample=False)[0]
    torch.testing.assert_close(item["latents"], expected["a.mp4"].moments[:16] * 1.15258426)


def test_inference_scaling_divides_image_latents_where_the_vae_inverts(tmp_path):
    root, clip = _15(tmp_path, "cogvideox1.5-5b-i2v", image=True)
    item = CogVideoXLatentDataset(root, "cogvideox1.5-5b-i2v", sample=False)[0]
    torch.testing.assert_close(item["image_latents"], clip.image_latent[:16] / 0.7)


def test_legacy_multiply_scaling_is_available(tmp_path):
    root, clip = _15(tmp_path, "cogvideox1.5-5b-i2v", image=True)
    item = CogVideoXLatentDataset(root, "cogvideox1.5-5b-i2v", sample=False,
                                  image_latent_scaling="multiply")[0]
    torch.testing.assert_close(item["image_latents"], clip.image_latent[:16] * 0.7)


def test_samples_are_seeded_and_near_the_mean(tmp_path):
    from cog_assets.core.profiles import get_profile

    expected = build_dataset(tmp_path / "ds", [("shard-00000", "a.mp4", "x", 49, 32, 48)],
                             profile=get_profile("cogvideox-5b"))
    root, moments = tmp_path / "ds", expected["a.mp4"].moments
    a = CogVideoXLatentDataset(root, "cogvideox-5b", seed=1)[0]["latents"]
    b = CogVideoXLatentDataset(root, "cogvideox-5b", seed=1)[0]["latents"]
    c = CogVideoXLatentDataset(root, "cogvideox-5b", seed=2)[0]["latents"]
    assert torch.equal(a, b) and not torch.equal(a, c)
    mean, logvar = moments.chunk(2)
    z = (a / 0.7 - mean) / torch.exp(0.5 * logvar)
    assert abs(z.mean()) < 0.05 and abs(z.std() - 1) < 0.05


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


# -- what is served, and what is refused ------------------------------------------------------

def test_serves_exactly_the_catalogs_clips(tmp_path):
    build_dataset(tmp_path / "ds")
    leftover = tmp_path / "other"
    build_dataset(leftover, [("shard-00009", "clips/deleted.mp4", "gone", 9, 64, 96)])
    shutil.move(leftover / "shard-00009", tmp_path / "ds" / "shard-00009")  # not listed
    dataset = CogVideoXLatentDataset(tmp_path / "ds", "tiny")
    assert sorted(dataset.clip_ids) == sorted(c[1] for c in CLIPS)


def test_a_clip_in_two_shards_is_refused_naming_it_and_both_shards(tmp_path):
    build_dataset(tmp_path / "ds", [("shard-00000", "clips/a.mp4", "one", 9, 64, 96),
                                    ("shard-00001", "clips/a.mp4", "two", 9, 64, 96)])
    with pytest.raises(DatasetError, match="'clips/a.mp4'.*shard-00000.*shard-00001"):
        CogVideoXLatentDataset(tmp_path / "ds", "tiny")


def _shard_file(root, shard, pattern):
    return next((root / shard).glob(pattern))


@pytest.mark.parametrize("damage", ["delete index", "delete latents", "truncate latents",
                                    "garbage latents", "truncate index"])
def test_a_damaged_shard_is_refused_when_built_naming_the_file(tmp_path, damage):
    build_dataset(tmp_path / "ds")
    what, name = damage.split()
    path = _shard_file(tmp_path / "ds", "shard-00001",
                       "index.*.parquet" if name == "index" else "latents.*.safetensors")
    data = path.read_bytes()
    if what == "delete":
        path.unlink()
    elif what == "truncate":
        path.write_bytes(data[: len(data) // 2])
    else:  # same size, not safetensors any more
        path.write_bytes(b"\xff" * len(data))
    with pytest.raises(DatasetError, match=str(path)):
        CogVideoXLatentDataset(tmp_path / "ds", "tiny")


def test_skip_bad_shards_serves_the_others_and_says_so(tmp_path):
    build_dataset(tmp_path / "ds")
    _shard_file(tmp_path / "ds", "shard-00001", "latents.*.safetensors").unlink()
    with pytest.warns(BadShardWarning, match="shard-00001"):
        dataset = CogVideoXLatentDataset(tmp_path / "ds", "tiny", skip_bad_shards=True)
    assert sorted(dataset.clip_ids) == sorted(c[1] for c in CLIPS if c[0] == "shard-00000")
    assert list(dataset.skipped) == ["shard-00001"]


def test_verify_compares_every_file_with_its_published_digest(tmp_path):
    build_dataset(tmp_path / "ds")
    path = _shard_file(tmp_path / "ds", "shard-00000", "prompt_embeds.*.safetensors")
    data = bytearray(path.read_bytes())
    data[-3] ^= 0x10  # inside a tensor: same size, the header still parses
    path.write_bytes(bytes(data))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert len(CogVideoXLatentDataset(tmp_path / "ds", "tiny")) == len(CLIPS)  # unverified
    with pytest.raises(DatasetError, match=f"{path}.*differs from what was published"):
        CogVideoXLatentDataset(tmp_path / "ds", "tiny", verify=True)


def test_a_folder_without_a_catalog_is_refused_saying_what_to_pass(tmp_path):
    build_dataset(tmp_path / "ds")
    with pytest.raises(DatasetError, match="no catalog.*shard folder"):
        CogVideoXLatentDataset(tmp_path / "ds" / "shard-00000", "tiny")


def test_a_loader_keeps_the_version_it_opened_until_gc_removes_it(tmp_path):
    """A trainer mid-epoch: its shard is republished with other content; the loader it opened
    reads the old version to the end of its epoch; gc keeps that version for gc_grace_s after
    it was superseded, and only with no grace (documented: it may break open readers) removes
    it under the reader."""
    from cog_assets.store.collection import collect, plan_gc
    from cog_assets.store.content_store import ContentStore

    store = ContentStore(str(tmp_path / "store"))
    root = tmp_path / "store" / "datasets" / "tiny"
    old = build_dataset(root, store=store, seed=1)
    trainer = CogVideoXLatentDataset(root, "tiny", sample=False)
    build_dataset(root, store=store, seed=2)  # every clip's latents new: a new version
    for i in range(len(trainer)):  # the rest of the epoch
        item = trainer[i]
        mean = old[item["clip_id"]].moments.float().chunk(2)[0]
        assert torch.allclose(item["latents"], mean * 0.7)
    assert not torch.allclose(CogVideoXLatentDataset(root, "tiny", sample=False)[0]["latents"],
                              trainer[0]["latents"])  # a new loader reads the new version
    collect(store, plan_gc(store, grace_s=3600), grace_s=3600)
    trainer[0]  # within the grace period: still there
    collect(store, plan_gc(store, grace_s=0), grace_s=0)
    with pytest.raises(DatasetError, match="cannot read"):
        trainer[0]
