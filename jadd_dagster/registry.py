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
    # Added after the first release (create_tables adds them to an existing table): cost.py's
    # estimate before the build and actual cost after it (USD), both breakdowns with the measured
    # seconds as JSON, and who launched the run (a user, a schedule or a sensor).
    sa.Column("estimate_usd", sa.Float),
    sa.Column("actual_usd", sa.Float),
    sa.Column("cost", sa.Text),
    sa.Column("launched_by", sa.String(200)),
)
# Columns of jadd_datasets that registries made before them lack: create_tables adds them.
ADDED_DATASET_COLUMNS = ("estimate_usd", "actual_usd", "cost", "launched_by")

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
    estimate_usd: float | None = None
    actual_usd: float | None = None
    cost: dict | None = None  # {"estimate": CostBreakdown json, "actual": ..., "measured": {...}}
    launched_by: str | None = None


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
            add_missing_columns(engine, datasets, ADDED_DATASET_COLUMNS)
            return
        except (sa.exc.OperationalError, sa.exc.ProgrammingError, sa.exc.IntegrityError) as error:
            if not _lost_a_race(error) or attempt == attempts - 1:
                raise


def _lost_a_race(error: Exception) -> bool:
    """Another process created the table or added the column first (SQLite: "already exists" /
    "duplicate column name"; PostgreSQL: DuplicateTable / DuplicateColumn "already exists")."""
    text = str(error).lower()
    return "already exists" in text or "duplicate" in text


def add_missing_columns(engine: sa.Engine, table: sa.Table, names: tuple[str, ...]) -> list[str]:
    """ALTER TABLE ... ADD COLUMN for each of names the table in the database lacks (all nullable,
    no default: existing rows read None). Returns the columns added. Two processes may both try;
    the loser's "duplicate column" error sends create_tables round again, which then finds them."""
    present = {column["name"] for column in sa.inspect(engine).get_columns(table.name)}
    missing = [name for name in names if name not in present]
    with engine.begin() as conn:
        for name in missing:
            column = table.c[name]
            kind = column.type.compile(dialect=engine.dialect)
            conn.execute(sa.text(f'ALTER TABLE {table.name} ADD COLUMN "{name}" {kind}'))
    return missing


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
                    estimate_usd=entry.estimate_usd,
                    actual_usd=entry.actual_usd,
                    cost=json.dumps(entry.cost, sort_keys=True) if entry.cost is not None else None,
                    launched_by=entry.launched_by,
                )
            )

    def list_datasets(
        self, name: str | None = None, since: datetime | None = None, until: datetime | None = None
    ) -> list[DatasetEntry]:
        """Registered builds, newest first: of one dataset, and/or created in [since, until)."""
        query = datasets.select().order_by(datasets.c.created_at.desc(), datasets.c.id.desc())
        if name:
            query = query.where(datasets.c.name == name)
        if since is not None:
            query = query.where(datasets.c.created_at >= since)
        if until is not None:
            query = query.where(datasets.c.created_at < until)
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
                created_at=_aware(r["created_at"]),
                estimate_usd=r["estimate_usd"],
                actual_usd=r["actual_usd"],
                cost=json.loads(r["cost"]) if r["cost"] else None,
                launched_by=r["launched_by"],
            )
            for r in rows
        ]

    def recent_seconds(self, stage: str, profile: str, limit: int = 200) -> list[tuple[int, float]]:
        """(frames, seconds) of the newest `limit` cache entries of a stage and profile that a
        worker measured (seconds above 0; outputs recovered from a killed run have none): what
        the cost estimate takes its medians from."""
        query = (
            sa.select(scene_outputs.c.frames, scene_outputs.c.seconds)
            .where(scene_outputs.c.stage == stage, scene_outputs.c.profile == profile, scene_outputs.c.seconds > 0)
            .order_by(scene_outputs.c.computed_at.desc())
            .limit(limit)
        )
        with self.engine.connect() as conn:
            return [(int(frames), float(seconds)) for frames, seconds in conn.execute(query)]

    def recent_scene_seconds(self, stage: str, profile: str, limit: int = 200) -> list[tuple[str, int, float]]:
        """(scene id, frames, seconds) of the same entries as recent_seconds: the scene id says
        which log, so the cost estimate can compare them per pixel (the log's camera size)."""
        query = (
            sa.select(scene_outputs.c.scene_id, scene_outputs.c.frames, scene_outputs.c.seconds)
            .where(scene_outputs.c.stage == stage, scene_outputs.c.profile == profile, scene_outputs.c.seconds > 0)
            .order_by(scene_outputs.c.computed_at.desc())
            .limit(limit)
        )
        with self.engine.connect() as conn:
            return [(str(scene_id), int(frames), float(seconds)) for scene_id, frames, seconds in conn.execute(query)]

    def recent_costs(self, limit: int = 50) -> list[dict]:
        """The cost records (DatasetEntry.cost) of the newest `limit` builds that have one."""
        query = (sa.select(datasets.c.cost).where(datasets.c.cost.is_not(None))
                 .order_by(datasets.c.created_at.desc(), datasets.c.id.desc()).limit(limit))
        with self.engine.connect() as conn:
            return [json.loads(text) for (text,) in conn.execute(query)]

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


def _aware(moment: datetime) -> datetime:
    """SQLite gives datetimes back without their zone; they were stored in UTC."""
    return moment.replace(tzinfo=timezone.utc) if moment is not None and moment.tzinfo is None else moment


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


def safe_url(url: str) -> str:
    """The URL with any password masked, for logs and metadata."""
    return sa.engine.make_url(url).render_as_string(hide_password=True)
