"""The MCAP files of one drive as one stream of messages in log-time order.

Reading goes through the `mcap` library's indexed reader (one chunk in memory at a time) and the
ecosystem's decoders: ROS 2 CDR (mcap-ros2-support) and protobuf (mcap-protobuf-support, e.g.
Foxglove's schemas). Messages are decoded only when asked, so topics we skip cost no decoding.
Several files are merged by log time (files split by time, or by topic, or overlapping).

RecordedDrive is what convert.py reads: McapDrive here, Rosbag2Drive (rosbag_reader.py) for
rosbag2's SQLite storage; both give McapMessage objects (file, topic, per-file topic index, log
time, lazily decoded message) and FileSummary objects.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mcap.exceptions import McapError
from mcap.reader import make_reader
from mcap_protobuf.decoder import DecoderFactory as ProtobufDecoders
from mcap_ros2.decoder import DecoderFactory as Ros2Decoders


class IngestError(Exception):
    """A drive that cannot become a log; the message names the file, the topic and the message
    index (0-based, among that topic's messages in that file) where it can."""


def message_error(file: str, topic: str, index: int, reason: str) -> IngestError:
    return IngestError(f"{file}: topic {topic}: message {index}: {reason}")


@dataclass
class McapMessage:
    """One message, not yet decoded. log_time_ns is the recorder's receive time (ns)."""

    file: str
    topic: str
    index: int
    log_time_ns: int
    data: bytes
    schema: str
    _decode: Callable[[bytes], Any] = field(repr=False)
    _value: Any = field(default=None, repr=False)

    def decoded(self) -> Any:
        """The decoded message (decoded once); IngestError naming file, topic and index if it
        does not decode."""
        if self._value is None:
            try:
                self._value = self._decode(self.data)
            except Exception as error:  # the decoders raise many kinds on bad bytes
                raise self.error(f"malformed {self.schema} ({type(error).__name__}: {error})") from None
        return self._value

    def error(self, reason: str) -> IngestError:
        return message_error(self.file, self.topic, self.index, reason)


@dataclass(frozen=True)
class FileSummary:
    """What an MCAP file's summary says: its time range (ns) and its topics' message counts."""

    path: Path
    start_ns: int | None
    end_ns: int | None
    topic_counts: dict[str, int] | None  # None when the file has no summary (not indexed)
    topic_schemas: dict[str, str]


class RecordedDrive:
    """The recorded files of one drive as one log-time-ordered stream of messages, opened for
    reading as a context manager; subclasses open one path in _open (entering what must be closed
    into _stack and filling summaries) and give each file's messages, in log-time order, from
    _file_streams. kind names the paths in errors ("MCAP files")."""

    format = ""
    kind = ""

    def __init__(self, paths: Sequence[Path]):
        if not paths:
            raise IngestError(f"no {self.kind} given")
        self.paths = [Path(p) for p in paths]
        self._stack = ExitStack()
        self.summaries: list[FileSummary] = []

    def __enter__(self) -> "RecordedDrive":
        try:
            for path in self.paths:
                self._open(path)
        except BaseException:
            self._stack.close()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self._stack.close()

    def _open(self, path: Path) -> None:
        raise NotImplementedError

    def _file_streams(self, topics: set[str]) -> list[Iterator[McapMessage]]:
        raise NotImplementedError

    def topics_missing(self, topics: Sequence[str]) -> list[str]:
        """The topics no file has a message on, as far as the files' summaries tell (files without
        a summary may still hold them)."""
        if any(s.topic_counts is None for s in self.summaries):
            return []
        return [t for t in topics if not any(s.topic_counts.get(t, 0) for s in self.summaries)]

    def messages(self, topics: Sequence[str]) -> Iterator[McapMessage]:
        """Every message on these topics in all files, in log-time order (ties: file order)."""
        return heapq.merge(*self._file_streams(set(topics)), key=lambda m: m.log_time_ns)

    def first_messages(self, topic: str, count: int) -> list[McapMessage]:
        """The first count messages of one topic in log-time order (reads only the first chunks)."""
        out = []
        for message in self.messages([topic]):
            out.append(message)
            if len(out) == count:
                break
        return out


class McapDrive(RecordedDrive):
    """The MCAP files of one drive, opened for reading (use as a context manager)."""

    format = "mcap"
    kind = "MCAP files"

    def __init__(self, paths: Sequence[Path]):
        super().__init__(paths)
        self._readers = []
        self._factories = [Ros2Decoders(), ProtobufDecoders()]
        self._decoders: dict[tuple[int, int], Callable[[bytes], Any]] = {}

    def _open(self, path: Path) -> None:
        try:
            stream = self._stack.enter_context(open(path, "rb"))
            reader = make_reader(stream)
            self.summaries.append(self._summary(path, reader))
        except (OSError, McapError, ValueError, EOFError) as error:
            raise IngestError(f"{path.name}: not a readable MCAP file ({type(error).__name__}: {error})") from None
        self._readers.append(reader)

    @staticmethod
    def _summary(path: Path, reader) -> FileSummary:
        summary = reader.get_summary()
        if summary is None:
            return FileSummary(path, None, None, None, {})
        schemas = {c.topic: (summary.schemas[c.schema_id].name if c.schema_id else "") for c in summary.channels.values()}
        stats = summary.statistics
        if stats is None:
            return FileSummary(path, None, None, None, schemas)
        counts: dict[str, int] = {}
        for channel_id, count in stats.channel_message_counts.items():
            topic = summary.channels[channel_id].topic
            counts[topic] = counts.get(topic, 0) + count
        start, end = (stats.message_start_time, stats.message_end_time) if stats.message_count else (None, None)
        return FileSummary(path, start, end, counts, schemas)

    def _file_streams(self, topics: set[str]) -> list[Iterator[McapMessage]]:
        return [self._file_messages(i, topics) for i in range(len(self._readers))]

    def _file_messages(self, number: int, topics: set[str]) -> Iterator[McapMessage]:
        reader, name = self._readers[number], self.paths[number].name
        seen: dict[str, int] = {}
        try:
            for schema, channel, message in reader.iter_messages(topics=topics, log_time_order=True):
                index = seen.get(channel.topic, 0)
                seen[channel.topic] = index + 1
                decode = self._decoder(number, schema, channel, name, index)
                yield McapMessage(name, channel.topic, index, message.log_time, message.data,
                                  schema.name if schema else "", decode)
        except (McapError, ValueError, EOFError) as error:
            raise IngestError(f"{name}: unreadable MCAP data after {sum(seen.values())} messages "
                              f"({type(error).__name__}: {error})") from None

    def _decoder(self, number: int, schema, channel, name: str, index: int) -> Callable[[bytes], Any]:
        key = (number, channel.id)
        if key not in self._decoders:
            decoder = None
            for factory in self._factories:
                try:
                    decoder = factory.decoder_for(channel.message_encoding, schema)
                except Exception as error:  # a schema the decoder cannot parse
                    raise message_error(name, channel.topic, index, f"unusable schema {schema.name!r} ({error})") from None
                if decoder is not None:
                    break
            if decoder is None:
                raise message_error(name, channel.topic, index, (
                    f"message encoding {channel.message_encoding!r} with schema "
                    f"{schema.name if schema else None!r} is not supported (ROS 2 CDR or protobuf)"))
            self._decoders[key] = decoder
        return self._decoders[key]
