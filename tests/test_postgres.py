"""A whole `jadd build` with the Dagster instance and the dataset registry on a real PostgreSQL server."""

import json

import dagster as dg
import pytest
import sqlalchemy as sa
import yaml

from jadd_dagster import headless
from jadd_dagster.cli import main as jadd
from jadd_dagster.profile import PROFILES_DIR

pytestmark = [pytest.mark.postgres, pytest.mark.e2e]

SPEC = {
    "name": "pg", "channels": ["CAM_FRONT"], "keyframe_hz": 2, "sweep_hz": 10, "image_width": 64, "image_height": 36,
}
REGISTRY_URL_ENV = "JADD_TEST_REGISTRY_URL"


@pytest.fixture(scope="module")
def built(postgres_server, two_short_logs, tmp_path_factory):
    """Build dataset "pg" over two tiny logs (shared with the S3 build); the profile's registry and Dagster's storage are on PostgreSQL."""
    database = postgres_server.new_database("e2e")
    root = tmp_path_factory.mktemp("pg")
    profile = yaml.safe_load((PROFILES_DIR / "local.yaml").read_text())
    profile["registry"] = {"url_env": REGISTRY_URL_ENV}  # the URL holds a password: only in the environment
    (root / "pg.yaml").write_text(yaml.safe_dump(profile))
    (root / "spec.yaml").write_text(yaml.safe_dump(SPEC))
    workdir = root / "work"
    with pytest.MonkeyPatch.context() as env:
        for name in ("JADD_HOME", "DAGSTER_HOME"):  # use_workdir sets them; monkeypatch restores them
            env.delenv(name, raising=False)
        env.setenv("JADD_PROFILE", str(root / "pg.yaml"))
        env.setenv(REGISTRY_URL_ENV, database.url)
        headless.use_workdir(workdir, dagster_yaml=database.dagster_yaml())
        code = jadd(["build", "--spec", str(root / "spec.yaml"), "--logs", str(two_short_logs),
                     "--workdir", str(workdir)])
        yield {"code": code, "database": database, "workdir": workdir}


def test_the_build_succeeds(built):
    assert built["code"] == 0


def test_the_registry_tables_are_on_postgres(built):
    engine = sa.create_engine(built["database"].url)
    try:
        with engine.connect() as conn:
            datasets = conn.execute(sa.text("SELECT name, status, scenes FROM jadd_datasets")).all()
            scene_ids = conn.execute(sa.text("SELECT scene_id FROM jadd_scene_outputs")).scalars().all()
    finally:
        engine.dispose()
    assert [(name, status) for name, status, _ in datasets] == [("pg", "complete")]
    assert datasets[0][2] == len(scene_ids) >= 2


def test_dagster_runs_and_scene_materializations_are_on_postgres(built):
    instance = dg.DagsterInstance.get()  # DAGSTER_HOME is the work folder's, whose dagster.yaml names PostgreSQL
    assert type(instance.run_storage).__module__.startswith("dagster_postgres")
    runs = instance.get_run_records()
    assert runs and {r.dagster_run.status for r in runs} == {dg.DagsterRunStatus.SUCCESS}
    engine = sa.create_engine(built["database"].url)
    try:
        with engine.connect() as conn:
            scene_ids = conn.execute(sa.text("SELECT scene_id FROM jadd_scene_outputs")).scalars().all()
    finally:
        engine.dispose()
    expected = {"|".join(scene_id.rsplit("/", 1)) for scene_id in scene_ids}
    assert set(instance.get_materialized_partitions(dg.AssetKey("sampled_frames"))) == expected
    latest = instance.get_latest_materialization_event(dg.AssetKey("jadd_dataset"))
    assert latest.run_id in {r.dagster_run.run_id for r in runs}


def test_datasets_list_reads_the_postgres_registry(built, capsys):
    capsys.readouterr()
    assert jadd(["datasets", "list", "--json", "--workdir", str(built["workdir"])]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert [(d["name"], d["status"]) for d in listed] == [("pg", "complete")]
