"""record_materializations: many `sampled_frames` materializations from inside one step, on SQLite and PostgreSQL;
bookkeeping_advice: when a build is too large for the SQLite instance."""

import math

import dagster as dg
import pytest
import yaml

from jadd_dagster.defs import bookkeeping
from jadd_dagster.defs.bookkeeping import DIMENSION_TAG_PREFIX, bookkeeping_advice, record_materializations
from jadd_dagster.defs.partitions import log_partitions, scene_partition_key, scene_partitions

SAMPLED_FRAMES = dg.AssetKey("sampled_frames")
LOGS = ["log-a", "log-b", "log-c"]
MANY = {"sqlite": 3_000, "postgres": 3_000}
# The other SQLite-backed event log storage Dagster ships: one database for all runs.
CONSOLIDATED_SQLITE = {"module": "dagster._core.storage.event_log", "class": "ConsolidatedSqliteEventLogStorage"}


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
    sizes = []
    real = bookkeeping._store_events
    monkeypatch.setattr(
        bookkeeping, "_store_events", lambda storage, events: (sizes.append(len(events)), real(storage, events))[1]
    )
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


@pytest.fixture
def sqlite_instance(tmp_path):
    with dg.instance_for_test(temp_dir=str(tmp_path)) as instance:
        instance.add_dynamic_partitions(log_partitions.name, LOGS)
        yield instance


def what_is_stored(instance, run_id) -> dict:
    """Everything Dagster reads back about the recorded materializations, with the run id checked and left out."""
    records = instance.fetch_materializations(SAMPLED_FRAMES, limit=10_000).records
    assert {r.run_id for r in records} == {run_id}
    latest = instance.get_asset_records([SAMPLED_FRAMES])[0].asset_entry.last_materialization_record
    run_log = instance.all_logs(run_id, of_type=dg.DagsterEventType.ASSET_MATERIALIZATION)
    keys = [scene_partition_key(log_id, i) for log_id in LOGS for i in range(12)]
    tags_of_log_b = instance.get_event_tags_for_asset(SAMPLED_FRAMES, {f"{DIMENSION_TAG_PREFIX}log": "log-b"})
    return {
        "records": sorted(
            (r.partition_key, r.event_log_entry.step_key, r.event_log_entry.job_name,
             sorted(r.asset_materialization.tags.items()),
             sorted((k, v.value) for k, v in r.asset_materialization.metadata.items()))
            for r in records
        ),
        "tags by event id": sorted(  # the index's tags belong to the right event ids
            (r.partition_key, sorted(instance.get_event_tags_for_asset(SAMPLED_FRAMES, filter_event_id=r.storage_id)[0].items()))
            for r in records
        ),
        "tags of log-b": sorted(sorted(t.items()) for t in tags_of_log_b),
        "latest": (latest.partition_key, latest.run_id == run_id),
        "in the run's log": sorted(e.dagster_event.partition for e in run_log if e.dagster_event.asset_key == SAMPLED_FRAMES),
        "materialized": sorted(instance.get_materialized_partitions(SAMPLED_FRAMES)),
        "status": instance.get_status_by_partition(SAMPLED_FRAMES, keys, scene_partitions),
    }


def test_on_sqlite_a_batch_is_stored_as_dagster_stores_it_event_by_event(sqlite_instance, monkeypatch):
    storage = sqlite_instance.event_log_storage
    one_by_one = []
    real_store_event = storage.store_event
    monkeypatch.setattr(
        storage, "store_event", lambda event: (one_by_one.append(event.dagster_event.asset_key), real_store_event(event))[1]
    )
    monkeypatch.setattr(bookkeeping, "SQLITE_ROWS_PER_INSERT", 4)  # several statements in one transaction
    _, run_id = record_in_a_run(sqlite_instance, scene_items(30), batch_size=11)
    assert one_by_one.count(SAMPLED_FRAMES) == 1  # the first, by log_event; the rest in 3 batches
    ours = what_is_stored(sqlite_instance, run_id)

    sqlite_instance.wipe_assets([SAMPLED_FRAMES])
    one_by_one.clear()
    monkeypatch.setattr(bookkeeping, "_store_events", lambda storage, events: storage.store_event_batch(events))
    _, run_id = record_in_a_run(sqlite_instance, scene_items(30), batch_size=11)
    assert one_by_one.count(SAMPLED_FRAMES) == 30
    dagsters = what_is_stored(sqlite_instance, run_id)

    assert ours == dagsters
    assert len(ours["records"]) == 30 and ours["latest"] == ("log-c|0009", True)
    assert set(ours["status"].values()) == {dg.AssetPartitionStatus.MATERIALIZED, None}
    assert len(ours["materialized"]) == 30


def test_without_the_storage_methods_it_relies_on_sqlite_gets_dagsters_store_event_batch(sqlite_instance, monkeypatch):
    batches = []
    storage = sqlite_instance.event_log_storage
    real = storage.store_event_batch
    monkeypatch.setattr(storage, "store_event_batch", lambda events: (batches.append(len(events)), real(events))[1])
    monkeypatch.setattr(bookkeeping, "SQLITE_STORAGE_METHODS", (*bookkeeping.SQLITE_STORAGE_METHODS, "_gone_in_a_new_dagster"))
    count, _ = record_in_a_run(sqlite_instance, scene_items(12), batch_size=5)
    assert count == 12 and batches == [5, 5, 1]
    assert len(sqlite_instance.get_materialized_partitions(SAMPLED_FRAMES)) == 12


def test_another_sqlite_storage_gets_each_event_once_through_its_own_batch_write(tmp_path):
    overrides = {"event_log_storage": {**CONSOLIDATED_SQLITE, "config": {"base_dir": str(tmp_path / "events")}}}
    with dg.instance_for_test(temp_dir=str(tmp_path), overrides=overrides) as instance:
        assert type(instance.event_log_storage).__name__ == "ConsolidatedSqliteEventLogStorage"
        instance.add_dynamic_partitions(log_partitions.name, LOGS)
        count, run_id = record_in_a_run(instance, scene_items(25), batch_size=10)
        assert count == 25
        run_log = instance.all_logs(run_id, of_type=dg.DagsterEventType.ASSET_MATERIALIZATION)
        assert sum(e.dagster_event.asset_key == SAMPLED_FRAMES for e in run_log) == 25
        assert set(instance.get_materialized_partitions(SAMPLED_FRAMES)) == {str(k) for k, _ in scene_items(25)}
        assert bookkeeping_advice(instance, 10_000) is None
        assert "ConsolidatedSqliteEventLogStorage" in bookkeeping_advice(instance, 100_000)
        assert "above 12,000 scenes per build" in bookkeeping_advice(instance, 100_000)


def test_the_advice_names_postgresql_for_a_build_too_large_for_sqlite_and_nothing_for_a_small_one(sqlite_instance):
    # bench/RESULTS.md "Per-scene bookkeeping": 3 ms a scene, 5 minutes at most, i.e. 100,000 scenes
    assert bookkeeping_advice(sqlite_instance, 1_000) is None
    assert bookkeeping_advice(sqlite_instance, 100_000) is None
    assert bookkeeping_advice(sqlite_instance, 100_001) is not None
    advice = bookkeeping_advice(sqlite_instance, 1_000_000)
    assert "\n" not in advice
    assert advice.startswith("recording 1,000,000 scenes in this instance's SQLite event log")
    assert "about 50 min (3.0 ms a scene)" in advice
    assert "above 100,000 scenes per build use the PostgreSQL instance" in advice
    assert bookkeeping_advice(sqlite_instance, 1_000_000, limit_s=3_600) is None


@pytest.mark.postgres
def test_there_is_no_advice_on_postgresql(postgres_server, tmp_path):
    database = postgres_server.new_database("advice")
    overrides = yaml.safe_load(database.dagster_yaml())
    with dg.instance_for_test(temp_dir=str(tmp_path), overrides=overrides) as instance:
        assert bookkeeping_advice(instance, 10_000_000) is None
