"""Frames are a cache: dropped once their shard is published, never decoded again while the
latents they made exist, decoded again (from the frames table's recipe) when a new VAE, dtype
or tiling needs them; the contact sheet comes from a small thumbnail that stays."""

from __future__ import annotations

import json
from pathlib import Path

import polars as pl
import pytest
import torch

from cog_assets.core.choices import ArtifactKind
from cog_assets.core.config import FrameSettings, MediaLimits, SourceSettings
from cog_assets.core.keys import VaeIdentity
from cog_assets.core.profiles import get_profile
from cog_assets.media.frame_policy import FramePolicy
from cog_assets.media.synthetic import write_test_dataset, write_test_video
from cog_assets.models.vae import load_vae
from cog_assets.models.weights import WeightsSource
from cog_assets.stages.frames import FramesLost, decode_again, extract_frames
from cog_assets.stages.latents import encode_latents
from cog_assets.stages.manifest import build_manifest
from cog_assets.stages.validation import validate_clips
from cog_assets.store import layout
from cog_assets.store.content_store import ContentStore
from cog_assets.store.leases import Lease
from cog_assets.store.retention import drop_frames

TINY = get_profile("tiny")
WEIGHTS = WeightsSource(TINY)
FP32 = VaeIdentity(WEIGHTS.identity("vae"), "float32", False)
BF16 = VaeIdentity(WEIGHTS.identity("vae"), "bfloat16", False)
POLICY = FramePolicy.build(TINY, FrameSettings())


def no_decoding(task):
    raise AssertionError(f"{task.path} was decoded, but its latents exist")


def _vae():
    return load_vae(WEIGHTS, torch.device("cpu"), torch.float32)


@pytest.fixture
def shard(tmp_path):
    """Two real clips, validated, their frames decoded and their fp32 latents encoded."""
    root = write_test_dataset(tmp_path / "data", 2, broken=False)
    store = ContentStore(str(tmp_path / "store"))
    manifest = build_manifest(SourceSettings(data_root=str(root), shard_count=1), "shard-00000")
    validated = validate_clips(manifest, root, POLICY, MediaLimits(),
                               lambda captions: [8] * len(captions), workers=0)
    frames, _ = extract_frames(validated, root, store, POLICY, decode_timeout_s=None, workers=0)
    encode_latents(frames, store, FP32, _vae, 2)
    return root, store, validated, frames


def _drop_all_frames(store: ContentStore, frames: pl.DataFrame) -> None:
    dropped = drop_frames(store, frames["frames_key"])
    assert dropped.frames == len(frames) and dropped.bytes > 0
    assert not any(store.has(ArtifactKind.frames, k) for k in frames["frames_key"])


def test_a_clip_whose_latents_exist_is_neither_decoded_nor_read(shard):
    root, store, validated, frames = shard
    _drop_all_frames(store, frames)
    again, stats = extract_frames(validated, root, store, POLICY, decode_timeout_s=None,
                                  workers=0, decode=no_decoding,
                                  latent_keys=lambda key: [FP32.key(key)])
    assert set(again["status"]) == {"reused"} and stats.computed == 0
    assert stats.extra["frames_not_needed"] == 2
    assert again["frames_key"].to_list() == frames["frames_key"].to_list()  # same lineage
    assert not any(store.has(ArtifactKind.frames, k) for k in frames["frames_key"])


def test_latents_for_another_dtype_decode_the_frames_again(shard):
    root, store, validated, frames = shard
    _drop_all_frames(store, frames)
    again, stats = extract_frames(validated, root, store, POLICY, decode_timeout_s=None,
                                  workers=0, latent_keys=lambda key: [BF16.key(key)])
    assert stats.computed == 2 and "frames_not_needed" not in stats.extra
    assert all(store.has(ArtifactKind.frames, k) for k in again["frames_key"])


def test_keep_decodes_missing_frames_even_when_their_latents_exist(shard):
    root, store, validated, frames = shard
    _drop_all_frames(store, frames)
    _, stats = extract_frames(validated, root, store, POLICY, decode_timeout_s=None, workers=0)
    assert stats.computed == 2


def test_a_damaged_latent_has_its_frames_decoded_again_in_the_same_run(shard):
    """The frames step trusts a latent by its header (as reuse trusts frames); the latents
    step reads it whole, quarantines it, decodes its dropped frames again and re-encodes."""
    root, store, validated, frames = shard
    _drop_all_frames(store, frames)
    key = FP32.key(frames["frames_key"][0])
    path = Path(store.artifact_path(ArtifactKind.latents, key))
    good = store.get_tensors(ArtifactKind.latents, key)["moments"]
    data = bytearray(path.read_bytes())
    data[-40] ^= 0x08
    path.write_bytes(bytes(data))
    again, stats = extract_frames(validated, root, store, POLICY, decode_timeout_s=None,
                                  workers=0, latent_keys=lambda k: [FP32.key(k)])
    assert stats.extra["frames_not_needed"] == 2
    _, latents = encode_latents(again, store, FP32, _vae, 2, redecode=lambda rows: decode_again(
        rows, root, store, POLICY, decode_timeout_s=None))
    assert (latents.computed, latents.reused) == (1, 1)
    assert latents.extra["frames_decoded_again"] == 1
    assert len(latents.corrupt) == 1 and key in latents.corrupt[0]
    # the same frames again (alone now, not in a batch of two: equal to float rounding)
    assert torch.allclose(store.get_tensors(ArtifactKind.latents, key)["moments"], good,
                          atol=1e-3)


def test_the_latents_step_decodes_dropped_frames_again_from_the_frames_table(shard):
    """A run whose latents need frames that were dropped after frame_tensors ran (a new
    dtype materialized from the UI on vae_latents alone, a frames step in a CPU pod that
    guessed another dtype) decodes them again instead of failing."""
    root, store, validated, frames = shard
    _drop_all_frames(store, frames)
    calls = []

    def redecode(rows):
        calls.append(rows["clip_id"].to_list())
        return decode_again(rows, root, store, POLICY, decode_timeout_s=None)

    table, stats = encode_latents(frames, store, BF16, _vae, 2, redecode=redecode)
    assert calls == [frames["clip_id"].to_list()]
    assert stats.computed == 2 and stats.extra["frames_decoded_again"] == 2
    assert all(store.has(ArtifactKind.frames, k) for k in frames["frames_key"])
    assert set(table["status"]) == {"computed"}


def test_frames_that_cannot_be_decoded_the_same_again_are_named(shard):
    root, store, validated, frames = shard
    _drop_all_frames(store, frames)
    write_test_video(root / "clips/clip_01.mp4", width=160, height=96, fps=24, seconds=1.5,
                     seed=99)  # the file changed after frame_tensors ran
    with pytest.raises(FramesLost, match=r"clips/clip_01.mp4: its frames were dropped .* "
                       "cannot be decoded to the same frames again"):
        decode_again(frames, root, store, POLICY, decode_timeout_s=None)


def test_decoded_clips_leave_a_thumbnail_the_contact_sheet_uses_once_frames_are_gone(shard):
    from cog_assets.defs.assets.frame_tensors import (
        _contact_sheet,  # the sheet frame_tensors shows
    )

    root, store, validated, frames = shard
    for key in frames["frames_key"]:
        assert Path(store.path(layout.thumbnail_png(key))).stat().st_size < 20_000
    _drop_all_frames(store, frames)
    sheet = _contact_sheet(store, frames, validated, "tiny", "shard-00000")
    assert sheet["contact_sheet"].value.startswith("![contact sheet](data:image/jpeg;base64,")
    assert Path(sheet["contact_sheet_path"].value).read_bytes()[:2] == b"\xff\xd8"  # a JPEG


def test_frames_another_run_holds_are_not_dropped(shard):
    _, store, _, frames = shard
    held, free = frames["frames_key"].to_list()
    with Lease(store, "run-b.frame_tensors") as lease:
        lease.hold(ArtifactKind.frames, [held])
        with Lease(store, "run-a.frame_tensors") as own:
            own.hold(ArtifactKind.frames, [held, free])
            dropped = drop_frames(store, [held, free], run_id="run-a")
    assert (dropped.frames, dropped.held) == (1, 1)
    assert store.has(ArtifactKind.frames, held) and not store.has(ArtifactKind.frames, free)
    lease_file = json.loads(Path(store.path(layout.lease_path("run-b.frame_tensors")))
                            .read_text())
    assert lease_file["keys"] == {"frames": [held]}  # handed over to the rest of its run


def _metadata(instance, asset: str) -> dict:
    from dagster import AssetKey

    event = instance.get_latest_materialization_event(AssetKey(asset))
    assert event is not None, asset
    return {k: getattr(v, "value", v) for k, v in
            event.asset_materialization.metadata.items()}


@pytest.mark.slow
def test_a_run_drops_its_frames_once_published_and_needs_them_only_for_new_latents(tmp_path):
    from dagster import instance_for_test, materialize

    from cog_assets.core.config import Settings
    from cog_assets.defs.build import build_definitions
    from cog_assets.defs.resources import build_resources
    from cog_assets.defs.runs import materialize_shards

    root = write_test_dataset(tmp_path / "data", 3, broken=False)
    store_dir = tmp_path / "store"
    settings = Settings.of(data_root=str(root), store=str(store_dir), shards=1, device="cpu")
    frames_dir = store_dir / "cas" / "frames"
    with instance_for_test() as instance:
        [first] = materialize_shards(settings, instance).values()
        assert first.success, first.failure
        assert not list(frames_dir.rglob("*.safetensors"))
        assert len(list((store_dir / "cas" / "thumbnail").rglob("*.png"))) == 3
        assert _metadata(instance, "training_dataset")["frames_dropped"] == 3
        usage = _metadata(instance, "store_usage")  # reported at the end of the backfill
        assert usage["frames_bytes"] == 0 and usage["datasets_bytes"] > 0
        assert usage["latents_bytes"] < usage["datasets_bytes"] / 10  # references only

        [skipped] = materialize_shards(settings, instance).values()
        assert skipped.up_to_date  # nothing changed: no run at all
        [again] = materialize_shards(settings, instance, force=True).values()
        assert again.success and not again.up_to_date and again.computed == 0
        frames = _metadata(instance, "frame_tensors")
        assert frames["frames_not_needed"] == 3 and "contact_sheet" in frames

        # a new dtype materialized on vae_latents alone, as from the UI: its frames are gone,
        # so the step decodes them again from the frames table's recipe
        bf16 = settings.with_(dtype="bfloat16")
        result = materialize(build_definitions(bf16).assets, selection=["vae_latents"],
                             partition_key="shard-00000", instance=instance,
                             resources=build_resources(bf16))
        assert result.success
        latents = _metadata(instance, "vae_latents")
        assert latents["frames_decoded_again"] == 3 and latents["computed"] == 3


@pytest.mark.slow
def test_keep_keeps_the_frames_and_none_drops_them_once_the_latents_are_written(tmp_path):
    from dagster import instance_for_test

    from cog_assets.core.config import Settings
    from cog_assets.defs.runs import materialize_shards
    from cog_assets.store.collection import collect, plan_gc

    root = write_test_dataset(tmp_path / "data", 2, broken=False)
    with instance_for_test() as instance:
        keep = Settings.of(data_root=str(root), store=str(tmp_path / "keep"), shards=1,
                           device="cpu", frames_retention="keep")
        assert all(s.success for s in materialize_shards(keep, instance).values())
        store = ContentStore(str(tmp_path / "keep"))
        collect(store, plan_gc(store, grace_s=0), grace_s=0)
        assert len(list((tmp_path / "keep" / "cas" / "frames").rglob("*.safetensors"))) == 2

        none = keep.with_(store=str(tmp_path / "none"), frames_retention="none")
        assert all(s.success for s in materialize_shards(none, instance).values())
        assert not list((tmp_path / "none" / "cas" / "frames").rglob("*.safetensors"))
        assert _metadata(instance, "vae_latents")["frames_dropped"] == 2
        assert _metadata(instance, "training_dataset")["frames_dropped"] == 0
