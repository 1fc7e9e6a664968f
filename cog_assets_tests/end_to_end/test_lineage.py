"""Lineage in a real instance: what a change makes stale, and what it costs to catch up."""

from pathlib import Path

import polars as pl
import pytest
from dagster import AssetKey, instance_for_test, materialize
from dagster._core.definitions.data_version import StaleStatus
from dagster._utils.test.data_versions import get_stale_status_resolver

from cog_assets.core.config import Settings
from cog_assets.defs.build import build_definitions
from cog_assets.defs.resources import build_resources
from cog_assets.defs.runs import materialize_shards, observe_uploads
from cog_assets.media.synthetic import write_test_dataset, write_test_video
from cog_assets.sources.sharding import shard_for

pytestmark = pytest.mark.slow

MATERIALIZED = ["raw_manifest", "scene_segments", "clip_captions", "validated_clips",
                "frame_tensors", "vae_latents", "t5_embeddings", "training_dataset"]


@pytest.fixture
def materialized(tmp_path):
    root = write_test_dataset(tmp_path / "data", 6, broken=False)
    settings = Settings.of(data_root=str(root), store=str(tmp_path / "store"), shards=2,
                           device="cpu")
    with instance_for_test() as instance:
        first = materialize_shards(settings, instance)
        assert all(s.success for s in first.values())
        yield root, settings, instance, first


def _stale(instance, shard, settings):
    resolver = get_stale_status_resolver(instance, build_definitions(settings).assets)
    return {name for name in MATERIALIZED
            if resolver.get_status(AssetKey(name), shard) == StaleStatus.STALE}


def test_changing_one_video_makes_exactly_its_shard_stale(materialized):
    """Dagster marks an asset stale when a direct input's data version moves, so staleness
    walks down the shard's chain one materialization at a time; the other shard never is."""
    root, settings, instance, _ = materialized
    changed = shard_for("clips/clip_03.mp4", 2)
    other = "shard-00000" if changed == "shard-00001" else "shard-00001"
    assert _stale(instance, changed, settings) == _stale(instance, other, settings) == set()
    write_test_video(root / "clips/clip_03.mp4", width=128, height=96, seconds=1.5, seed=42)
    observe_uploads(instance, settings)  # what the sensor records on its next tick
    assert _stale(instance, changed, settings) == {"raw_manifest"}
    resources = build_resources(settings)
    for name, then_stale in [("raw_manifest", {"scene_segments"}),
                             ("scene_segments", {"clip_captions"}),
                             ("clip_captions", {"validated_clips"}),
                             ("validated_clips", {"frame_tensors", "t5_embeddings",
                                                  "training_dataset"}),
                             ("frame_tensors", {"vae_latents", "t5_embeddings",
                                                "training_dataset"})]:
        materialize(build_definitions(settings).assets, selection=[name], partition_key=changed, instance=instance,
                    resources=resources)
        assert _stale(instance, changed, settings) == then_stale, name
        assert _stale(instance, other, settings) == set()


def test_unchanged_rerun_keeps_data_versions(materialized):
    root, settings, instance, _ = materialized
    def versions():
        return {(name, shard): instance.get_latest_data_version_record(
                    AssetKey(name), partition_key=shard).asset_materialization.tags[
                    "dagster/data_version"]
                for name in MATERIALIZED for shard in ("shard-00000", "shard-00001")}

    before = versions()
    again = materialize_shards(settings, instance, force=True)
    assert not any(s.up_to_date for s in again.values())
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
    import cog_assets.core.keys as keys

    root, settings, instance, first = materialized
    monkeypatch.setattr(keys, "LATENTS_VERSION", keys.LATENTS_VERSION + "-next")
    again = materialize_shards(settings, instance)
    computed = sum(s.computed for s in again.values())
    # 6 clips: their latents are new, and so their frames, a cache dropped once the shards
    # were published, are decoded again (same keys); embeddings are reused.
    assert computed == 12, {k: (s.computed, s.reused) for k, s in again.items()}
    keep = settings.with_(frames_retention="keep")
    kept = materialize_shards(keep, instance)  # keep decodes the frames once more...
    assert sum(s.computed for s in kept.values()) == 6
    monkeypatch.setattr(keys, "LATENTS_VERSION", keys.LATENTS_VERSION + "-again")
    again = materialize_shards(keep, instance)  # ...and then a new version costs latents only
    assert sum(s.computed for s in again.values()) == 6


def test_another_dtype_is_another_model_identity(materialized):
    root, settings, instance, first = materialized
    again = materialize_shards(settings.with_(dtype="bfloat16"), instance)
    # latents (6 clips) and embeddings (6 captions) depend on the dtype; frames do not, but
    # they were dropped once the shards were published: decoded again (6), same keys.
    assert sum(s.computed for s in again.values()) == 18


# -- the wall clock: what a backfill launches ------------------------------------------------

def _runs(instance) -> int:
    return len(instance.get_runs())


def test_a_backfill_with_nothing_changed_starts_no_run(materialized):
    root, settings, instance, first = materialized
    runs = _runs(instance)
    again = materialize_shards(settings, instance)
    assert _runs(instance) == runs
    assert all(s.up_to_date and s.success for s in again.values())
    for shard, summary in again.items():  # the counts of the materialization it skipped
        assert (summary.clips, summary.accepted, summary.index_path) == (
            first[shard].clips, first[shard].accepted, first[shard].index_path)
        assert summary.run_id == first[shard].run_id


def test_a_backfill_launches_exactly_the_shard_whose_uploads_changed(materialized):
    root, settings, instance, _ = materialized
    write_test_video(root / "clips/clip_03.mp4", width=128, height=96, seconds=1.5, seed=42)
    runs = _runs(instance)
    again = materialize_shards(settings, instance)
    changed = shard_for("clips/clip_03.mp4", 2)
    assert _runs(instance) == runs + 1
    assert [k for k, s in again.items() if not s.up_to_date] == [changed]
    assert again[changed].why == ["raw_manifest has a new dependency data version (uploads)"]
    assert again[changed].computed == 2  # its frames and latents
    # and afterwards neither the rule nor the UI's staleness sees anything left to do
    assert all(s.up_to_date for s in materialize_shards(settings, instance).values())
    assert _stale(instance, changed, settings) == set()


def test_force_runs_every_shard(materialized):
    root, settings, instance, _ = materialized
    runs = _runs(instance)
    again = materialize_shards(settings, instance, force=True)
    assert _runs(instance) == runs + 2
    assert all(not s.up_to_date and s.why == ["forced"] for s in again.values())


def test_an_output_shaping_setting_reruns_every_shard_a_batch_size_none(materialized):
    root, settings, instance, _ = materialized
    runs = _runs(instance)
    assert all(s.up_to_date for s in materialize_shards(
        settings.with_(batch_size=3, text_batch_size=2), instance).values())
    assert _runs(instance) == runs
    tiled = materialize_shards(settings.with_(vae_tiling=True), instance)
    assert all(not s.up_to_date for s in tiled.values())
    assert all(s.success for s in tiled.values()), [s.failure for s in tiled.values()]
    assert all("vae_latents has a new code version" in s.why for s in tiled.values())
    # the latents (6), from frames decoded again (6): they were dropped once published
    assert sum(s.computed for s in tiled.values()) == 12


def test_a_shard_whose_finished_files_are_gone_is_run_again(materialized):
    root, settings, instance, first = materialized
    Path(first["shard-00000"].index_path).unlink()
    again = materialize_shards(settings, instance)
    assert not again["shard-00000"].up_to_date and again["shard-00001"].up_to_date
    assert "is missing from the store" in again["shard-00000"].why[0]
    assert Path(again["shard-00000"].index_path).is_file()


def test_a_shard_whose_published_tensor_file_is_deleted_is_not_up_to_date(materialized):
    """Freshness checks what is served: every file the catalog lists, by a stat each."""
    from cog_assets.loader import CogVideoXLatentDataset

    root, settings, instance, first = materialized
    shard_dir = Path(first["shard-00000"].index_path).parent
    [latents] = shard_dir.glob("latents.*.safetensors")
    latents.unlink()
    again = materialize_shards(settings, instance)
    assert again["shard-00001"].up_to_date
    assert not again["shard-00000"].up_to_date
    assert again["shard-00000"].why == [f"{latents} (listed by the catalog) is missing"]
    assert again["shard-00000"].success
    CogVideoXLatentDataset(Path(settings.store.url) / "datasets" / "tiny", "tiny")  # loads
    [other] = shard_dir.glob("prompt_embeds.*.safetensors")
    other.write_bytes(other.read_bytes()[:-1])  # cut short: the size tells
    why = materialize_shards(settings, instance)["shard-00000"].why
    assert why and "bytes, the catalog records" in why[0] and str(other) in why[0]


def test_a_shard_whose_last_run_deferred_rows_is_not_up_to_date(materialized):
    """Rows deferred because their files were still settling are read by a later run: such a
    shard is never skipped as up to date, even with its uploads' bytes unchanged. (Its last
    training_dataset materialization is recorded here as a run that deferred a row records
    it: a real run with a deferred row fails in training_dataset on main today, see the
    issue-13 notes.)"""
    from dagster import AssetMaterialization

    root, settings, instance, first = materialized
    instance.report_runless_asset_event(AssetMaterialization(
        "training_dataset", partition="shard-00000",
        metadata={**{k: getattr(first["shard-00000"], k)
                     for k in ("clips", "accepted", "rejected")},
                  "rejects_by_reason": {"deferred": 1}}))
    again = materialize_shards(settings, instance)
    assert again["shard-00001"].up_to_date
    assert not again["shard-00000"].up_to_date
    assert "1 rows were deferred (still being written) by its last run" in again[
        "shard-00000"].why


def _counting_resolvers(monkeypatch) -> list[str]:
    """Every shard the freshness rule asks Dagster's staleness about, in order."""
    import cog_assets.defs.freshness as freshness

    asked: list[str] = []
    real = freshness._stale_reasons

    def counting(resolver, shard, last):
        asked.append(shard)
        return real(resolver, shard, last)

    monkeypatch.setattr(freshness, "_stale_reasons", counting)
    return asked


def test_a_no_op_backfill_asks_dagster_about_no_shard(materialized, monkeypatch):
    """The backfill judged the shards it ran once they were done and remembered them, so the
    next one reads a few records for all shards at once instead of ~20 queries per shard."""
    root, settings, instance, _ = materialized
    asked = _counting_resolvers(monkeypatch)
    again = materialize_shards(settings, instance)
    assert all(s.up_to_date for s in again.values()) and asked == []


def test_a_remembered_verdict_goes_when_a_record_of_its_shard_moves(materialized,
                                                                    monkeypatch):
    """An upstream materialization recorded since (here raw_manifest of one shard, with new
    data: e.g. from the UI) makes Dagster call the shard stale, and the remembered verdict
    is not used; the other shard's still is."""
    from dagster import AssetMaterialization, DataVersion

    root, settings, instance, _ = materialized
    asked = _counting_resolvers(monkeypatch)
    instance.report_runless_asset_event(AssetMaterialization(
        "raw_manifest", partition="shard-00001",
        tags={"dagster/data_version": DataVersion("something else").value}))
    again = materialize_shards(settings, instance)
    assert asked[0] == "shard-00001" and "shard-00000" not in asked
    assert again["shard-00000"].up_to_date and not again["shard-00001"].up_to_date
    assert any("scene_segments" in why for why in again["shard-00001"].why)
