"""Cost before and after a build, and the morning review (jadd_dagster/cost.py,
jadd_dagster/defs/cost_report.py): each estimate component against figures computed here by hand
from the same inputs, the medians of measured seconds, the budget guard, the actual cost from
worker seconds and AWS Batch job durations (moto), and the daily report materialized against a real
Dagster instance with its limit check and Sentry event."""

import base64
import json
import re
from datetime import datetime, timedelta, timezone

import dagster as dg
import pandas as pd
import pytest

from test_batch import BRIEF_CHILD, FakeComputeEnvironment, aws, empty_chunks, materialize_stage  # noqa: F401 - aws: moto's Batch

from jadd_dagster.build import actual_work
from jadd_dagster.cost import (
    CAN_BUS_FILES_PER_SCENE, GETS_PER_LABELLED_SCENE, GETS_PER_MERGED_SCENE, GETS_PER_SAMPLED_SCENE, PUTS_PER_LABELLED_SCENE,
    PUTS_PER_PART, PUTS_PER_SAMPLED_SCENE, ChunkMeter, CostBreakdown, CostTable, CostTableError, budget_message, format_usd,
    median_rate, price,
)
from jadd_dagster.defs.automation import dataset_run_config
from jadd_dagster.defs.compute_resources import BatchComputeBackend
from jadd_dagster.defs.cost_report import CHECK_SPEND, daily_cost_report, day_window, launched_by, plan_costing
from jadd_dagster.defs.dataset_assets import dataset_plan
from jadd_dagster.defs.partitions import dataset_partitions
from jadd_dagster.defs.resources import AutolabelModels, PipelineSettings, RegistryResource, StoreResource
from jadd_dagster.layout import CATALOG_KEY, STAGE_AUTOLABELED, STAGE_SAMPLED, index_key, plan_key, stage_record_key
from jadd_dagster.planning import CostInputs, make_plan, sampling_profile
from jadd_dagster.records import DatasetIndex, DatasetPlan, PartPlan, StageRecord, read_record, write_record
from jadd_dagster.registry import DatasetEntry, Registry, SceneOutput
from jadd_dagster.spec import parse_spec
from jadd_dagster.storage import LocalStore, write_parquet

# Prices chosen so that every component is visible and no two are alike.
TABLE = CostTable(
    usd_per_cpu_hour=0.36, usd_per_gpu_hour=3.6, usd_per_gb_month=0.5, usd_per_1000_put=0.02, usd_per_1000_get=0.004,
    storage_months=2, cpu_seconds_per_frame=0.05, cpu_seconds_per_frame_undistorted=0.08,
    autolabel_seconds_per_scene={"baseline": 30.0}, merge_seconds_per_scene=0.5, merge_seconds_per_part=5.0,
    bytes_per_megapixel=200_000,
    table_bytes_per_frame=1_000,
)
CHANNELS = ["CAM_FRONT", "CAM_FRONT_LEFT"]


def catalog(durations: list[float], log_id: str = "log-a") -> pd.DataFrame:
    start = 1_700_000_000_000_000
    rows, t = [], start
    for i, seconds in enumerate(durations):
        rows.append({"scene_id": f"{log_id}/{i:04d}", "log_id": log_id, "scene_index": i, "location": "here",
                     "vehicle": "v", "channels": ",".join(CHANNELS), "start_time_us": t,
                     "end_time_us": t + int(seconds * 1e6), "duration_s": seconds, "mean_speed_mps": 10.0,
                     "has_gap": False})
        t += int(seconds * 1e6)
    return pd.DataFrame(rows)


def spec(**changes):
    return parse_spec({"name": "costly", "channels": CHANNELS, "keyframe_hz": 2, "sweep_hz": 10, "undistort": True,
                       "image_width": 800, "image_height": 450, "autolabel": True, "include_can_bus": True, **changes})


def settings(table: CostTable = TABLE) -> PipelineSettings:
    return PipelineSettings(cost=table.to_mapping())


def test_the_estimate_prices_each_component_from_the_spec_the_cache_and_the_table():
    durations = [20.0, 20.0, 20.0, 12.5]
    s = spec()
    ids = [f"log-a/{i:04d}" for i in range(4)]
    inputs = CostInputs(TABLE, sampled={ids[0]}, labelled={ids[0], ids[1]})
    plan = make_plan(s, catalog(durations), settings(), None, "run", lambda selected, sizes, streams: inputs)
    estimate = plan.estimate

    # By hand: three scenes (52.5 s) to sample at 10 Hz from 2 channels, undistorted, from cameras of
    # the reference size (no calibration at hand) into 800x450 frames (a quarter of the pixels): the
    # 0.08 s measured at the reference size less three quarters of its encoding share (0.025 s).
    frames = round(52.5 * 10) * 2
    sampling_usd = frames * (0.08 - 0.75 * 0.025) * 0.36 / 3600
    # Two scenes without labels (32.5 s of scene time), 30 CPU s each; their keyframe images read.
    label_usd = 2 * 30.0 * 0.36 / 3600
    label_images = round(32.5 * 2) * 2
    # No earlier plan: every scene's part is merged (one part: 5 CPU s), 0.5 CPU s a scene.
    merge_usd = (5.0 + 4 * 0.5) * 0.36 / 3600
    # 800×450 JPEGs at 200 kB a megapixel, plus 1 kB of tables a frame, for two months.
    gb = frames * (0.36 * 200_000 + 1_000) / 1e9
    storage_usd = gb * 2 * 0.5
    puts = frames + PUTS_PER_SAMPLED_SCENE * 3 + PUTS_PER_LABELLED_SCENE * 2 + PUTS_PER_PART * 1 + CAN_BUS_FILES_PER_SCENE * 4
    gets = (GETS_PER_SAMPLED_SCENE + 2) * 3 + GETS_PER_LABELLED_SCENE * 2 + label_images + GETS_PER_MERGED_SCENE * 4
    requests_usd = puts / 1000 * 0.02 + gets / 1000 * 0.004

    expected = {"sampling": sampling_usd, "autolabel": label_usd, "merge": merge_usd, "storage": storage_usd,
                "requests": requests_usd}
    assert estimate["components"] == pytest.approx(expected, rel=1e-9)
    assert estimate["usd"] == pytest.approx(sum(expected.values()), rel=1e-9)
    assert estimate["frames"] == frames and estimate["cached_scenes"] == 1
    assert estimate["cpu_hours"] == pytest.approx((frames * (0.08 - 0.75 * 0.025) + 60 + 7) / 3600)
    lines = {line.component: line for line in CostBreakdown.from_json(estimate["breakdown"]).lines}
    assert f"{puts:,d} PUT, {gets:,d} GET" == lines["requests"].quantity
    assert lines["sampling"].basis == "0.0612 s a frame at 0.36 MP, table"
    assert lines["merge"].basis == "5 s a part + 0.5 s a scene, table"


def test_native_frames_use_the_native_rate_and_a_gpu_model_is_priced_per_gpu_hour():
    s = spec(undistort=False, image_width=None, image_height=None)
    inputs = CostInputs(TABLE, label_gpu=True)
    estimate = make_plan(s, catalog([20.0]), settings(), None, "run", lambda selected, sizes, streams: inputs).estimate
    assert estimate["components"]["sampling"] == pytest.approx(400 * 0.05 * 0.36 / 3600)
    assert estimate["components"]["autolabel"] == pytest.approx(30.0 * 3.6 / 3600)
    assert estimate["gpu_hours"] == pytest.approx(30.0 / 3600)
    gb = 400 * (1.44 * 200_000 + 1_000) / 1e9  # the camera's own size: native_megapixels
    assert estimate["components"]["storage"] == pytest.approx(gb * 2 * 0.5)


def test_a_rebuild_with_everything_cached_merges_only_what_changed():
    s = spec()
    ids = [f"log-a/{i:04d}" for i in range(3)]
    everything = CostInputs(TABLE, sampled=set(ids), labelled=set(ids))
    first = make_plan(s, catalog([20.0] * 3), settings(), None, "run-1", lambda selected, sizes, streams: everything)
    again = make_plan(s, catalog([20.0] * 3), settings(), first, "run-2", lambda selected, sizes, streams: everything)
    assert again.estimate["components"]["sampling"] == 0 and again.estimate["components"]["autolabel"] == 0
    assert again.estimate["components"]["merge"] == 0 and again.estimate["work"]["merged_parts"] == 0
    grown = make_plan(s, catalog([20.0] * 4), settings(), first, "run-3", lambda selected, sizes, streams: everything)
    assert grown.estimate["work"]["merged_scenes"] == 4 and grown.estimate["work"]["sampled_scenes"] == 1


def test_measured_seconds_calibrate_the_table_over_recent_entries(tmp_path):
    s = spec(autolabel_model="baseline")
    registry = RegistryResource(url=f"sqlite:///{tmp_path}/r.db")
    reg = registry.registry()
    profile_key = sampling_profile(s).key()
    per_frame = TABLE.seconds_per_frame(True, 10, 1.44, 0.36)  # no calibration at hand: reference cameras
    # Measured 1, 2, 3 and 3 times the table's seconds (2.625 times over all their frames); a
    # recovered output (0 s) and another profile don't count.
    reg.record_scene_outputs([
        SceneOutput("old/0000", STAGE_SAMPLED, profile_key, "p0", 100, 100 * per_frame),
        SceneOutput("old/0001", STAGE_SAMPLED, profile_key, "p1", 100, 200 * per_frame),
        SceneOutput("old/0002", STAGE_SAMPLED, profile_key, "p2", 200, 600 * per_frame),
        SceneOutput("old/0003", STAGE_SAMPLED, profile_key, "p3", 100, 0.0),
        SceneOutput("old/0004", STAGE_SAMPLED, "another-profile", "p4", 1, 99.0),
        SceneOutput("log-a/0000", STAGE_SAMPLED, profile_key, "a0", 400, 1200 * per_frame),  # cached for this plan
    ])
    models = AutolabelModels()
    from jadd_dagster.defs.autolabel_assets import label_cache

    _, _, label_key = label_cache(s, models)
    reg.record_scene_outputs([SceneOutput(f"old/{i:04d}", STAGE_AUTOLABELED, label_key, f"l{i}", 5, seconds)
                              for i, seconds in enumerate([4.0, 6.0, 11.0, 3.0])])
    # Merges: 1.5 and 2.5 times the table (2 together); a build from before the per-part term is left out.
    reg.record_dataset(entry("before", 10, cost={"measured": {"merge_s_per_scene": 9.0}}))
    for factor in (1.5, 2.5):
        reg.record_dataset(entry("before", 10, cost={"measured": {
            "merge_s_per_scene": 1.0, "merge_s": factor * (2 * 5.0 + 10 * 0.5), "merged_scenes": 10, "merged_parts": 2}}))

    costing = plan_costing(s, registry, models, settings())
    inputs = costing(["log-a/0000", "log-a/0001"])
    assert inputs.sampled == {"log-a/0000"} and inputs.labelled == set()
    assert inputs.sampling.factor == pytest.approx((100 + 200 + 600 + 1200) / (100 + 100 + 200 + 400))
    assert inputs.sampling.basis == "table × 2.62, measured/table over 4 recent scenes"
    # Labelling: the median of measured over the table's 30 s a scene (this table's flat figure).
    assert inputs.labelling.factor == pytest.approx((4.0 + 6.0) / 2 / 30.0)
    assert inputs.merging.factor == pytest.approx(2.0)

    plan = make_plan(s, catalog([20.0, 20.0]), settings(), None, "run", costing)
    assert plan.estimate["components"]["sampling"] == pytest.approx(400 * per_frame * 2.625 * 0.36 / 3600)
    assert plan.estimate["components"]["autolabel"] == pytest.approx(2 * 5.0 * 0.36 / 3600)
    assert plan.estimate["components"]["merge"] == pytest.approx(2.0 * (5.0 + 2 * 0.5) * 0.36 / 3600)


def test_median_rate_falls_back_to_the_constant_without_measurements():
    assert median_rate([], 0.02, "frame").seconds == 0.02
    assert median_rate([(0, 5.0), (10, 0.0)], 0.02, "frame").basis == "constant (0.02 s a frame)"


@pytest.mark.parametrize("estimate, budget, shown", [
    (0.0031, 0.0001, ("$0.0031", "$0.0001")),
    (0.0012345, 0.0012341, ("$0.0012345", "$0.0012341")),
    (0.000004, 0.000001, ("$0.000004", "$0.000001")),
    (12.345, 12.0, ("$12.35", "$12.00")),
    (12.341, 12.34, ("$12.341", "$12.340")),
])
def test_the_budget_message_shows_both_amounts_apart(estimate, budget, shown):
    message = budget_message(estimate, budget)
    assert message.startswith(f"estimated cost {shown[0]} exceeds the budget {shown[1]};")
    assert "e-0" not in message and "$0.00 " not in message


def test_amounts_are_never_in_exponent_notation():
    assert [format_usd(a) for a in (0, 9.72e-06, 0.000982, 0.5, 1234.5)] == [
        "$0", "$0.00000972", "$0.000982", "$0.5", "$1,234.50"]


def test_a_bad_price_table_names_the_field():
    with pytest.raises(CostTableError, match=r"cost.usd_per_gpu_hour: expected a number"):
        CostTable.from_mapping({"usd_per_gpu_hour": "lots"})
    with pytest.raises(CostTableError, match=r"cost.limits.daily_usd: must be above 0"):
        CostTable.from_mapping({"limits": {"daily_usd": 0}})
    with pytest.raises(CostTableError, match=r"unknown key\(s\) \['usd_per_cpu_hr'\]"):
        CostTable.from_mapping({"usd_per_cpu_hr": 1})
    assert CostTable.from_mapping(TABLE.to_mapping()) == TABLE


def instance_in(folder) -> dg.DagsterInstance:
    """A real Dagster instance (SQLite storage) in folder."""
    folder.mkdir(parents=True, exist_ok=True)
    return dg.DagsterInstance.local_temp(str(folder), overrides={"telemetry": {"enabled": False}})


def planned_store(tmp_path, durations: list[float]) -> tuple[LocalStore, dg.DagsterInstance]:
    store = LocalStore(tmp_path / "store")
    write_parquet(store, CATALOG_KEY, catalog(durations))
    instance = instance_in(tmp_path / "dagster_home")
    instance.add_dynamic_partitions(dataset_partitions.name, ["costly"])
    return store, instance


def materialize_plan(store, instance, tmp_path, spec_data: dict) -> dg.ExecuteInProcessResult:
    return dg.materialize(
        [dataset_plan], instance=instance, partition_key="costly", raise_on_error=False,
        run_config=dataset_run_config(spec_data),
        resources={"store": StoreResource(url=str(store.root)), "settings": settings(), "models": AutolabelModels(),
                   "registry": RegistryResource(url=f"sqlite:///{tmp_path}/registry.db")},
    )


def test_the_plan_shows_the_estimate_and_a_build_over_budget_stops_before_sampling(tmp_path):
    store, instance = planned_store(tmp_path, [20.0, 20.0])
    data = {"name": "costly", "channels": CHANNELS, "autolabel": True}
    with instance:
        result = materialize_plan(store, instance, tmp_path, data)
        assert result.success
        plan = read_record(store, plan_key("costly"), DatasetPlan)
        metadata = result.asset_materializations_for_node("dataset_plan")[0].metadata
        for name in ("sampling", "autolabel", "merge", "storage", "requests"):
            assert metadata[f"estimated_{name}_usd"].value == pytest.approx(plan.estimate["components"][name], rel=1e-3)
        assert metadata["estimated_cost_usd"].value == pytest.approx(plan.estimate["usd"], rel=1e-3)
        table = metadata["cost_estimate"].value
        assert "| sampling |" in table and "| autolabel |" in table and format_usd(plan.estimate["usd"]) in table

        budget = plan.estimate["usd"] * 0.99  # just under: both amounts must still be told apart
        store.delete_prefix("datasets")
        result = materialize_plan(store, instance, tmp_path, {**data, "budget_usd": budget})
        assert not result.success
        [failure] = [e for e in result.all_events if e.is_step_failure]
        message = failure.step_failure_data.error.cause.message if failure.step_failure_data.error.cause else \
            failure.step_failure_data.error.message
        amounts = re.findall(r"\$[0-9.,]+", message)
        assert len(amounts) == 2 and amounts[0] != amounts[1], message
        assert float(amounts[0][1:]) == pytest.approx(plan.estimate["usd"], rel=1e-2)
        assert not store.exists(plan_key("costly"))  # no plan: nothing downstream can start


def write_build(store: LocalStore, *, sampled: StageRecord, labels: StageRecord, index: DatasetIndex) -> None:
    s = spec()
    plan = DatasetPlan("costly", s.model_dump(), "h", sampling_profile(s).key(), [PartPlan(1, ["a/0000", "a/0001"])],
                       100, 40.0 / 3600, {})
    write_record(store, plan_key("costly"), plan)
    write_record(store, stage_record_key("costly", STAGE_SAMPLED), sampled)
    write_record(store, stage_record_key("costly", STAGE_AUTOLABELED), labels)
    write_record(store, index_key("costly"), index)


def test_the_actual_cost_takes_batch_job_seconds_where_there_are_some_and_worker_seconds_elsewhere(tmp_path):
    store = LocalStore(tmp_path)
    index = DatasetIndex("costly", "h", "/d", "k", [], 2, 80, 800, {}, "t", "run", "now", rewritten_parts=1,
                         merged_scenes=2, merge_worker_s=3.0, merge_job_s=0.0)
    sampled = StageRecord(STAGE_SAMPLED, "p", 0, 2, {}, 1, 9.0, 4.0, "run", frames=800, worker_s=8.0, job_s=50.0)
    labels = StageRecord(STAGE_AUTOLABELED, "m@p", 0, 2, {}, 1, 9.0, 4.0, "run", frames=10, worker_s=20.0, gpu=True)
    write_build(store, sampled=sampled, labels=labels, index=index)
    work = actual_work(store, "costly", TABLE)
    assert (work.sampling_s, work.label_s, work.merge_s) == (50.0, 20.0, 3.0)
    assert work.bases["sampling"] == "AWS Batch job durations" and work.bases["merge"] == "seconds the workers measured"
    assert work.label_gpu and work.label_images == 2 * round(20 * 2) * 2
    breakdown = price(work, TABLE)
    assert breakdown.component("sampling") == pytest.approx(50.0 * 0.36 / 3600)
    assert breakdown.component("autolabel") == pytest.approx(20.0 * 3.6 / 3600)
    assert breakdown.component("merge") == pytest.approx(3.0 * 0.36 / 3600)


@pytest.mark.batch
def test_batch_job_durations_are_what_the_meter_adds_up(aws, monkeypatch, tmp_path):
    FakeComputeEnvironment(monkeypatch)
    store = LocalStore(tmp_path)
    keys = empty_chunks(store, 3)
    backend = BatchComputeBackend(job_queue="cpu", gpu_job_queue="gpu", job_definition="worker", gpu_job_definition="gpu-worker",
                                  region_name="us-east-1", poll_interval_s=0.05, max_poll_interval_s=0.2, worker_command=BRIEF_CHILD)
    meter = ChunkMeter(backend, bills_jobs=True)
    result, _, returned = materialize_stage(lambda context: meter.run_chunks(
        context, store, keys, stage="sampled", tags={"jadd:dataset": "costly"}))
    assert result.success and len(returned["outcomes"]) == 3
    # What AWS Batch says: each child's stoppedAt - startedAt (ms).
    [parent] = aws.list_jobs(jobQueue="cpu", jobStatus="SUCCEEDED")["jobSummaryList"][:1]
    children = aws.describe_jobs(jobs=[f"{parent['jobId']}:{i}" for i in range(3)])["jobs"]
    by_aws = sum((job["stoppedAt"] - job["startedAt"]) / 1000 for job in children)
    assert meter.job_s == pytest.approx(by_aws, abs=1e-6) and meter.chunks == 3
    assert meter.job_s >= 3 * 0.3  # each child slept 0.3 s
    assert ChunkMeter(backend, bills_jobs=False).job_s == 0.0


def entry(name: str, scenes: int, *, estimate=None, actual=None, at=None, by="alice", run="run-00000000", cost=None):
    return DatasetEntry(name, "h", {"name": name}, "complete", "/d", [f"v1.0-{name}"], scenes, scenes * 40, scenes * 400, 0,
                        run, 10.0, at or datetime.now(timezone.utc), estimate, actual, cost, by)


def test_launched_by_names_the_user_or_the_automation():
    def run(tags):
        return dg.DagsterRun(job_name="j", run_id="r", tags=tags)

    assert launched_by(run({"user": "alice@example.com"})) == "alice@example.com"
    assert launched_by(run({"dagster/user": "bob"})) == "bob"
    assert launched_by(run({"dagster/schedule_name": "standard_datasets_schedule"})) == "schedule standard_datasets_schedule"
    assert launched_by(run({"dagster/sensor_name": "s"})) == "sensor s"
    assert launched_by(run({})) == "manual"


def report_resources(tmp_path, table: CostTable) -> dict:
    return {"registry": RegistryResource(url=f"sqlite:///{tmp_path}/registry.db"), "settings": settings(table)}


def two_builds(tmp_path, day: str) -> tuple[DatasetEntry, DatasetEntry]:
    start, _ = day_window(day)
    registry = Registry(f"sqlite:///{tmp_path}/registry.db")
    small = entry("small", 10, estimate=0.40, actual=0.50, at=start + timedelta(hours=2), by="alice", run="aaaaaaaa-1")
    big = entry("big", 200, estimate=12.0, actual=9.0, at=start + timedelta(hours=20), by="schedule nightly", run="bbbbbbbb-2")
    registry.record_dataset(small)
    registry.record_dataset(big)
    registry.record_dataset(entry("yesterday", 5, estimate=1.0, actual=1.0, at=start - timedelta(minutes=1)))
    registry.record_dataset(entry("tomorrow", 5, estimate=1.0, actual=1.0, at=start + timedelta(days=1)))
    return small, big


def test_the_daily_report_lists_the_days_builds_with_who_launched_them_and_their_costs(tmp_path):
    day = "2026-11-28"
    small, big = two_builds(tmp_path, day)
    with instance_in(tmp_path / "home") as instance:
        result = dg.materialize([daily_cost_report], instance=instance, partition_key=day,
                                resources=report_resources(tmp_path, TABLE))
        assert result.success
        materialization = instance.get_latest_materialization_event(daily_cost_report.key).asset_materialization
    metadata = materialization.metadata
    assert metadata["builds"].value == 2 and metadata["scenes"].value == 210
    assert metadata["actual_usd"].value == pytest.approx(small.actual_usd + big.actual_usd)
    assert metadata["estimate_usd"].value == pytest.approx(small.estimate_usd + big.estimate_usd)
    table = metadata["builds_table"].value
    rows = [line for line in table.splitlines() if line.startswith("| small") or line.startswith("| big")]
    assert [r.split(" | ")[0] for r in rows] == ["| small", "| big"]  # in the order they were built
    assert "| alice |" in rows[0] and "| schedule nightly |" in rows[1]
    assert f"| {format_usd(0.5 / 10)} |" in rows[0]  # cost per scene
    assert f"| {0.5 / 0.4:.2f} |" in rows[0] and f"| {9.0 / 12.0:.2f} |" in rows[1]  # actual / estimate
    assert "yesterday" not in table and "tomorrow" not in table
    spenders = metadata["biggest_spenders"].value.splitlines()[2:]
    assert spenders[0].startswith("| big | $9.00") and spenders[1].startswith("| small | $0.5 ")
    # The plot is served by the webserver from the instance's compute-log folder, shown without a click.
    plot = metadata["plot_file"].value
    assert metadata["plot"].value == f"![estimate and actual cost per build](/logs/jadd-cost-report/{day}/{result.run_id}/png)"
    assert plot.endswith(f"jadd-cost-report/{day}/{result.run_id}.png")
    png = open(plot, "rb").read()
    assert png.startswith(b"\x89PNG") and len(png) > 1000
    [check] = result.get_asset_check_evaluations()
    assert check.check_name == CHECK_SPEND and check.passed  # under the table's (absent) limits


def test_without_a_local_compute_log_folder_the_plot_is_embedded(tmp_path):
    day = "2026-11-28"
    two_builds(tmp_path, day)
    with dg.DagsterInstance.ephemeral() as instance:  # no compute logs kept
        result = dg.materialize([daily_cost_report], instance=instance, partition_key=day,
                                resources=report_resources(tmp_path, TABLE))
        metadata = result.asset_materializations_for_node("daily_cost_report")[0].metadata
    png = base64.b64decode(re.search(r"base64,([A-Za-z0-9+/=]+)\)", metadata["plot"].value).group(1))
    assert png.startswith(b"\x89PNG") and "plot_file" not in metadata


def test_spend_over_the_limits_fails_the_check_and_reaches_sentry(tmp_path, sentry_here):
    day = "2026-11-28"
    small, big = two_builds(tmp_path, day)
    table = CostTable.from_mapping({**TABLE.to_mapping(), "limits": {"daily_usd": 9.0, "dataset_usd": 5.0}})
    with instance_in(tmp_path / "home") as instance:
        result = dg.materialize([daily_cost_report], instance=instance, partition_key=day,
                                resources=report_resources(tmp_path, table))
        assert result.success  # the report itself is made; its check fails
        [check] = result.get_asset_check_evaluations()
        assert not check.passed and check.severity == dg.AssetCheckSeverity.ERROR
        breaches = check.metadata["breaches"].value
        assert "the day's spend $9.50 is over the daily limit $9.00" in breaches
        assert "dataset big (run bbbbbbbb, launched by schedule nightly) cost $9.00, over the per-dataset limit $5.00" in breaches
        assert "small" not in breaches
        # The check's failure is what the UI shows on the asset.
        record = instance.event_log_storage.get_latest_asset_check_execution_by_key(
            [dg.AssetCheckKey(daily_cost_report.key, CHECK_SPEND)])[dg.AssetCheckKey(daily_cost_report.key, CHECK_SPEND)]
        assert record.status.value == "FAILED"
    [event] = sentry_here.wait_for(lambda: [e for e in sentry_here.items("event") if (e.get("tags") or {}).get("alert") == "cost"])
    assert event["level"] == "error" and event["tags"]["day"] == day
    message = event.get("message") or event["logentry"]["message"]
    assert message.startswith("JADD spend over limit on 2026-11-28: the day's spend $9.50 is over the daily limit $9.00")
    assert event["extra"]["total_usd"] == pytest.approx(9.5)


def test_fallback_sampling_seconds_depend_on_the_rate_and_a_profile_may_give_them_per_rate_or_as_one_number():
    from jadd_dagster.cost import CostTable, CostTableError

    table = CostTable()
    # Decoding is shared by the frames taken from it: a frame at 2 Hz costs more than one at 30 Hz.
    assert table.seconds_per_frame(False, 2) > table.seconds_per_frame(False, 10) > table.seconds_per_frame(False, 30)
    assert table.seconds_per_frame(True, 10) > table.seconds_per_frame(False, 10)
    parsed = CostTable.from_mapping({"cpu_seconds_per_frame": {"2": 0.1, 30: 0.02}, "cpu_seconds_per_frame_undistorted": 0.05})
    assert parsed.seconds_per_frame(False, 2) == 0.1 and parsed.seconds_per_frame(False, 30) == 0.02
    assert parsed.seconds_per_frame(False, 10) == 0.1  # the nearest rate given (2 Hz: 8 away, 30 Hz: 20)
    assert parsed.seconds_per_frame(True, 5) == 0.05
    # What the Dagster resource carries (keys as text) parses back to the same table.
    assert CostTable.from_mapping({k: v for k, v in parsed.to_mapping().items()
                                   if k != "limits"}).seconds_per_frame(False, 30) == 0.02
    with pytest.raises(CostTableError, match=r"cost.cpu_seconds_per_frame: 'fast' is not a rate in Hz"):
        CostTable.from_mapping({"cpu_seconds_per_frame": {"fast": 0.1}})
    with pytest.raises(CostTableError, match=r"cost.cpu_seconds_per_frame.10: must be at least 0"):
        CostTable.from_mapping({"cpu_seconds_per_frame": {10: -1}})


# Frame size, the Split plan and the merge's part term.

REFERENCE = CostTable()  # the profile's defaults: figures measured at 1600x900


def store_with_logs(tmp_path, sizes: dict[str, tuple[int, int]]) -> LocalStore:
    """A store whose logs/<id>/calibration.json are a generated log's, with CAM_FRONT resized:
    the estimate reads the cameras' sizes from there."""
    from jadd_dagster.sim import make_logs

    [log] = make_logs(tmp_path / "made", n_logs=1, minutes=0.34, seed=3, channels=("CAM_FRONT",), image_size=(32, 18),
                      objects=False)
    calibration = json.loads((log / "calibration.json").read_text())
    store = LocalStore(tmp_path / "store")
    for log_id, (width, height) in sizes.items():
        store.write_json(f"logs/{log_id}/calibration.json",
                         {**calibration, "CAM_FRONT": {**calibration["CAM_FRONT"], "width": width, "height": height}})
    return store


def two_logs() -> pd.DataFrame:
    return pd.concat([catalog([20.0], "log-small"), catalog([20.0], "log-big")], ignore_index=True)


def test_the_estimate_scales_with_the_cameras_pixels_and_the_output_size(tmp_path):
    store = store_with_logs(tmp_path, {"log-small": (320, 180), "log-big": (1600, 900)})
    registry = RegistryResource(url=f"sqlite:///{tmp_path}/r.db")
    cost = settings(REFERENCE)
    native = spec(channels=["CAM_FRONT"], undistort=False, image_width=None, image_height=None, autolabel=False)
    costing = plan_costing(native, registry, AutolabelModels(), cost, StoreResource(url=str(store.root)))
    assert costing(["log-small/0000"]).camera_sizes == {"log-small": {"CAM_FRONT": (320, 180)}}
    work = make_plan(native, two_logs(), cost, None, "run", costing).estimate["work"]
    # By hand (cost.py's model), 200 frames a log at 10 Hz: at 1600x900 the measured 0.035 s; at
    # 320x180 (0.04 of its pixels) the 0.0021 s overhead plus 0.04 of the rest.
    small = 0.0021 + (0.035 - 0.0021) * 0.04
    assert work["sampling_s"] == pytest.approx(200 * 0.035 + 200 * small)
    assert work["bytes_per_frame"] == pytest.approx((1.44 + 0.0576) / 2 * 250_000)

    # Frames of 800x450 from both: encoding (0.0078 s at 1600x900) follows the output's pixels, decoding the camera's.
    half = spec(channels=["CAM_FRONT"], undistort=False, image_width=800, image_height=450, autolabel=False)
    costing = plan_costing(half, registry, AutolabelModels(), cost, StoreResource(url=str(store.root)))
    work = make_plan(half, two_logs(), cost, None, "run", costing).estimate["work"]
    big_half = 0.035 + 0.0078 * (0.25 - 1)
    small_up = small + 0.0078 * (0.25 - 0.04)
    assert work["sampling_s"] == pytest.approx(200 * big_half + 200 * small_up)

    # Without the logs' calibration (no store) every camera counts as native_megapixels: the table's figure.
    costing = plan_costing(native, registry, AutolabelModels(), cost)
    assert make_plan(native, two_logs(), cost, None, "run", costing).estimate["work"]["sampling_s"] == pytest.approx(
        400 * 0.035)


def test_seconds_measured_on_small_frames_are_applied_per_pixel_to_large_ones(tmp_path):
    store = store_with_logs(tmp_path, {"log-small": (320, 180), "log-big": (1600, 900), "log-old": (320, 180)})
    registry = RegistryResource(url=f"sqlite:///{tmp_path}/r.db")
    cost = settings(REFERENCE)
    native = spec(channels=["CAM_FRONT"], undistort=True, image_width=None, image_height=None, autolabel=False)
    small = REFERENCE.seconds_per_frame(True, 10, 0.0576)
    # This deployment sampled 320x180 frames 1.5 times slower than the table says.
    registry.registry().record_scene_outputs([
        SceneOutput(f"log-old/{i:04d}", STAGE_SAMPLED, sampling_profile(native).key(), f"p{i}", 196, 1.5 * 196 * small)
        for i in range(3)])
    costing = plan_costing(native, registry, AutolabelModels(), cost, StoreResource(url=str(store.root)))
    plan = make_plan(native, catalog([20.0], "log-big"), cost, None, "run", costing)
    # 1.5 times the table at 1600x900 (0.050 s a frame undistorted), not 1.5 times 320x180's seconds.
    assert plan.estimate["work"]["sampling_s"] == pytest.approx(200 * 0.050 * 1.5)
    assert plan.estimate["work"]["sampling_s"] > 200 * 1.5 * small * 5


def split_result() -> "StageResult":
    from jadd_dagster.compute.dispatch import StageResult

    return StageResult(chunks=2, plan=[{"chunk": "sampled-00000", "log": "a", "scenes": 2, "scene_s": 40.0},
                                       {"chunk": "sampled-00001", "log": "b", "scenes": 1, "scene_s": 20.0}])


@pytest.mark.parametrize("sweep_hz, undistort, per_frame", [(2, True, 0.092), (10, False, 0.035), (30, False, 0.023),
                                                            (30, True, 0.037)])
def test_the_split_plans_expected_cpu_seconds_follow_the_cost_tables_rate_and_undistortion(sweep_hz, undistort, per_frame):
    from jadd_dagster.defs.stages import plan_metadata
    from jadd_dagster.sampling import SamplingProfile

    profile = SamplingProfile(keyframe_hz=2, sweep_hz=sweep_hz, undistort=undistort, image_size=None, jpeg_quality=90,
                              channels=("CAM_FRONT", "CAM_BACK"))
    metadata = plan_metadata(split_result(), profile, settings(REFERENCE))
    assert metadata["expected_cpu_s"] == pytest.approx(60.0 * sweep_hz * 2 * per_frame, abs=0.05)
    assert metadata["expected_cpu_s_per_frame"] == per_frame
    # A dataset's plan knows its frame sizes and measured calibration: its estimate's seconds a frame.
    estimate = {"work": {"frames": 1000, "sampling_s": 4.0}}
    assert plan_metadata(split_result(), profile, settings(REFERENCE), estimate)["expected_cpu_s"] == pytest.approx(
        60.0 * sweep_hz * 2 * 0.004, abs=0.05)


def test_a_part_costs_a_fixed_merge_time_besides_its_scenes(tmp_path):
    from jadd_dagster.build import actual_work_rates
    from jadd_dagster.defs.cost_report import merge_samples
    from jadd_dagster.planning import estimate_plan

    s = spec(autolabel=False)
    scenes = catalog([20.0] * 4)
    ids = scenes["scene_id"].tolist()
    one = estimate_plan(s, scenes, [PartPlan(1, ids)], None, CostInputs(TABLE))["work"]
    two = estimate_plan(s, scenes, [PartPlan(1, ids[:2]), PartPlan(2, ids[2:])], None, CostInputs(TABLE))["work"]
    assert (one["merged_parts"], two["merged_parts"]) == (1, 2)
    assert one["merge_s"] == pytest.approx(5.0 + 4 * 0.5) and two["merge_s"] == pytest.approx(2 * 5.0 + 4 * 0.5)

    # A build records its merge's seconds, scenes and parts; the next estimate compares them with the table.
    store = LocalStore(tmp_path)
    index = DatasetIndex("costly", "h", "/d", "k", [], 2, 80, 800, {}, "t", "run", "now", rewritten_parts=1,
                         merged_scenes=2, merge_worker_s=12.0, merge_job_s=0.0)
    write_build(store, sampled=StageRecord(STAGE_SAMPLED, "p", 0, 2, {}, 1, 9.0, 4.0, "run", frames=800, worker_s=8.0),
                labels=StageRecord(STAGE_AUTOLABELED, "", 0, 0, {}, 0, 0.0, None, "run", enabled=False), index=index)
    measured = actual_work_rates(store, "costly")
    assert measured == {"merge_s_per_scene": 6.0, "merge_s": 12.0, "merged_scenes": 2, "merged_parts": 1}
    assert merge_samples([{"measured": measured}], TABLE) == [(12.0, 5.0 + 2 * 0.5)]


def test_the_profile_has_one_cost_table_and_an_older_profile_still_loads(tmp_path):
    from jadd_dagster.defs.resources import resources_for
    from jadd_dagster.profile import load_profile

    # A profile written before frame sizes and the per-part term: one number a frame (for undistorted
    # frames too), no new keys.
    old = tmp_path / "old.yaml"
    old.write_text("storage: {url: /tmp/s}\nregistry: {url: 'sqlite:///r.db'}\n"
                   "cost: {cpu_seconds_per_frame: 0.02, usd_per_cpu_hour: 0.05, merge_seconds_per_scene: 0.35}\n")
    profile = load_profile(str(old))
    assert not hasattr(profile, "cpu_seconds_per_frame") and not hasattr(profile, "usd_per_cpu_hour")
    assert profile.cost.seconds_per_frame(True, 2) == 0.02 and profile.cost.merge_seconds_per_part == 3.0
    settings = resources_for(profile)["settings"]
    assert not hasattr(settings, "cpu_seconds_per_frame") and CostTable.from_mapping(settings.cost) == profile.cost
    # A key the table does not know is refused with the file and the key.
    bad = tmp_path / "bad.yaml"
    bad.write_text("storage: {url: /tmp/s}\nregistry: {url: 'sqlite:///r.db'}\ncost: {cpu_seconds_per_frame_native: 0.02}\n")
    with pytest.raises(ValueError, match=r"bad.yaml: cost: unknown key\(s\) \['cpu_seconds_per_frame_native'\]"):
        load_profile(str(bad))


def test_the_plan_takes_the_cameras_sizes_from_the_catalog_and_reads_only_what_it_lacks(tmp_path):
    """At a million scenes the plan must not read a calibration.json per log (one GET each on S3):
    the catalog has each log's camera sizes; only a log from a catalog made before that is read."""
    store = store_with_logs(tmp_path, {"log-small": (320, 180), "log-big": (1600, 900)})
    reads = []
    original = LocalStore.get_bytes
    LocalStore.get_bytes = lambda self, key: reads.append(key) or original(self, key)
    try:
        registry = RegistryResource(url=f"sqlite:///{tmp_path}/r.db")
        cost = settings(REFERENCE)
        native = spec(channels=["CAM_FRONT"], undistort=False, image_width=None, image_height=None, autolabel=False)
        costing = plan_costing(native, registry, AutolabelModels(), cost, StoreResource(url=str(store.root)))
        scenes = two_logs()
        scenes["camera_sizes"] = ["CAM_FRONT=320x180", ""]  # log-big: from a catalog without sizes
        plan = make_plan(native, scenes, cost, None, "run", costing)
        assert reads == ["logs/log-big/calibration.json"]
        small = 0.0021 + (0.035 - 0.0021) * 0.04  # as in the test above: the same sizes, wherever they came from
        assert plan.estimate["work"]["sampling_s"] == pytest.approx(200 * 0.035 + 200 * small)
    finally:
        LocalStore.get_bytes = original


def test_the_catalog_carries_each_logs_camera_sizes(tmp_path):
    from jadd_dagster.scenes import cut_scenes, parse_camera_sizes, scene_statistics
    from jadd_dagster.logs import read_log
    from jadd_dagster.sim import make_logs

    [path] = make_logs(tmp_path, n_logs=1, minutes=0.34, seed=4, channels=("CAM_FRONT", "CAM_BACK"), image_size=(48, 32),
                       objects=False)
    log = read_log(path)
    windows, _ = cut_scenes(log.manifest, 20.0)
    rows = scene_statistics(log.manifest, windows, log.can(), log.pose(), log.calibration)
    assert set(rows["camera_sizes"]) == {"CAM_BACK=48x32,CAM_FRONT=48x32"}
    assert parse_camera_sizes(rows["camera_sizes"].iloc[0]) == {"CAM_BACK": (48, 32), "CAM_FRONT": (48, 32)}
    assert parse_camera_sizes("") == {} and parse_camera_sizes("CAM_FRONT=wide") == {}
