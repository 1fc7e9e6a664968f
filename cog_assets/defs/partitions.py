"""One partition per shard, added as shards first get clips."""

from dagster import DynamicPartitionsDefinition

SHARDS_PARTITION = "shards"
shards_partitions = DynamicPartitionsDefinition(name=SHARDS_PARTITION)
