"""Two datasets in one store, each in its own Dagster instance: everything a profile writes is
keyed by its profile (tables, contact sheets, upload states, the dataset, exports), so one
never serves the other's latents; two instances with other settings on the same profile are
two writers of one dataset, and neither takes the other's tables or publication for its own."""

from __future__ import annotations

from pathlib import Path

import polars as pl
import pytest
from dagster import instance_for_test, materialize

from cog_assets.core.config import Settings
from cog_assets.defs.build import build_definitions
from cog_assets.defs.resources import build_resources
from cog_assets.defs.runs import materialize_shards
from cog_assets.loader import CogVideoXLatentDataset
from cog_assets.media.synthetic import write_test_dataset
from cog_assets.store.catalog import load_catalog

pytestmark = pytest.mark.slow


def _buckets(store: Path, profile: str) -> set[str]:
    return set(CogVideoXLatentDataset(store / "datasets" / profile, profile).buckets)


def _dataset_only(settings: Settings, instance, shard: str):
    """A UI run of training_dataset alone (its inputs read from the store's tables)."""
    return materialize(build_definitions(settings).assets, selection=["training_dataset"],
                       partition_key=shard, instance=instance,
                       resources=build_resources(settings), raise_on_error=False)


def test_a_dataset_only_run_after_another_profiles_backfill_serves_its_own_latents(tmp_path):
    """The reproduction: a training_dataset-only run in the tiny instance after a tiny-1.5
    backfill in the same store put 17x64x96 latents into the tiny dataset."""
    root = write_test_dataset(tmp_path / "data", 2, broken=False)
    store = tmp_path / "store"
    tiny = Settings.of(data_root=str(root), store=str(store), shards=1, device="cpu")
    other = tiny.with_(profile="tiny-1.5")
    with instance_for_test() as mine, instance_for_test() as theirs:
        assert all(s.success for s in materialize_shards(tiny, mine).values())
        assert all(s.success for s in materialize_shards(other, theirs).values())
        result = _dataset_only(tiny, mine, "shard-00000")
        assert result.success
        # each instance's backfill: nothing to do, the other profile changed nothing of its own
        assert all(s.up_to_date for s in materialize_shards(tiny, mine).values())
        assert all(s.up_to_date for s in materialize_shards(other, theirs).values())
    assert _buckets(store, "tiny") == {"9x64x96"}
    assert _buckets(store, "tiny-1.5") == {"17x64x96"}
    assert (store / "tables" / "tiny" / "vae_latents" / "shard-00000.parquet").is_file()
    assert (store / "tables" / "tiny-1.5" / "vae_latents" / "shard-00000.parquet").is_file()
    assert not (store / "tables" / "vae_latents").exists()
    assert {p.parent.name for p in (store / "contact_sheets").rglob("*.jpg")} == {
        "tiny", "tiny-1.5"}
    assert len(list((store / "state" / "uploads").iterdir())) == 2  # one sensor state each


def test_another_instance_with_other_settings_on_the_same_profile_is_never_taken_for_ours(
        tmp_path):
    """Instance B runs the tiny dataset with other buckets on the same store: A's
    training_dataset-only run refuses the tables B wrote (naming them) instead of publishing
    B's latents under A's versions, and A's backfill sees that B's version is served and puts
    its own back."""
    root = write_test_dataset(tmp_path / "data", 2, broken=False)
    store = tmp_path / "store"
    a = Settings.of(data_root=str(root), store=str(store), shards=1, device="cpu")
    b = a.with_(buckets=["9x32x48"])
    with instance_for_test() as mine, instance_for_test() as theirs:
        assert all(s.success for s in materialize_shards(a, mine).values())
        assert all(s.success for s in materialize_shards(b, theirs).values())
        assert _buckets(store, "tiny") == {"9x32x48"}  # one dataset: the last publication
        result = _dataset_only(a, mine, "shard-00000")
        assert not result.success
        [failure] = [e for e in result.all_events if e.is_step_failure]
        error = failure.event_specific_data.error
        message = " ".join(e.message for e in (error, error.cause) if e is not None)
        assert "tables/tiny/" in message and "is not the" in message
        assert "this instance materialized" in message
        [again] = materialize_shards(a, mine).values()
        assert not again.up_to_date and again.success
        assert "another run published after this instance's last one" in again.why[0]
    assert _buckets(store, "tiny") == {"9x64x96"}
    entry = load_catalog(store / "datasets" / "tiny").shards["shard-00000"]
    assert entry.superseded  # B's version stays for its readers until gc


def test_a_store_written_before_tables_were_per_profile_is_read_where_it_is_ours(tmp_path):
    """Tables at tables/<asset>/<shard>.parquet (before profiles were in their path): a
    dataset-only run reads them there when they hold what this instance recorded."""
    root = write_test_dataset(tmp_path / "data", 2, broken=False)
    store = tmp_path / "store"
    settings = Settings.of(data_root=str(root), store=str(store), shards=1, device="cpu")
    with instance_for_test() as instance:
        assert all(s.success for s in materialize_shards(settings, instance).values())
        tables = store / "tables"
        for table in (tables / "tiny").rglob("*.parquet"):  # as an older cog-assets kept them
            legacy = tables / table.parent.name / table.name
            legacy.parent.mkdir(parents=True, exist_ok=True)
            table.rename(legacy)
        assert not list((tables / "tiny").rglob("*.parquet"))
        assert _dataset_only(settings, instance, "shard-00000").success
        assert pl.read_parquet(store / "tables" / "tiny" / "training_dataset" /
                               "shard-00000.parquet").height == 2
    assert _buckets(store, "tiny") == {"9x64x96"}
