"""The served dataset is never silently wrong, end to end through Dagster runs:

- re-sharding 4 -> 2 and deleting a clip leave nothing stale for the loader or the exports;
- a flipped byte in a cached latent (in its shard's file, its home): `cog-assets verify`
  exits 1 naming it, the next run recomputes exactly it (from its frames, decoded again) and
  says so, and verify is clean again;
- an id token reaches the captions, the embeddings and the exports.
"""

from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path

import polars as pl
import pytest
import torch
from dagster import instance_for_test

from cog_assets.cli import main
from cog_assets.core.choices import ArtifactKind
from cog_assets.core.config import Settings
from cog_assets.core.keys import caption_sha256
from cog_assets.core.profiles import get_profile
from cog_assets.defs.runs import materialize_shards
from cog_assets.exports import export_cogvideo_finetune, export_cogvideox_factory
from cog_assets.loader import CogVideoXLatentDataset
from cog_assets.media.synthetic import write_test_dataset
from cog_assets.store import layout
from cog_assets.store.catalog import load_catalog
from cog_assets.store.collection import collect, plan_gc
from cog_assets.store.content_store import ContentStore

pytestmark = pytest.mark.slow
TINY = get_profile("tiny")


def verify(store: Path, *args: str) -> tuple[int, str]:
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = main(["verify", "--store", str(store), *args])
    return code, out.getvalue()


def _delete_clip(root: Path, clip_id: str) -> None:
    videos = (root / "videos.txt").read_text().splitlines()
    prompts = (root / "prompts.txt").read_text().splitlines()
    keep = [i for i, v in enumerate(videos) if v != clip_id]
    (root / "videos.txt").write_text("".join(f"{videos[i]}\n" for i in keep))
    (root / "prompts.txt").write_text("".join(f"{prompts[i]}\n" for i in keep))
    (root / clip_id).unlink()


def test_resharding_and_a_deleted_clip_leave_nothing_stale(tmp_path):
    root = write_test_dataset(tmp_path / "data", 10, broken=False, seconds=1.2)
    store = tmp_path / "store"
    dataset_dir = store / "datasets" / "tiny"
    with instance_for_test() as instance:
        four = Settings.of(data_root=str(root), store=str(store), shards=4, device="cpu")
        assert all(s.success for s in materialize_shards(four, instance).values())
        assert len(CogVideoXLatentDataset(dataset_dir, "tiny")) == 10
        _delete_clip(root, "clips/clip_03.mp4")
        two = four.with_(shards=2)
        summaries = materialize_shards(two, instance)
        assert all(s.success for s in summaries.values()), summaries
    remaining = sorted(f"clips/clip_{i:02d}.mp4" for i in range(10) if i != 3)
    dataset = CogVideoXLatentDataset(dataset_dir, "tiny", verify=True)
    assert sorted(dataset.clip_ids) == remaining  # each once, the deleted one gone
    listed = load_catalog(dataset_dir)
    assert sorted(listed.shards) == ["shard-00000", "shard-00001"]
    # the retired shards' folders stay for readers that opened them, until gc
    retired = sorted(listed.retired_at)
    assert retired and set(retired) <= {"shard-00002", "shard-00003"}
    assert sorted(p.name for p in dataset_dir.glob("shard-*")) == [
        "shard-00000", "shard-00001", *retired]
    store = ContentStore(str(tmp_path / "store"))
    collect(store, plan_gc(store, grace_s=0), grace_s=0)
    assert sorted(p.name for p in dataset_dir.glob("shard-*")) == ["shard-00000", "shard-00001"]
    assert sorted(CogVideoXLatentDataset(dataset_dir, "tiny", verify=True).clip_ids) == \
        remaining
    factory = export_cogvideox_factory(dataset_dir, tmp_path / "factory", TINY)
    finetune = export_cogvideo_finetune(dataset_dir, tmp_path / "finetune", TINY)
    assert factory.clips == finetune.clips == 9
    listed = (tmp_path / "factory" / "videos.txt").read_text().splitlines()
    assert sorted(line.removeprefix("videos/clips_").removesuffix(".mp4") for line in listed) \
        == [c.removeprefix("clips/").removesuffix(".mp4") for c in remaining]


def test_a_flipped_byte_in_a_cached_latent_is_reported_and_recomputed(tmp_path):
    root = write_test_dataset(tmp_path / "data", 3, broken=False)
    store_dir = tmp_path / "store"
    settings = Settings.of(data_root=str(root), store=str(store_dir), shards=1, device="cpu")
    with instance_for_test() as instance:
        [first] = materialize_shards(settings, instance).values()
        assert first.success
        assert verify(store_dir)[0] == 0
        index = pl.read_parquet(first.index_path)
        row = index.row(0, named=True)
        key = row["latent_key"]
        store = ContentStore(str(store_dir))
        good = store.get_tensors(ArtifactKind.latents, key)["moments"]
        # the latent lives in the shard's file (the store keeps a reference): flip a byte of it
        shard_file = Path(first.index_path).parent / row["latents_file"]
        data = bytearray(shard_file.read_bytes())
        length = int.from_bytes(data[:8], "little")
        start = 8 + length + json.loads(data[8:8 + length])[row["clip_id"]]["data_offsets"][0]
        data[start + 123] ^= 0x20  # same size, the header still parses
        shard_file.write_bytes(bytes(data))
        ref = Path(store.path(layout.ref_path(ArtifactKind.latents, key)))

        code, report = verify(store_dir)
        assert code == 1
        assert f"CORRUPT  {shard_file}: blake3" in report  # the file, by its catalog digest
        assert f"CORRUPT  {ref}: vae_moments {key}: " in report  # the latent, by its own
        assert "2 corrupt, 0 missing" in report
        assert verify(store_dir, "--profile", "tiny")[0] == 1  # referenced by the dataset

        # Nothing changed upstream, so a plain backfill would skip the shard as up to date
        # without reading its artefacts (verify is what finds the damage); forced, the run
        # reads the latent, finds it corrupt and computes it again.
        [skipped] = materialize_shards(settings, instance).values()
        assert skipped.up_to_date
        [second] = materialize_shards(settings, instance, force=True).values()
        assert second.success, second.failure
        assert second.computed == 1  # exactly the damaged latent (its frames decoded again)
        assert len(second.corrupt) == 1 and key in second.corrupt[0] and str(ref) in \
            second.corrupt[0]
    assert torch.equal(ContentStore(str(store_dir)).get_tensors(ArtifactKind.latents, key)[
        "moments"], good)
    assert verify(store_dir)[0] == 0  # the shard file was written again, whole
    assert list((store_dir / "quarantine" / "vae_moments").glob(f"{key}.*.corrupt"))


def test_a_changed_shard_file_and_a_missing_one_fail_verify(tmp_path):
    root = write_test_dataset(tmp_path / "data", 2, broken=False)
    store_dir = tmp_path / "store"
    settings = Settings.of(data_root=str(root), store=str(store_dir), shards=1, device="cpu")
    with instance_for_test() as instance:
        assert all(s.success for s in materialize_shards(settings, instance).values())
    shard = store_dir / "datasets" / "tiny" / "shard-00000"
    embeds = next(shard.glob("prompt_embeds.*.safetensors"))
    embeds.write_bytes(embeds.read_bytes()[:-1] + b"\x00")
    next(shard.glob("latents.*.safetensors")).unlink()
    code, report = verify(store_dir, "--dataset", "tiny")
    # the two shard files, and what lives in them: the embedding whose bytes changed, the
    # two latents whose file is gone
    assert code == 1 and "2 corrupt, 3 missing" in report, report
    assert f"CORRUPT  {embeds}" in report
    assert report.count("the shard file it lives in is gone") == 2


def test_an_id_token_reaches_captions_embeddings_and_exports(tmp_path):
    root = write_test_dataset(tmp_path / "data", 2, broken=False)
    store_dir = tmp_path / "store"
    settings = Settings.of(data_root=str(root), store=str(store_dir), shards=1, device="cpu",
                           id_token="BW_STYLE")
    with instance_for_test() as instance:
        [summary] = materialize_shards(settings, instance).values()
    assert summary.success, summary.failure
    index = pl.read_parquet(summary.index_path)
    assert all(c.startswith("BW_STYLE a bright square") for c in index["caption"])
    assert index["caption_sha256"].to_list() == [caption_sha256(c) for c in index["caption"]]
    out = tmp_path / "factory"
    report = export_cogvideox_factory(store_dir / "datasets" / "tiny", out, TINY,
                                      id_token="BW_STYLE")
    prompts = (out / "prompts.txt").read_text().splitlines()
    assert prompts and all(p.startswith("BW_STYLE ") for p in prompts)
    assert "--id_token BW_STYLE" in report.args_text()


def test_a_damaged_frames_file_met_by_vae_latents_is_decoded_again(tmp_path):
    """Frames are a cache: a damaged one is replaced as a damaged latent is, not a failure."""
    root = write_test_dataset(tmp_path / "data", 3, broken=False)
    store_dir = tmp_path / "store"
    settings = Settings.of(data_root=str(root), store=str(store_dir), shards=1, device="cpu",
                           frames_retention="keep")
    with instance_for_test() as instance:
        [first] = materialize_shards(settings, instance).values()
        assert first.success
        index = pl.read_parquet(first.index_path)
        key = index["frames_key"][1]
        frames = Path(ContentStore(str(store_dir)).artifact_path(ArtifactKind.frames, key))
        data = bytearray(frames.read_bytes())
        data[-1000] ^= 0x10  # a pixel changed: same size, the header parses
        frames.write_bytes(bytes(data))
        # new latents (tiling) need every clip's frames: the damaged one is met when read
        [second] = materialize_shards(settings.with_(vae_tiling=True), instance).values()
    assert second.success, second.failure
    [line] = second.corrupt
    assert line.startswith(f"frames artefact {key} at {frames}: ") and "decoded again" in line
    assert CogVideoXLatentDataset(store_dir / "datasets" / "tiny", "tiny", verify=True)[1]


def test_the_loader_and_the_exports_scale_by_the_vae_that_made_the_latents(tmp_path):
    """Tiny weights whose VAE says 1.15258426 (CogVideoX-2b's factor), not the tiny 0.7: the
    shard records it and the loader and both exports use it, as CogVideo's encode_video
    (`vae.config.scaling_factor`) would."""
    from cog_assets.exports.cogvideo_finetune import sample_seed
    from cog_assets.loader import sample_from_moments
    from cog_assets_tests.fixtures.weights import write_tiny_weights

    factor = 1.15258426
    weights = write_tiny_weights(tmp_path / "weights", scaling_factor=factor)
    root = write_test_dataset(tmp_path / "data", 2, broken=False)
    store_dir = tmp_path / "store"
    settings = Settings.of(data_root=str(root), store=str(store_dir), shards=1, device="cpu",
                           weights=str(weights))
    with instance_for_test() as instance:
        [summary] = materialize_shards(settings, instance).values()
    assert summary.success, summary.failure
    dataset_dir = store_dir / "datasets" / "tiny"
    dataset = CogVideoXLatentDataset(dataset_dir, "tiny", sample=False)
    mean = dataset.moments(0).float().chunk(2, dim=0)[0]
    assert torch.allclose(dataset[0]["latents"], mean * factor)
    [entry] = load_catalog(dataset_dir).shards.values()
    assert (entry.scaling_factor, entry.invert_scale_latents) == (factor, False)
    export_cogvideo_finetune(dataset_dir, tmp_path / "finetune", TINY)
    [cached] = (tmp_path / "finetune").glob(
        f"cache/video_latent/*/*/{dataset.clip_ids[0].replace('/', '_').removesuffix('.mp4')}*")
    from safetensors.torch import load_file

    generator = torch.Generator().manual_seed(sample_seed(0, dataset.clip_ids[0]))
    expected = sample_from_moments(dataset.moments(0), generator) * factor
    assert torch.allclose(load_file(cached)["encoded_video"], expected)
