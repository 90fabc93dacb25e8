from datetime import datetime, timezone

from jadd_dagster.registry import DatasetEntry, Registry, SceneOutput, safe_url


def entry(name: str, scenes: int) -> DatasetEntry:
    return DatasetEntry(name, "abc", {"name": name}, "complete", "/data", ["v1.0-" + name], scenes, scenes * 40,
                        scenes * 200, 0, "run-1", 12.5, datetime.now(timezone.utc))


def test_datasets_are_listed_newest_first(tmp_path):
    registry = Registry(f"sqlite:///{tmp_path}/r.db")
    registry.record_dataset(entry("a", 3))
    registry.record_dataset(entry("b", 5))
    listed = registry.list_datasets()
    assert [e.name for e in listed] == ["b", "a"]
    assert listed[0].versions == ["v1.0-b"] and listed[0].spec == {"name": "b"}
    assert [e.name for e in Registry(f"sqlite:///{tmp_path}/r.db").list_datasets("a")] == ["a"]


def test_scene_output_cache_is_per_stage_and_profile_and_replaces_entries(tmp_path):
    registry = Registry(f"sqlite:///{tmp_path}/r.db")
    registry.record_scene_outputs([SceneOutput("l/0001", "sampled", "p1", "x", 10, 1.0)])
    registry.record_scene_outputs([SceneOutput("l/0001", "sampled", "p1", "y", 12, 2.0)])
    registry.record_scene_outputs([SceneOutput("l/0001", "sampled", "p2", "z", 5, 1.0)])
    hits = registry.cached_scene_outputs("sampled", "p1", ["l/0001", "l/0002"])
    assert list(hits) == ["l/0001"] and hits["l/0001"].path == "y" and hits["l/0001"].frames == 12
    assert registry.cached_scene_outputs("autolabel", "p1", ["l/0001"]) == {}


def test_safe_url_hides_the_password():
    assert "secret" not in safe_url("postgresql://jadd:secret@db:5432/jadd")


def test_a_new_sqlite_registry_creates_its_folder(tmp_path):
    Registry(f"sqlite:///{tmp_path}/not/yet/there/r.db").record_dataset(entry("a", 1))
    assert (tmp_path / "not" / "yet" / "there" / "r.db").exists()


def test_a_large_lookup_scans_and_finds_the_same_entries_as_small_ones(tmp_path, monkeypatch):
    import jadd_dagster.registry as registry_module

    registry = Registry(f"sqlite:///{tmp_path}/r.db")
    registry.record_scene_outputs([SceneOutput(f"l/{i:04d}", "sampled", "p1", f"k{i}", i, 1.0) for i in range(300)])
    registry.record_scene_outputs([SceneOutput("l/0007", "sampled", "p2", "other", 1, 1.0)])
    wanted = [f"l/{i:04d}" for i in range(0, 400, 3)]  # a third of the cached scenes and some never cached
    small = registry.cached_scene_outputs("sampled", "p1", wanted)
    monkeypatch.setattr(registry_module, "SCAN_FROM_SCENES", 10)
    scanned = registry.cached_scene_outputs("sampled", "p1", wanted)
    assert scanned == small and len(small) == 100
    assert scanned["l/0006"].path == "k6" and scanned["l/0006"].frames == 6


def test_an_existing_registry_without_the_cost_columns_gets_them_and_keeps_its_rows(tmp_path):
    """A registry.db made before the cost model (the first release's jadd_datasets) is migrated in
    place by the next Registry: the new columns are added, old rows read None, new rows keep costs."""
    import sqlite3
    from dataclasses import replace

    path = tmp_path / "old.db"
    with sqlite3.connect(path) as db:
        db.executescript("""
            CREATE TABLE jadd_datasets (
                id INTEGER NOT NULL PRIMARY KEY, name VARCHAR(64) NOT NULL, spec_hash VARCHAR(32) NOT NULL,
                spec TEXT NOT NULL, status VARCHAR(16) NOT NULL, dataroot TEXT NOT NULL, versions TEXT NOT NULL,
                scenes INTEGER NOT NULL, samples INTEGER NOT NULL, images INTEGER NOT NULL,
                failed_scenes INTEGER NOT NULL, dagster_run_id VARCHAR(64), wall_s FLOAT, created_at DATETIME NOT NULL);
            CREATE INDEX ix_jadd_datasets_name ON jadd_datasets (name);
            INSERT INTO jadd_datasets VALUES (1, 'old', 'h', '{"name": "old"}', 'complete', '/d', '["v1.0-old"]',
                                              3, 120, 1200, 0, 'run-0', 9.5, '2026-11-01 10:00:00.000000');
            CREATE TABLE jadd_scene_outputs (
                scene_id VARCHAR(200) NOT NULL, stage VARCHAR(32) NOT NULL, profile VARCHAR(64) NOT NULL,
                path TEXT NOT NULL, frames INTEGER NOT NULL, seconds FLOAT NOT NULL, dagster_run_id VARCHAR(64),
                computed_at DATETIME NOT NULL, PRIMARY KEY (scene_id, stage, profile));
            INSERT INTO jadd_scene_outputs VALUES ('l/0001', 'sampled', 'p1', 'x', 10, 1.5, 'run-0', '2026-11-01 10:00:00');
        """)
    registry = Registry(f"sqlite:///{path}")
    [old] = registry.list_datasets()
    assert (old.name, old.scenes, old.wall_s) == ("old", 3, 9.5)
    assert (old.estimate_usd, old.actual_usd, old.cost, old.launched_by) == (None, None, None, None)
    assert old.created_at.tzinfo is not None
    registry.record_dataset(replace(entry("new", 2), estimate_usd=0.25, actual_usd=0.2, cost={"measured": {}},
                                    launched_by="alice"))
    again = Registry(f"sqlite:///{path}")  # a second start finds the columns there: nothing to add
    new, _ = again.list_datasets()
    assert (new.estimate_usd, new.actual_usd, new.cost, new.launched_by) == (0.25, 0.2, {"measured": {}}, "alice")
    assert again.cached_scene_outputs("sampled", "p1", ["l/0001"])["l/0001"].seconds == 1.5
    assert again.recent_seconds("sampled", "p1") == [(10, 1.5)]
    with sqlite3.connect(path) as db:
        columns = [row[1] for row in db.execute("PRAGMA table_info(jadd_datasets)")]
    assert columns[-4:] == ["estimate_usd", "actual_usd", "cost", "launched_by"]


def test_builds_are_listed_by_the_day_they_were_made(tmp_path):
    from dataclasses import replace
    from datetime import timedelta

    registry = Registry(f"sqlite:///{tmp_path}/r.db")
    start = datetime(2026, 11, 28, 7, tzinfo=timezone.utc)
    for name, at in (("before", start - timedelta(seconds=1)), ("first", start), ("last", start + timedelta(hours=23))):
        registry.record_dataset(replace(entry(name, 1), created_at=at))
    assert [e.name for e in registry.list_datasets(since=start, until=start + timedelta(days=1))] == ["last", "first"]


import pytest  # noqa: E402 - for the marker below (this file's earlier tests need none)


@pytest.mark.postgres
def test_a_postgres_registry_without_the_cost_columns_gets_them_once(postgres_server):
    """The same migration on PostgreSQL, with two registries starting on the old table at once."""
    from concurrent.futures import ThreadPoolExecutor

    import sqlalchemy as sa

    url = postgres_server.new_database("oldschema").url
    engine = sa.create_engine(url)
    with engine.begin() as conn:
        conn.execute(sa.text(
            "CREATE TABLE jadd_datasets (id SERIAL PRIMARY KEY, name VARCHAR(64) NOT NULL, spec_hash VARCHAR(32) NOT NULL,"
            " spec TEXT NOT NULL, status VARCHAR(16) NOT NULL, dataroot TEXT NOT NULL, versions TEXT NOT NULL,"
            " scenes INTEGER NOT NULL, samples INTEGER NOT NULL, images INTEGER NOT NULL, failed_scenes INTEGER NOT NULL,"
            " dagster_run_id VARCHAR(64), wall_s FLOAT, created_at TIMESTAMP WITH TIME ZONE NOT NULL)"))
        conn.execute(sa.text("INSERT INTO jadd_datasets (name, spec_hash, spec, status, dataroot, versions, scenes, samples,"
                             " images, failed_scenes, created_at) VALUES ('old', 'h', '{}', 'complete', '/d', '[]', 1, 40,"
                             " 400, 0, now())"))
    engine.dispose()
    with ThreadPoolExecutor(2) as pool:
        registries = list(pool.map(lambda _: Registry(url), range(2)))
    [old] = registries[0].list_datasets()
    assert old.name == "old" and old.actual_usd is None
    registries[1].record_dataset(entry("new", 1))
    assert [e.name for e in registries[0].list_datasets()] == ["new", "old"]
    for registry in registries:
        registry.engine.dispose()
