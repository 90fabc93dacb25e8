"""Assets over drive logs: validation (Pre-process), scene cutting, and the scene catalog."""

import dagster as dg
import pandas as pd

from jadd_dagster.defs.partitions import log_partitions, scene_of_partition_key
from jadd_dagster.defs.resources import PipelineSettings, StoreResource
from jadd_dagster.logs.checks import calibration_problems, timing_problems
from jadd_dagster.logs.stored import log_key, open_stored_log
from jadd_dagster.layout import CATALOG, CATALOG_KEY, scene_index_key
from jadd_dagster.scenes import camera_codecs, cut_scenes, empty_catalog, scene_statistics
from jadd_dagster.storage import read_parquet, write_parquet

CHECK_CALIBRATION = "calibration_is_sane"
CHECK_TIMESTAMPS = "timestamps_are_monotonic"


@dg.asset(
    partitions_def=log_partitions,
    group_name="ingest",
    kinds={"video"},
    check_specs=[
        dg.AssetCheckSpec(CHECK_CALIBRATION, asset="drive_logs", description=(
            "Every camera's calibration can be right: a positive focal length, the principal point inside the "
            "image, a unit rotation (implausible values are refused when the log is read).")),
        dg.AssetCheckSpec(CHECK_TIMESTAMPS, asset="drive_logs", description=(
            "CAN, pose and every camera's frame timestamps increase strictly, and each camera runs at the "
            "manifest's frame rate (within 5 %).")),
    ],
    description="A raw drive log in the object store, validated (Pre-process).",
)
def drive_logs(context: dg.AssetExecutionContext, store: StoreResource) -> dg.MaterializeResult:
    s = store.store()
    with open_stored_log(s, context.partition_key) as log:
        calibration = calibration_problems(log)
        timing = timing_problems(log)
    m = log.manifest
    return dg.MaterializeResult(
        metadata={
            "location": m.location,
            "vehicle": m.vehicle,
            "duration_s": m.duration_us / 1e6,
            "channels": ", ".join(m.channels),
            "location_in_store": s.describe(log_key(context.partition_key)),
        },
        check_results=[
            dg.AssetCheckResult(check_name=CHECK_CALIBRATION, passed=not calibration, metadata={"problems": "\n".join(calibration)}),
            dg.AssetCheckResult(check_name=CHECK_TIMESTAMPS, passed=not timing, metadata={"problems": "\n".join(timing)}),
        ],
    )


@dg.asset(
    partitions_def=log_partitions,
    deps=[drive_logs],
    group_name="ingest",
    automation_condition=dg.AutomationCondition.eager(),
    description="The log cut into fixed-length scenes, with per-scene signal statistics.",
)
def scene_index(context: dg.AssetExecutionContext, store: StoreResource, settings: PipelineSettings) -> dg.MaterializeResult:
    s = store.store()
    with open_stored_log(s, context.partition_key) as log:
        windows, beyond = cut_scenes(log.manifest, settings.scene_length_s)
        table = scene_statistics(log.manifest, windows, log.can(), log.pose(), log.calibration, camera_codecs(log))
    if beyond:
        context.log.warning(f"{beyond} scenes past the per-log limit were not registered")
    write_parquet(s, scene_index_key(context.partition_key), table)
    return dg.MaterializeResult(
        metadata={
            "scenes": len(table),
            "scenes_past_limit": beyond,
            "preview": dg.MetadataValue.md(table.head(20).round(2).to_markdown(index=False)),
        }
    )


@dg.asset(
    deps=[scene_index],
    group_name="ingest",
    automation_condition=dg.AutomationCondition.eager(),
    description="One table of every scene with its signal statistics; curation filters run on it.",
)
def scene_catalog(context: dg.AssetExecutionContext, store: StoreResource) -> dg.MaterializeResult:
    s = store.store()
    known = set(context.instance.get_dynamic_partitions(log_partitions.name))
    parts = [
        read_parquet(s, scene_index_key(name.removesuffix(".parquet")))
        for name in s.list_children(f"{CATALOG}/scenes")
        if name.endswith(".parquet") and name.removesuffix(".parquet") in known
    ]
    catalog = pd.concat(parts, ignore_index=True) if parts else empty_catalog()
    write_parquet(s, CATALOG_KEY, catalog)
    return dg.MaterializeResult(
        metadata={
            "scenes": len(catalog),
            "logs": int(catalog["log_id"].nunique()),
            "hours": round(float(catalog["duration_s"].sum()) / 3600, 3),
            "locations": dg.MetadataValue.md(catalog["location"].value_counts().to_frame("scenes").to_markdown()),
        }
    )


def read_catalog(store: StoreResource) -> pd.DataFrame:
    s = store.store()
    if not s.exists(CATALOG_KEY):
        raise dg.Failure("the scene catalog is empty: materialize drive_logs, scene_index and scene_catalog first")
    return read_parquet(s, CATALOG_KEY)


def catalog_rows_for_partitions(store: StoreResource, partition_keys) -> pd.DataFrame:
    """The catalog rows of `scenes` partitions (keys not in the catalog have no row)."""
    wanted = {scene_of_partition_key(k) for k in partition_keys}
    catalog = read_catalog(store)
    return catalog[[(r.log_id, int(r.scene_index)) in wanted for r in catalog.itertuples()]]


def catalog_rows(store: StoreResource, scene_ids) -> pd.DataFrame:
    """The catalog rows of these scene ids (ids not in the catalog have no row)."""
    catalog = read_catalog(store)
    return catalog[catalog["scene_id"].isin(set(scene_ids))]
