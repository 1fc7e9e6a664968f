"""Declarative Automation on data-version changes, evaluated against a real instance."""

import pytest
from dagster import (
    AssetKey,
    evaluate_automation_conditions,
    instance_for_test,
    materialize,
)

from cog_assets.core.config import Settings
from cog_assets.defs.build import build_definitions
from cog_assets.defs.resources import build_resources
from cog_assets.defs.runs import materialize_shards, observe_uploads
from cog_assets.media.synthetic import write_test_dataset, write_test_video
from cog_assets.sources.sharding import shard_for

pytestmark = pytest.mark.slow


NAMES = ["raw_manifest", "scene_segments", "clip_captions", "validated_clips", "frame_tensors",
         "vae_latents", "t5_embeddings", "training_dataset"]


def _requested(result) -> set[tuple[str, str]]:
    return {(name, p) for name in NAMES
            for p in (result.get_requested_partitions(AssetKey(name))
                      if result.get_num_requested(AssetKey(name)) else [])}


def test_reruns_follow_data_versions_not_materializations(tmp_path):
    root = write_test_dataset(tmp_path / "data", 4, broken=False)
    settings = Settings.of(data_root=str(root), store=str(tmp_path / "store"), shards=2,
                           device="cpu", automation=True)
    defs = build_definitions(settings)
    with instance_for_test() as instance:
        assert all(s.success for s in materialize_shards(settings, instance).values())
        result = evaluate_automation_conditions(defs=defs, instance=instance)
        assert result.total_requested == 0
        cursor = result.cursor

        # Re-materializing an unchanged shard gives the same data version: nothing follows
        # (eager() would re-run everything below it).
        materialize(defs.assets, selection=["raw_manifest"], partition_key="shard-00000",
                    instance=instance, resources=build_resources(settings))
        result = evaluate_automation_conditions(defs=defs, instance=instance, cursor=cursor)
        assert result.total_requested == 0, _requested(result)
        cursor = result.cursor

        # New bytes for one video: its shard's manifest (and only that) is requested.
        write_test_video(root / "clips/clip_02.mp4", width=128, height=96, seconds=1.5, seed=5)
        observe_uploads(instance, settings)
        result = evaluate_automation_conditions(defs=defs, instance=instance, cursor=cursor)
        assert _requested(result) == {("raw_manifest", shard_for("clips/clip_02.mp4", 2))}
