"""record_materializations: many `sampled_frames` materializations from inside one step, on SQLite and PostgreSQL."""

import math

import dagster as dg
import pytest
import yaml

from jadd_dagster.defs.bookkeeping import DIMENSION_TAG_PREFIX, record_materializations
from jadd_dagster.defs.partitions import log_partitions, scene_partition_key, scene_partitions

SAMPLED_FRAMES = dg.AssetKey("sampled_frames")
LOGS = ["log-a", "log-b", "log-c"]
# SQLite stores a batch event by event (≈ 10 ms each, fsync-bound), so it gets fewer scenes.
MANY = {"sqlite": 150, "postgres": 3_000}


@pytest.fixture(scope="module", params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def backend(request) -> str:
    return request.param


@pytest.fixture(scope="module")
def instance(backend, request, tmp_path_factory):
    if backend == "sqlite":
        overrides = None
    else:
        database = request.getfixturevalue("postgres_server").new_database("bookkeeping")
        overrides = yaml.safe_load(database.dagster_yaml())
    with dg.instance_for_test(temp_dir=str(tmp_path_factory.mktemp(backend)), overrides=overrides) as instance:
        instance.add_dynamic_partitions(log_partitions.name, LOGS)
        yield instance


@pytest.fixture
def clean(instance):
    instance.wipe_assets([SAMPLED_FRAMES])
    return instance


def scene_items(n: int):
    """(partition key, metadata) of n scenes spread over LOGS; the metadata says which scene it is."""
    for i in range(n):
        log_id, index = LOGS[i % len(LOGS)], i // len(LOGS)
        yield scene_partition_key(log_id, index), {"frames": 100 + i, "path": f"sampled/{log_id}/{index:04d}"}


def record_in_a_run(instance, items, batch_size=1000):
    """Materialize a probe asset whose body records items; returns (count returned, run id)."""
    returned = {}

    @dg.asset
    def dataset_probe(context: dg.AssetExecutionContext) -> None:
        returned["count"] = record_materializations(context, SAMPLED_FRAMES, items, batch_size=batch_size)

    result = dg.materialize([dataset_probe], instance=instance)
    assert result.success
    return returned["count"], result.run_id


def recorded(instance) -> dict[str, dg.EventLogRecord]:
    records = instance.fetch_materializations(SAMPLED_FRAMES, limit=10_000).records
    return {r.partition_key: r for r in records}


def test_every_item_becomes_a_materialization_of_its_partition_with_its_metadata(clean, backend):
    n = MANY[backend]
    expected = dict(scene_items(n))
    count, _ = record_in_a_run(clean, scene_items(n), batch_size=n // 3)
    assert count == n
    records = recorded(clean)
    assert len(records) == n
    assert set(records) == set(expected)
    for key, metadata in expected.items():
        got = records[key].asset_materialization.metadata
        assert {k: v.value for k, v in got.items()} == metadata
    assert set(clean.get_materialized_partitions(SAMPLED_FRAMES)) == set(expected)


def test_events_belong_to_the_run_and_step_that_recorded_them(clean):
    _, run_id = record_in_a_run(clean, scene_items(30), batch_size=7)
    entries = [r.event_log_entry for r in recorded(clean).values()]
    assert {e.run_id for e in entries} == {run_id}
    assert {e.step_key for e in entries} == {"dataset_probe"}
    assert {e.job_name for e in entries} == {clean.get_run_by_id(run_id).job_name}
    assert len({e.timestamp for e in entries}) > 1


def test_multi_partition_keys_keep_both_dimensions(clean):
    expected = {str(key): key for key, _ in scene_items(9)}
    record_in_a_run(clean, scene_items(9), batch_size=4)
    assert set(recorded(clean)) == set(expected)
    for key, record in recorded(clean).items():
        materialization = record.asset_materialization
        dims = expected[key].keys_by_dimension
        assert isinstance(materialization.partition, dg.MultiPartitionKey)
        assert materialization.partition.keys_by_dimension == dims
        assert materialization.tags == {f"{DIMENSION_TAG_PREFIX}{d}": k for d, k in dims.items()}
    status = clean.get_status_by_partition(
        SAMPLED_FRAMES, [scene_partition_key("log-b", 2), scene_partition_key("log-b", 3)], scene_partitions
    )
    assert status == {"log-b|0002": dg.AssetPartitionStatus.MATERIALIZED, "log-b|0003": None}


def test_the_count_returned_is_the_number_of_items_and_nothing_is_written_for_none(clean):
    assert record_in_a_run(clean, iter([]))[0] == 0
    assert recorded(clean) == {}
    assert record_in_a_run(clean, scene_items(1))[0] == 1
    assert list(recorded(clean)) == ["log-a|0000"]


def test_after_the_first_event_items_are_stored_batch_size_at_a_time(clean, monkeypatch):
    storage = clean.event_log_storage
    sizes = []
    real = storage.store_event_batch
    monkeypatch.setattr(storage, "store_event_batch", lambda events: (sizes.append(len(events)), real(events))[1])
    count, _ = record_in_a_run(clean, scene_items(121), batch_size=50)
    assert count == 121
    assert sizes == [50, 50, 20]
    assert len(sizes) == math.ceil((121 - 1) / 50)
    assert len(recorded(clean)) == 121


def test_a_batch_size_below_one_is_refused(clean):
    @dg.asset
    def dataset_probe(context: dg.AssetExecutionContext) -> None:
        record_materializations(context, SAMPLED_FRAMES, scene_items(3), batch_size=0)

    with pytest.raises(ValueError, match="batch_size"):
        dg.materialize([dataset_probe], instance=clean)


def test_if_the_storage_cannot_give_the_first_event_back_the_rest_is_logged_one_at_a_time(clean, monkeypatch):
    empty = dg.EventRecordsResult(records=[], cursor="", has_more=False)
    monkeypatch.setattr(type(clean), "fetch_materializations", lambda self, *a, **k: empty)
    count, run_id = record_in_a_run(clean, scene_items(5), batch_size=2)
    monkeypatch.undo()
    assert count == 5
    assert {r.run_id for r in recorded(clean).values()} == {run_id}
    assert len(recorded(clean)) == 5
