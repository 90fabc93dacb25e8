"""Real drive logs in: MCAP files (ROS 2 CDR or Foxglove protobuf) converted into our log format.

`jadd ingest --format mcap FILE... --out STORE/logs --topic-map MAP.yaml [--dbc FILE.dbc]` and the
drive-log sensor (`incoming/<drive>/`) both call convert.ingest_mcap. This package never imports
the synthetic world (the generator and its renderer).
"""

from jadd_dagster.ingest.convert import INGEST_REPORT, IngestResult, default_log_id, ingest_mcap
from jadd_dagster.ingest.mcap_reader import IngestError
from jadd_dagster.ingest.topic_map import TopicMap, TopicMapError, load_topic_map, parse_topic_map

__all__ = [
    "INGEST_REPORT",
    "IngestError",
    "IngestResult",
    "TopicMap",
    "TopicMapError",
    "default_log_id",
    "ingest_mcap",
    "load_topic_map",
    "parse_topic_map",
]
