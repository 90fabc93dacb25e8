"""Drives uploaded as MCAP or rosbag2 under incoming/<drive>/ become logs in runs of their own.

The sensor only looks: an hour-long drive takes minutes to convert, far past a sensor tick's time
limit, so each pending drive is converted by a run of convert_drive_job, one at a time per drive.
The new log folder is then registered and ingested by drive_log_sensor like any uploaded log.
"""

import dagster as dg
import pydantic

from jadd_dagster.defs.resources import StoreResource
from jadd_dagster.ingest.incoming import INCOMING, INGEST_ERROR, TOPIC_MAP, convert_and_record, pending_drives

DRIVE_TAG = "jadd/incoming_drive"


class DriveConfig(dg.Config):
    drive: str = pydantic.Field(description=f"The folder under {INCOMING}/ holding the drive's MCAP files or rosbag2 "
                                f"bag(s) and its {TOPIC_MAP}; its name becomes the log id.")


@dg.op(description=f"Converts the MCAP files or rosbag2 bags of {INCOMING}/<drive>/ into the log logs/<drive>/; a "
       f"drive that cannot be converted gets {INCOMING}/<drive>/{INGEST_ERROR} with the reason and the run fails naming it.")
def convert_incoming_drive(context: dg.OpExecutionContext, config: DriveConfig, store: StoreResource) -> None:
    outcome = convert_and_record(store.store(), config.drive)
    if outcome.error is not None:
        raise dg.Failure(f"incoming drive {config.drive} cannot be converted: {outcome.error}")
    context.log.info(f"converted {INCOMING}/{config.drive} into logs/{config.drive}")


@dg.job(description="Converts one MCAP or rosbag2 drive uploaded under incoming/ into a log (launched by incoming_drive_sensor).")
def convert_drive_job():
    convert_incoming_drive()


def drives_in_flight(instance: dg.DagsterInstance) -> set[str]:
    """Drives with a conversion run queued or under way."""
    runs = instance.get_runs(dg.RunsFilter(
        job_name=convert_drive_job.name,
        statuses=[dg.DagsterRunStatus.QUEUED, dg.DagsterRunStatus.NOT_STARTED, dg.DagsterRunStatus.STARTING,
                  dg.DagsterRunStatus.STARTED],
    ))
    return {run.tags[DRIVE_TAG] for run in runs if DRIVE_TAG in run.tags}


@dg.sensor(
    job=convert_drive_job, minimum_interval_seconds=60, default_status=dg.DefaultSensorStatus.RUNNING,
    description=f"Every minute: launches a conversion run for each drive uploaded under {INCOMING}/<drive>/ that is "
    f"complete ({TOPIC_MAP} uploaded last), not converted yet and without {INGEST_ERROR}; drive_log_sensor then "
    "registers and ingests the new log.",
)
def incoming_drive_sensor(context: dg.SensorEvaluationContext, store: StoreResource) -> dg.SensorResult:
    busy = drives_in_flight(context.instance)
    return dg.SensorResult(run_requests=[
        dg.RunRequest(run_config={"ops": {convert_incoming_drive.name: {"config": {"drive": drive}}}},
                      tags={DRIVE_TAG: drive})
        for drive in pending_drives(store.store()) if drive not in busy
    ])
