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
