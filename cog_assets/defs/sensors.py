"""The upload sensor: new shards under the data root become partitions and runs."""


from dagster import RunRequest, SensorEvaluationContext, SensorResult, SkipReason, sensor

from cog_assets.defs.jobs import prepare_shards_job
from cog_assets.defs.partitions import SHARDS_PARTITION, shards_partitions
from cog_assets.defs.resources import DatasetResource
from cog_assets.stages.manifest import discover_shards


@sensor(job=prepare_shards_job, minimum_interval_seconds=60)
def new_shards_sensor(context: SensorEvaluationContext, dataset: DatasetResource):
    """Adds shards that got their first clip and requests one run for each of them."""
    found = discover_shards(dataset.data_root, dataset.shard_count, dataset.source_config())
    known = set(context.instance.get_dynamic_partitions(SHARDS_PARTITION))
    new = [key for key in found if key not in known]
    if not new:
        return SkipReason(f"no new shards among {len(found)} under {dataset.data_root}")
    return SensorResult(
        run_requests=[RunRequest(partition_key=key, run_key=f"new-shard:{key}") for key in new],
        dynamic_partitions_requests=[shards_partitions.build_add_request(new)],
    )
