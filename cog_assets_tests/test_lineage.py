"""Lineage in a real instance: what a change makes stale, and what it costs to catch up."""

import polars as pl
import pytest
from dagster import AssetKey, instance_for_test, materialize
from dagster._core.definitions.data_version import StaleStatus
from dagster._utils.test.data_versions import get_stale_status_resolver

from cog_assets.config import Settings
from cog_assets.defs.definitions import build_definitions
from cog_assets.defs.resources import build_resources
from cog_assets.defs.runs import materialize_shards, observe_uploads
from cog_assets.media.synthetic import write_test_video
from cog_assets.sharding import shard_for
from cog_assets_tests.conftest import make_dataset

pytestmark = pytest.mark.slow

ALL_ASSETS = build_definitions(Settings.of()).assets
MATERIALIZED = ["raw_manifest", "scene_segments", "validated_clips", "frame_tensors",
                "vae_latents", "t5_embeddings", "training_dataset"]


@pytest.fixture
def materialized(tmp_path):
    root = make_dataset(tmp_path / "data", 6, broken=False)
    settings = Settings.of(data_root=str(root), store=str(tmp_path / "store"), shards=2,
                           device="cpu")
    with instance_for_test() as instance:
        first = materialize_shards(settings, instance)
        assert all(s.success for s in first.values())
        yield root, settings, instance, first


def _stale(instance, shard):
    resolver = get_stale_status_resolver(instance, ALL_ASSETS)
    return {name for name in MATERIALIZED
            if resolver.get_status(AssetKey(name), shard) == StaleStatus.STALE}


def test_changing_one_video_makes_exactly_its_shard_stale(materialized):
    """Dagster marks an asset stale when a direct input's data version moves, so staleness
    walks down the shard's chain one materialization at a time; the other shard never is."""
    root, settings, instance, _ = materialized
    changed = shard_for("clips/clip_03.mp4", 2)
    other = "shard-00000" if changed == "shard-00001" else "shard-00001"
    assert _stale(instance, changed) == set() and _stale(instance, other) == set()
    write_test_video(root / "clips/clip_03.mp4", width=128, height=96, seconds=1.5, seed=42)
    observe_uploads(instance, settings)  # what the sensor records on its next tick
    assert _stale(instance, changed) == {"raw_manifest"}
    resources = build_resources(settings)
    for name, then_stale in [("raw_manifest", {"scene_segments"}),
                             ("scene_segments", {"validated_clips"}),
                             ("validated_clips", {"frame_tensors", "t5_embeddings",
                                                  "training_dataset"}),
                             ("frame_tensors", {"vae_latents", "t5_embeddings",
                                                "training_dataset"})]:
        materialize(ALL_ASSETS, selection=[name], partition_key=changed, instance=instance,
                    resources=resources)
        assert _stale(instance, changed) == then_stale, name
        assert _stale(instance, other) == set()


def test_unchanged_rerun_keeps_data_versions(materialized):
    root, settings, instance, _ = materialized
    def versions():
        return {(name, shard): instance.get_latest_data_version_record(
                    AssetKey(name), partition_key=shard).asset_materialization.tags[
                    "dagster/data_version"]
                for name in MATERIALIZED for shard in ("shard-00000", "shard-00001")}

    before = versions()
    materialize_shards(settings, instance)
    assert versions() == before


def test_change_delete_and_recaption_redo_exactly_that_work(materialized):
    root, settings, instance, first = materialized
    write_test_video(root / "clips/clip_00.mp4", width=128, height=96, seconds=1.5, seed=77)
    videos = (root / "videos.txt").read_text().splitlines()
    prompts = (root / "prompts.txt").read_text().splitlines()
    prompts[2] = "a brand new caption for clip two"
    del videos[5], prompts[5]  # clip_05 leaves the dataset
    (root / "clips/clip_05.mp4").unlink()
    (root / "videos.txt").write_text("\n".join(videos) + "\n")
    (root / "prompts.txt").write_text("\n".join(prompts) + "\n")

    second = materialize_shards(settings, instance)
    computed = sum(s.computed for s in second.values())
    # one video: frames + latents; one caption: an embedding. Nothing else.
    assert computed == 3, {k: (s.computed, s.reused) for k, s in second.items()}
    indexed = pl.concat([pl.read_parquet(s.index_path) for s in second.values()])
    assert "clips/clip_05.mp4" not in indexed["clip_id"].to_list()
    assert len(indexed) == 5
    rejects = pl.concat([pl.read_parquet(s.rejects_path) for s in second.values()])
    assert rejects.is_empty()


def test_a_new_transform_version_recomputes_exactly_its_artefacts(materialized, monkeypatch):
    import cog_assets.stages.latents as latents

    root, settings, instance, first = materialized
    monkeypatch.setattr(latents, "LATENTS_VERSION", latents.LATENTS_VERSION + "-next")
    again = materialize_shards(settings, instance)
    computed = sum(s.computed for s in again.values())
    # 6 clips: their latents are new, and so their frames, a cache dropped once the shards
    # were published, are decoded again (same keys); embeddings are reused.
    assert computed == 12, {k: (s.computed, s.reused) for k, s in again.items()}
    keep = settings.with_(frames_retention="keep")
    kept = materialize_shards(keep, instance)  # keep decodes the frames once more...
    assert sum(s.computed for s in kept.values()) == 6
    monkeypatch.setattr(latents, "LATENTS_VERSION", latents.LATENTS_VERSION + "-again")
    again = materialize_shards(keep, instance)  # ...and then a new version costs latents only
    assert sum(s.computed for s in again.values()) == 6


def test_another_dtype_is_another_model_identity(materialized):
    root, settings, instance, first = materialized
    again = materialize_shards(settings.with_(dtype="bfloat16"), instance)
    # latents (6 clips) and embeddings (6 captions) depend on the dtype; frames do not, but
    # they were dropped once the shards were published: decoded again (6), same keys.
    assert sum(s.computed for s in again.values()) == 18
