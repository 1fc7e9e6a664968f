"""The store's footprint per kind, as the UI shows it (the store_usage asset)."""

from __future__ import annotations

import os
import time
from pathlib import Path

import torch
from dagster import materialize

from cog_assets.core.choices import ArtifactKind
from cog_assets.defs.assets.store_usage import store_usage
from cog_assets.defs.resources import StoreResource
from cog_assets.store.content_store import ContentStore
from cog_assets.store.footprint import human_size, kind_of, store_footprint
from cog_assets_tests.fixtures.datasets import build_dataset


def test_every_file_counts_as_its_kind():
    assert kind_of("cas/frames/ab/abc.safetensors") == "frames"
    assert kind_of("cas/vae_moments/ab/abc.ref.json") == "latents"
    assert kind_of("cas/t5_embedding/ab/abc.safetensors") == "embeddings"
    assert kind_of("cas/thumbnail/ab/abc.png") == "thumbnails"
    assert kind_of("cas/first_frame/ab/abc.png") == "first_frames"
    assert kind_of("cas/frames/ab/abc.safetensors.tmp-1f2e") == "temporaries"
    assert kind_of("datasets/tiny/shard-00000/latents.v.safetensors") == "datasets"
    assert kind_of("exports/tiny/.cogvideox-factory.1/video_latents/a.pt") == "exports"
    assert kind_of("exports/tiny/.cogvideox-factory.1/.videos.txt.9a.tmp") == "temporaries"
    assert kind_of("quarantine/frames/abc.20260101T000000-1.corrupt") == "quarantine"
    assert kind_of("state/leases/run.step.json") == "state"


def test_store_usage_shows_bytes_per_kind_and_what_gc_would_reclaim(tmp_path):
    store = ContentStore(str(tmp_path / "store"))
    build_dataset(tmp_path / "store" / "datasets" / "tiny", store=store)
    garbage = Path(store.put_tensors(ArtifactKind.latents, "0" * 64, {"t": torch.zeros(256)}))
    then = time.time() - 7200
    os.utime(garbage, (then, then))
    result = materialize([store_usage], resources={"store": StoreResource(url=store.root)})
    assert result.success
    [event] = result.asset_materializations_for_node("store_usage")
    metadata = {k: getattr(v, "value", v) for k, v in event.metadata.items()}
    footprint = store_footprint(store)
    assert metadata["datasets_bytes"] == footprint.bytes["datasets"] > 0
    assert metadata["frames_bytes"] == 0
    assert metadata["latents_bytes"] == footprint.bytes["latents"]  # references + the garbage
    assert metadata["total_bytes"] == footprint.total
    assert metadata["gc_reclaimable_bytes"] == garbage.stat().st_size
    assert "| datasets |" in metadata["by_kind"] and "*gc would remove*" in metadata["by_kind"]
    assert metadata["total_size"] == human_size(footprint.total)
    assert metadata["gc_reclaimable_size"] == human_size(garbage.stat().st_size)


def test_sizes_read_as_a_person_reads_them():
    assert [human_size(n) for n in (0, 812, 4_100, 37_800_000, 250_000_000, 1_240_000_000)] \
        == ["0 B", "812 B", "4.1 kB", "37.8 MB", "250 MB", "1.24 GB"]


def test_after_a_backfill_the_report_says_what_gc_would_reclaim(tmp_path):
    """report_store_usage (the end of every backfill that ran a shard) records gc's plan
    too, with human-readable sizes; before, only a materialization from the UI did."""
    from dagster import AssetKey, DagsterInstance

    from cog_assets.core.config import Settings
    from cog_assets.defs.assets.store_usage import report_store_usage

    store = ContentStore(str(tmp_path / "store"))
    build_dataset(tmp_path / "store" / "datasets" / "tiny", store=store)
    garbage = Path(store.put_tensors(ArtifactKind.latents, "0" * 64, {"t": torch.zeros(256)}))
    then = time.time() - 7200
    os.utime(garbage, (then, then))
    with DagsterInstance.ephemeral() as instance:
        report_store_usage(instance, Settings.of(store=store.root, data_root=str(tmp_path)))
        event = instance.get_latest_materialization_event(AssetKey("store_usage"))
    metadata = {k: getattr(v, "value", v)
                for k, v in event.asset_materialization.metadata.items()}
    assert metadata["gc_reclaimable_bytes"] == garbage.stat().st_size
    assert metadata["gc_reclaimable_size"] == human_size(garbage.stat().st_size)
    assert metadata["total_size"].endswith(("B", "kB", "MB"))
