"""The dataset registry and the scene-output cache index, in any SQLAlchemy database.

SQLite is the embedded default; a PostgreSQL URL (postgresql+psycopg2://...) works unchanged.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import sqlalchemy as sa

metadata = sa.MetaData()

datasets = sa.Table(
    "jadd_datasets",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("name", sa.String(64), nullable=False, index=True),
    sa.Column("spec_hash", sa.String(32), nullable=False),
    sa.Column("spec", sa.Text, nullable=False),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("dataroot", sa.Text, nullable=False),
    sa.Column("versions", sa.Text, nullable=False),
    sa.Column("scenes", sa.Integer, nullable=False),
    sa.Column("samples", sa.Integer, nullable=False),
    sa.Column("images", sa.Integer, nullable=False),
    sa.Column("failed_scenes", sa.Integer, nullable=False),
    sa.Column("dagster_run_id", sa.String(64)),
    sa.Column("wall_s", sa.Float),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
)

scene_outputs = sa.Table(
    "jadd_scene_outputs",
    metadata,
    sa.Column("scene_id", sa.String(200), primary_key=True),
    sa.Column("stage", sa.String(32), primary_key=True),
    sa.Column("profile", sa.String(64), primary_key=True),
    sa.Column("path", sa.Text, nullable=False),
    sa.Column("frames", sa.Integer, nullable=False),
    sa.Column("seconds", sa.Float, nullable=False),
    sa.Column("dagster_run_id", sa.String(64)),
    sa.Column("computed_at", sa.DateTime(timezone=True), nullable=False),
)


@dataclass(frozen=True)
class DatasetEntry:
    """One registered build of a dataset."""

    name: str
    spec_hash: str
    spec: dict
    status: str
    dataroot: str
    versions: list[str]
    scenes: int
    samples: int
    images: int
    failed_scenes: int
    dagster_run_id: str | None
    wall_s: float | None
    created_at: datetime


@dataclass(frozen=True)
class SceneOutput:
    """A cached per-scene result: where it lives and what it cost."""

    scene_id: str
    stage: str
    profile: str
    path: str
    frames: int
    seconds: float
    dagster_run_id: str | None = None


def create_tables(engine: sa.Engine, attempts: int = 5) -> None:
    """Create the tables that do not exist yet. Two builds starting at once both see a table
    missing and both create it; the loser's "already exists" error means the table is there, so
    it looks again instead of failing."""
    for attempt in range(attempts):
        try:
            metadata.create_all(engine)
            return
        except (sa.exc.OperationalError, sa.exc.ProgrammingError, sa.exc.IntegrityError) as error:
            if "already exists" not in str(error).lower() and "duplicate" not in str(error).lower() or attempt == attempts - 1:
                raise


class Registry:
    """Reads and writes the registry tables; creates them on first use."""

    def __init__(self, url: str):
        self.url = url
        parsed = sa.engine.make_url(url)
        if parsed.get_backend_name() == "sqlite" and parsed.database not in (None, "", ":memory:"):
            Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)  # first use on a new machine
        self.engine = sa.create_engine(url, future=True)
        if url.startswith("sqlite"):
            # Several worker processes may write at once; wait for the lock rather than fail.
            sa.event.listen(self.engine, "connect", lambda conn, _: conn.execute("PRAGMA busy_timeout=30000"))
        create_tables(self.engine)

    def record_dataset(self, entry: DatasetEntry) -> None:
        with self.engine.begin() as conn:
            conn.execute(
                datasets.insert().values(
                    name=entry.name,
                    spec_hash=entry.spec_hash,
                    spec=json.dumps(entry.spec, sort_keys=True),
                    status=entry.status,
                    dataroot=entry.dataroot,
                    versions=json.dumps(entry.versions),
                    scenes=entry.scenes,
                    samples=entry.samples,
                    images=entry.images,
                    failed_scenes=entry.failed_scenes,
                    dagster_run_id=entry.dagster_run_id,
                    wall_s=entry.wall_s,
                    created_at=entry.created_at,
                )
            )

    def list_datasets(self, name: str | None = None) -> list[DatasetEntry]:
        query = datasets.select().order_by(datasets.c.created_at.desc(), datasets.c.id.desc())
        if name:
            query = query.where(datasets.c.name == name)
        with self.engine.connect() as conn:
            rows = conn.execute(query).mappings().all()
        return [
            DatasetEntry(
                name=r["name"],
                spec_hash=r["spec_hash"],
                spec=json.loads(r["spec"]),
                status=r["status"],
                dataroot=r["dataroot"],
                versions=json.loads(r["versions"]),
                scenes=r["scenes"],
                samples=r["samples"],
                images=r["images"],
                failed_scenes=r["failed_scenes"],
                dagster_run_id=r["dagster_run_id"],
                wall_s=r["wall_s"],
                created_at=r["created_at"],
            )
            for r in rows
        ]

    def record_scene_outputs(self, outputs: Iterable[SceneOutput]) -> int:
        """Insert or replace cache entries in one transaction; returns how many."""
        now = utcnow()
        rows = [{**o.__dict__, "computed_at": now} for o in outputs]
        if not rows:
            return 0
        keys = [(r["scene_id"], r["stage"], r["profile"]) for r in rows]
        with self.engine.begin() as conn:
            for chunk in _chunks(keys, 500):
                conn.execute(
                    scene_outputs.delete().where(
                        sa.tuple_(scene_outputs.c.scene_id, scene_outputs.c.stage, scene_outputs.c.profile).in_(chunk)
                    )
                )
            conn.execute(scene_outputs.insert(), rows)
        return len(rows)

    def cached_scene_outputs(self, stage: str, profile: str, scene_ids: Iterable[str]) -> dict[str, SceneOutput]:
        """The cache entries of these scenes for one stage and profile.

        A few scenes are looked up 500 at a time. Many (a whole large dataset) are found in one
        streamed scan of the stage's rows for the profile: 2,000 IN queries for a million scenes
        took 9-10 s on PostgreSQL, the scan a fraction of that."""
        wanted = scene_ids if isinstance(scene_ids, (set, frozenset)) else set(scene_ids)
        columns = (scene_outputs.c.scene_id, scene_outputs.c.path, scene_outputs.c.frames,
                   scene_outputs.c.seconds, scene_outputs.c.dagster_run_id)
        of_profile = sa.select(*columns).where(scene_outputs.c.stage == stage, scene_outputs.c.profile == profile)
        if len(wanted) > SCAN_FROM_SCENES:
            queries = [of_profile.execution_options(yield_per=20_000)]
        else:
            queries = [of_profile.where(scene_outputs.c.scene_id.in_(chunk)) for chunk in _chunks(sorted(wanted), 500)]
        found: dict[str, SceneOutput] = {}
        with self.engine.connect() as conn:
            for query in queries:
                for scene_id, path, frames, seconds, run_id in conn.execute(query):
                    if scene_id in wanted:
                        found[scene_id] = SceneOutput(scene_id, stage, profile, path, frames, seconds, run_id)
        return found


# Above this many scenes one scan of a stage's rows beats IN lists of 500.
SCAN_FROM_SCENES = 20_000


def _chunks(items: list, size: int):
    for i in range(0, len(items), size):
        yield items[i : i + size]


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


def safe_url(url: str) -> str:
    """The URL with any password masked, for logs and metadata."""
    return sa.engine.make_url(url).render_as_string(hide_password=True)
