"""Real drive logs in: MCAP files (ROS 2 CDR or Foxglove protobuf) and rosbag2 bags (SQLite .db3)
converted into our log format.

`jadd ingest [--format mcap|rosbag2] FILE_OR_BAG... --out STORE/logs --topic-map MAP.yaml [--dbc
FILE.dbc]` and the drive-log sensor (`incoming/<drive>/`) both call convert.ingest_drive. This
package never imports the synthetic world (the generator and its renderer).
"""

from jadd_dagster.ingest.convert import (
    INGEST_REPORT,
    IngestResult,
    default_log_id,
    detect_format,
    ingest_drive,
    ingest_mcap,
)
from jadd_dagster.ingest.mcap_reader import IngestError
from jadd_dagster.ingest.topic_map import TopicMap, TopicMapError, load_topic_map, parse_topic_map

__all__ = [
    "INGEST_REPORT",
    "IngestError",
    "IngestResult",
    "TopicMap",
    "TopicMapError",
    "default_log_id",
    "detect_format",
    "ingest_drive",
    "ingest_mcap",
    "load_topic_map",
    "parse_topic_map",
]
