"""The Dagster code location: assets, checks, sensors, schedules and the profile's resources."""

import dagster as dg

from jadd_dagster.defs import autolabel_assets, automation, cost_report, dataset_assets, incoming, log_assets
from jadd_dagster.defs.resources import resources_for
from jadd_dagster.observability import init_code_location
from jadd_dagster.profile import load_profile

defs = dg.Definitions(
    assets=dg.load_assets_from_modules([log_assets, autolabel_assets, dataset_assets, cost_report]),
    sensors=[automation.drive_log_sensor, automation.partition_keys_sensor, automation.automation_condition_sensor,
             automation.sentry_run_failure_sensor, incoming.incoming_drive_sensor],
    jobs=[incoming.convert_drive_job],
    schedules=[automation.standard_datasets_schedule, cost_report.daily_cost_report_schedule],
    resources=resources_for(load_profile()),
)
init_code_location(defs)  # Sentry, when SENTRY_DSN is set; no network I/O here
