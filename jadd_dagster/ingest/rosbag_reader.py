"""rosbag2 recordings (SQLite `.db3` storage, rosbag2's default) as one stream of messages in
log-time order, the same stream McapDrive gives, so convert.py reads both alike.

Reading goes through the `rosbags` library: its Reader opens a bag directory (metadata.yaml and
its .db3 files, message- or file-compressed with zstd) or a lone .db3 file, and each storage file
is read on its own, ordered by log time by SQLite's timestamp index (one row in memory at a time).
Messages are CDR and decoded only when asked, by a rosbags typestore built from the message
definitions the bag stores (rosbag2 on Iron and later) or, for bags without them (Humble), from
rosbags' own ROS 2 types of the bag's distribution. Several bags of one drive (or the split files
of one bag) are merged by log time like split MCAP files.
"""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePath
from typing import Any

import yaml
from rosbags.interfaces import MessageDefinitionFormat
from rosbags.rosbag2 import Reader
from rosbags.rosbag2.errors import ReaderError
from rosbags.typesys import Stores, get_types_from_idl, get_types_from_msg, get_typestore
from rosbags.typesys.store import Typestore

from jadd_dagster.ingest.bag_layout import METADATA, is_rosbag2  # noqa: F401  (is_rosbag2: also from here)
from jadd_dagster.ingest.mcap_reader import FileSummary, IngestError, McapMessage, RecordedDrive, message_error

if sys.version_info >= (3, 14):
    from compression import zstd
else:  # what rosbags itself uses before Python 3.14
    from backports import zstd

DEFAULT_DISTRO = "humble"  # the standard types used for a bag that names no known distribution
_IDL_SEPARATOR = "=" * 80 + "\n"


def standard_distro(distro: str | None) -> str:
    """The ROS 2 distribution whose standard types decode a bag recorded on distro: itself when
    rosbags knows it (e.g. 'humble', 'jazzy'), DEFAULT_DISTRO otherwise."""
    known = bool(distro) and hasattr(Stores, f"ROS2_{str(distro).upper()}")
    return str(distro).lower() if known else DEFAULT_DISTRO


@functools.cache
def standard_types(distro: str) -> Typestore:
    """rosbags' standard ROS 2 types of a distribution that standard_distro gave."""
    return get_typestore(getattr(Stores, f"ROS2_{distro.upper()}"))


@dataclass
class _Bag:
    """One opened bag: its storage files (names for messages, rosbags storage readers) and types."""

    path: Path
    files: list[tuple[str, Path, Any]]  # (name in messages, path on disk, rosbags storage reader)
    compressed_messages: bool
    distro: str  # standard_distro of the bag's ros_distro
    definitions: dict[str, Any]  # message type -> rosbags MessageDefinition stored in the bag
    types: Typestore = field(default_factory=lambda: get_typestore(Stores.EMPTY))


class Rosbag2Drive(RecordedDrive):
    """The rosbag2 bags (directories or .db3 files) of one drive, opened for reading (use as a
    context manager)."""

    format = "rosbag2"
    kind = "rosbag2 bags"

    def __init__(self, paths: Sequence[Path]):
        super().__init__(paths)
        self._bags: list[_Bag] = []
        self._decoders: dict[tuple[int, str], Callable[[bytes], Any]] = {}

    def _open(self, path: Path) -> None:
        bag = self._read_bag(path)
        self._bags.append(bag)
        self.summaries += [_summary(disk, storage) for _, disk, storage in bag.files]

    def _read_bag(self, path: Path) -> _Bag:
        if path.is_dir() and not (path / METADATA).is_file():
            raise IngestError(f"{path.name}: not a rosbag2 bag directory (no {METADATA})")
        try:
            reader = Reader(path)
            reader.open()
        except (OSError, ReaderError, ValueError, KeyError) as error:
            raise IngestError(f"{path.name}: not a readable rosbag2 bag ({type(error).__name__}: {error})") from None
        self._stack.callback(reader.close)
        definitions = {c.msgtype: c.msgdef for c in reader.connections
                       if c.msgdef.format != MessageDefinitionFormat.NONE}
        distro = standard_distro(reader.ros_distro)
        if path.is_dir():  # the storage files in metadata.yaml's order, which is rosbags' order
            names = [PurePath(p).name for p in yaml.safe_load((path / METADATA).read_text())[
                "rosbag2_bagfile_information"]["relative_file_paths"]]
            files = [(f"{path.name}/{n}", path / n, s) for n, s in zip(names, reader.storage.storages, strict=True)]
            compressed = (reader.compression_mode or "") == "message"
        else:
            files, compressed = [(path.name, path, reader.storage)], False
        return _Bag(path, files, compressed, distro, definitions)

    def _file_streams(self, topics: set[str]) -> list[Iterator[McapMessage]]:
        return [self._file_messages(number, name, storage, topics)
                for number, bag in enumerate(self._bags) for name, _, storage in bag.files]

    def _file_messages(self, number: int, name: str, storage, topics: set[str]) -> Iterator[McapMessage]:
        connections = [c for c in storage.connections if c.topic in topics]
        if not connections:
            return
        seen: dict[str, int] = {}
        try:
            for connection, log_time_ns, data in storage.messages(connections):
                index = seen.get(connection.topic, 0)
                seen[connection.topic] = index + 1
                decode = self._decoder(number, connection.msgtype, name, connection.topic, index)
                yield McapMessage(name, connection.topic, index, log_time_ns, data, connection.msgtype, decode)
        except IngestError:
            raise
        except Exception as error:  # SQLite (apsw) and rosbags raise many kinds on a damaged file
            raise IngestError(f"{name}: unreadable rosbag2 data after {sum(seen.values())} messages "
                              f"({type(error).__name__}: {error})") from None

    def _decoder(self, number: int, msgtype: str, name: str, topic: str, index: int) -> Callable[[bytes], Any]:
        key = (number, msgtype)
        if key not in self._decoders:
            bag = self._bags[number]
            types = self._types_for(bag, msgtype, name, topic, index)
            decompress = zstd.decompress if bag.compressed_messages else None

            def decode(data: bytes, types=types, msgtype=msgtype, decompress=decompress):
                return types.deserialize_cdr(decompress(data) if decompress else data, msgtype)

            self._decoders[key] = decode
        return self._decoders[key]

    def _types_for(self, bag: _Bag, msgtype: str, name: str, topic: str, index: int) -> Typestore:
        """The typestore that decodes msgtype: the bag's own definitions first, then the standard
        ROS 2 types of the bag's distribution."""
        if msgtype in bag.types.types:
            return bag.types
        definition = bag.definitions.get(msgtype)
        if definition is not None:
            try:
                bag.types.register(_parse_definition(definition, msgtype))
            except Exception as error:  # the definition parsers raise many kinds on bad text
                raise message_error(name, topic, index, f"unusable message definition of {msgtype} stored in the bag "
                                    f"({type(error).__name__}: {error})") from None
            return bag.types
        standard = standard_types(bag.distro)
        if msgtype in standard.types:
            return standard
        raise message_error(name, topic, index, (
            f"message type {msgtype} has no definition stored in the bag and is not a standard ROS 2 "
            f"{bag.distro} type (rosbag2 stores definitions from Iron on; or convert the bag to MCAP with them)"))


def _parse_definition(definition, msgtype: str) -> dict:
    """rosbags type trees of a stored definition (.msg text with its dependencies, or IDL)."""
    if definition.format == MessageDefinitionFormat.MSG:
        return get_types_from_msg(definition.data, msgtype)
    if definition.data.startswith(f"{_IDL_SEPARATOR}IDL: "):
        out: dict = {}
        for part in definition.data.split(_IDL_SEPARATOR)[1:]:
            out.update(get_types_from_idl(part.split("\n", 1)[1]))
        return out
    return get_types_from_idl(definition.data)


def _summary(path: Path, storage) -> FileSummary:
    """A storage file's time range (ns) and its topics' message counts, from its own index."""
    counts: dict[str, int] = {}
    schemas: dict[str, str] = {}
    for connection in storage.connections:
        counts[connection.topic] = counts.get(connection.topic, 0) + connection.msgcount
        schemas[connection.topic] = connection.msgtype
    meta = storage.metadata
    if not meta.message_count:
        return FileSummary(path, None, None, counts, schemas)
    return FileSummary(path, meta.start_time, meta.end_time - 1, counts, schemas)
