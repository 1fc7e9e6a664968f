"""The upload sensor, evaluated on a real directory with Dagster's own sensor context."""

from dagster import build_sensor_context, instance_for_test

from cog_assets.defs.resources import DatasetResource
from cog_assets.defs.sensors import new_shards_sensor
from cog_assets.sharding import shard_for
from cog_assets_tests.conftest import make_dataset


def test_new_shards_become_partitions_and_runs_once(tmp_path):
    make_dataset(tmp_path, 3, broken=False)
    dataset = DatasetResource(data_root=str(tmp_path), shard_count=8)
    expected = sorted({shard_for(f"clips/clip_{i:02d}.mp4", 8) for i in range(3)})
    with instance_for_test() as instance:
        result = new_shards_sensor(build_sensor_context(instance=instance, resources={
            "dataset": dataset}))
        assert sorted(r.partition_key for r in result.run_requests) == expected
        [add] = result.dynamic_partitions_requests
        assert sorted(add.partition_keys) == expected
        instance.add_dynamic_partitions("shards", list(add.partition_keys))

        again = new_shards_sensor(build_sensor_context(instance=instance, resources={
            "dataset": dataset}))
        assert not getattr(again, "run_requests", None)  # nothing new: a skip, no runs
