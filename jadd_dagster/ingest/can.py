"""CAN columns from their sources: fields of decoded messages, or signals of raw CAN frames
decoded with a DBC file through cantools. One row per message of the speed_mps source, every
other column at its latest value (see topic_map.py)."""

from __future__ import annotations

from pathlib import Path

import cantools

from jadd_dagster.ingest.mcap_reader import IngestError
from jadd_dagster.ingest.messages import MessageError, field
from jadd_dagster.ingest.streams import CanTable
from jadd_dagster.ingest.topic_map import DEFAULT_CAN_VALUES, CanTopics, SignalSource

INTEGER_COLUMNS = ("gear", "turn_signal")


def load_dbc(path: Path, can: CanTopics):
    """The DBC database, checked to define every message and signal the topic map names."""
    try:
        database = cantools.database.load_file(str(path), database_format="dbc")
    except (OSError, cantools.database.UnsupportedDatabaseFormatError, ValueError) as error:
        raise IngestError(f"{path}: not a readable DBC file ({error})") from None
    for column, source in can.signals.items():
        if source.message is None:
            continue
        try:
            message = database.get_message_by_name(source.message)
        except KeyError:
            raise IngestError(f"{path}: no message {source.message!r} (topic map can.signals.{column})") from None
        if source.signal not in [s.name for s in message.signals]:
            raise IngestError(f"{path}: message {source.message} has no signal {source.signal!r} "
                              f"(topic map can.signals.{column})")
    return database


class CanSignals:
    """The CAN columns' latest values; writes a row to table at each speed_mps message."""

    def __init__(self, can: CanTopics, database, table: CanTable):
        self.table = table
        self.values = dict(DEFAULT_CAN_VALUES)
        self.defaults = {c: v for c, v in DEFAULT_CAN_VALUES.items() if c not in can.signals}
        self.waiting = set(can.signals)  # columns with no value yet: no row until each has one
        self.rows_waiting = 0
        self.frames_decoded = 0
        self._clock = can.signals["speed_mps"]
        self.by_topic: dict[str, list[tuple[str, SignalSource]]] = {}
        self._by_frame_id: dict[int, tuple[object, list[tuple[str, SignalSource]]]] = {}
        for column, source in can.signals.items():
            if source.topic is not None:
                self.by_topic.setdefault(source.topic, []).append((column, source))
            else:
                message = database.get_message_by_name(source.message)
                self._by_frame_id.setdefault(message.frame_id, (message, []))[1].append((column, source))

    def on_message(self, topic: str, msg, stamp_us: int) -> None:
        """A decoded message of a signal topic: its fields update their columns."""
        for column, source in self.by_topic[topic]:
            self._set(column, source, field(msg, source.field))
        if self._clock.topic == topic:
            self._row(stamp_us)

    def on_frame(self, frame_id: int, data: bytes, stamp_us: int) -> None:
        """A raw CAN frame: decoded when the DBC message is one the topic map reads."""
        entry = self._by_frame_id.get(frame_id)
        if entry is None:
            return
        message, sources = entry
        try:
            decoded = message.decode(data, decode_choices=False)
        except (cantools.database.DecodeError, ValueError, IndexError) as error:
            raise MessageError(f"CAN frame 0x{frame_id:x} ({message.name}) does not decode: {error}") from None
        self.frames_decoded += 1
        for column, source in sources:
            self._set(column, source, decoded[source.signal])
        if self._clock.message == message.name:
            self._row(stamp_us)

    def _set(self, column: str, source: SignalSource, raw) -> None:
        try:
            value = source.value(float(raw))
        except (TypeError, ValueError) as error:
            raise MessageError(f"{column}: {error}") from None
        self.values[column] = round(value) if column in INTEGER_COLUMNS else value
        self.waiting.discard(column)

    def _row(self, stamp_us: int) -> None:
        if self.waiting:
            self.rows_waiting += 1
            return
        self.table.add(stamp_us, self.values)
