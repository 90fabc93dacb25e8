"""Partition sets: `logs` and `datasets` are dynamic; `scenes` is log × scene index within the log.

A flat dynamic set of a million scene keys makes every key listing slow; with log × index only the
logs are dynamic keys (DESIGN §4).
"""

import dagster as dg

from jadd_dagster.scenes import MAX_SCENES_PER_LOG

log_partitions = dg.DynamicPartitionsDefinition(name="logs")
dataset_partitions = dg.DynamicPartitionsDefinition(name="datasets")
scene_index_partitions = dg.StaticPartitionsDefinition([f"{i:04d}" for i in range(MAX_SCENES_PER_LOG)])
scene_partitions = dg.MultiPartitionsDefinition({"log": log_partitions, "scene": scene_index_partitions})


def scene_partition_key(log_id: str, index: int) -> dg.MultiPartitionKey:
    return dg.MultiPartitionKey({"log": log_id, "scene": f"{index:04d}"})


def scene_of_partition_key(key: str | dg.MultiPartitionKey) -> tuple[str, int]:
    """(log_id, scene index) of a `scenes` partition key."""
    dims = key.keys_by_dimension if isinstance(key, dg.MultiPartitionKey) else dict(
        zip(("log", "scene"), str(key).split("|"))
    )
    return dims["log"], int(dims["scene"])
