"""Decoding the frames a scene wants: one forward pass per video (sampling/encode.py makes the JPEGs).

A scene never seeks per frame: decode_frames seeks once to the keyframe at or before the first
wanted frame and goes forward, stopping after the last wanted one. It decodes only what the wanted
frames need. Packets are read one group of pictures (GOP: keyframe to keyframe) ahead; in an H.264
GOP that an IDR frame closes (nothing after an IDR refers to a frame before it), the packets after
the last wanted frame's packet in decode order are never decoded, and a GOP without a wanted frame
is skipped whole. Unwanted non-reference frames inside what is decoded are dropped by libavcodec
(skip_frame). In an intra-only video (a camera's JPEG or PNG images as recorded: every packet is a
picture of its own) only the wanted packets are decoded. Wanted frames come out bit-identical to a
full decode. read_packets gives an intra-only video's wanted packets as they are, decoding nothing
(a JPEG copied into a dataset). Frames are identified by their presentation time on the video's
constant-rate grid (index = pts * time_base * rate), which is the row of the frame in the log's
timestamps file.
"""

from __future__ import annotations

import functools
import itertools
import os
import time
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Iterator, Sequence

import av

from jadd_dagster.sampling.frames import SamplingError

_H264_SLICE, _H264_IDR = 1, 5  # NAL unit types of a coded slice: non-IDR and IDR picture
# Codecs of a camera's images stored as recorded (ingest/video.py): each packet is one picture.
# FFmpeg flags mjpeg intra-only but not png (its decoder also reads APNG, whose frames do refer back).
IMAGE_CODECS = ("mjpeg", "png")
_DHT = 0xC4  # JPEG marker: define Huffman tables
THREADS_ENV = "JADD_SAMPLING_THREADS"


class DecodeError(SamplingError):
    """A video does not hold the frames its timestamps file promises."""


@dataclass
class DecodeStats:
    """What a decode pass cost: frames out of the decoder, packets never given to it (GOP tails
    and whole GOPs no wanted frame needs), seeks, and seconds spent demuxing and decoding: wall
    time, and the CPU time of the calling thread (all of it with one decoder thread; a
    frame-threaded decoder works in threads of its own)."""

    decoded: int = 0
    not_decoded: int = 0
    seeks: int = 0
    seconds: float = 0.0
    cpu_seconds: float = 0.0


def available_cpus() -> int:
    """CPUs this process may use: its affinity mask, capped by the cgroup's CPU quota (a container
    limited to 2 vCPUs on a larger host still sees every host CPU in its affinity mask)."""
    try:
        count = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        count = os.cpu_count() or 1
    quota = _cgroup_cpu_quota()
    if quota is not None:
        count = min(count, int(quota))  # a fraction of a CPU does not make another thread worth it
    return max(1, count)


def _cgroup_cpu_quota() -> float | None:
    """CPUs allowed by the cgroup's CFS quota (v2 cpu.max, else v1), None when unlimited."""
    try:
        quota, period = Path("/sys/fs/cgroup/cpu.max").read_text().split()[:2]
        return None if quota == "max" else int(quota) / int(period)
    except (OSError, ValueError):
        pass
    try:
        quota = int(Path("/sys/fs/cgroup/cpu/cpu.cfs_quota_us").read_text())
        period = int(Path("/sys/fs/cgroup/cpu/cpu.cfs_period_us").read_text())
        return quota / period if quota > 0 and period > 0 else None
    except (OSError, ValueError):
        return None


def sampling_threads() -> int:
    """Threads one sampling worker uses: $JADD_SAMPLING_THREADS if set, else available_cpus()."""
    value = os.environ.get(THREADS_ENV, "").strip()
    if not value:
        return available_cpus()
    try:
        threads = int(value)
    except ValueError:
        threads = 0
    if threads < 1:
        raise ValueError(f"{THREADS_ENV}={value!r}: must be a positive whole number of threads")
    return threads


def video_codec(video: Path) -> str:
    """The codec of a camera video's stream: 'h264', or 'mjpeg' / 'png' for images stored as
    recorded (read from the container header once per file and version of it: opening a minute of
    1600x900 video takes ~20 ms, asked again for every scene of the camera)."""
    status = os.stat(video)
    return _codec_of(str(video), status.st_mtime_ns, status.st_size)


@functools.lru_cache(maxsize=256)
def _codec_of(video: str, mtime_ns: int, size: int) -> str:
    with av.open(video) as container:
        return container.streams.video[0].codec_context.name


def jpeg_has_huffman_tables(data: bytes) -> bool:
    """Whether a JPEG carries its Huffman tables (a DHT segment before its first scan). Motion-JPEG
    from some USB cameras leaves them out, relying on the standard tables: FFmpeg and libjpeg-turbo
    fill them in, but the JPEG standard requires them in the file, so such a frame (and an
    arithmetic-coded one, which has none) is decoded and encoded rather than copied."""
    pos = 2
    while pos + 4 <= len(data) and data[pos] == 0xFF:
        marker = data[pos + 1]
        if marker == _DHT:
            return True
        if marker == 0xDA:  # start of scan: no tables before it
            return False
        if marker == 0xFF or marker == 0x01 or 0xD0 <= marker <= 0xD7:
            pos += 1 if marker == 0xFF else 2
            continue
        pos += 2 + int.from_bytes(data[pos + 2 : pos + 4], "big")
    return False


def decode_frames(
    video: Path,
    wanted: Sequence[int],
    frame_count: int,
    rate_hz: int = 30,
    stats: DecodeStats | None = None,
    skip_unwanted: bool = True,
    threads: int | None = None,
) -> Iterator[tuple[int, av.VideoFrame]]:
    """Yield (frame index, frame) for each wanted frame index, in order, from one forward pass.

    frame_count is the number of rows of the video's timestamps file; the video must have as many
    frames. rate_hz is the camera's rate (the grid of its pts). skip_unwanted lets the pass leave
    out what no wanted frame needs (GOP tails and GOPs closed by an IDR frame, unwanted
    non-reference frames, every unwanted packet of an intra-only video): the wanted frames decode
    bit-identically; without it every frame up to the last wanted one is decoded. threads is the
    decoder's thread count (frame threading; None: sampling_threads()). Raises DecodeError when a
    wanted frame is not in the video.
    """
    wanted = _checked(video, wanted, frame_count)
    if not wanted:
        return
    stats = stats if stats is not None else DecodeStats()
    threads = sampling_threads() if threads is None else max(1, int(threads))
    yield from _timed(_decoded_wanted(video, wanted, frame_count, rate_hz, stats, skip_unwanted, threads), stats)


def _decoded_wanted(
    video: Path, wanted: list[int], frame_count: int, rate_hz: int, stats: DecodeStats, skip_unwanted: bool,
    threads: int,
) -> Iterator[tuple[int, av.VideoFrame]]:
    """decode_frames' pass, untimed (wanted: _checked, not empty)."""
    with av.open(str(video)) as container:
        stream = container.streams.video[0]
        stream.thread_count = threads
        stream.thread_type = "FRAME" if threads > 1 else "NONE"
        index_of, origin = _grid(video, stream, frame_count, rate_hz)
        codec = stream.codec_context
        plan = _PacketPlan(index_of, set(wanted) if skip_unwanted else None, _idr_test(codec), stats, _intra_only(codec))
        frames = _forward(container, stream, wanted[0], rate_hz, origin, index_of, stats,
                          lambda demuxed: _decoded(plan.packets(demuxed), codec))
        pending = iter(wanted)
        need = next(pending)
        for frame in frames:
            stats.decoded += 1
            index = index_of(frame.pts)
            if index is None:
                raise DecodeError(f"{video}: decoded a frame without a timestamp")
            if index < need:
                continue
            if index > need:
                raise DecodeError(f"{video}: frame {need} is missing (decoder jumped to {index})")
            if frame.is_corrupt:
                raise DecodeError(f"{video}: frame {index} decoded corrupt")
            yield index, frame
            need = next(pending, None)
            if need is None:
                return
    raise DecodeError(f"{video}: frame {need} of {frame_count} is past the end of the video")


def read_packets(
    video: Path, wanted: Sequence[int], frame_count: int, rate_hz: int = 30, stats: DecodeStats | None = None
) -> Iterator[tuple[int, bytes]]:
    """Yield (frame index, packet bytes) for each wanted frame of an intra-only video (IMAGE_CODECS:
    a camera's JPEG or PNG images as recorded), in order, from one forward pass; nothing is
    decoded, and the packets of unwanted frames are read past (stats.not_decoded). The bytes are
    the recorded image file. Arguments and errors as for decode_frames."""
    wanted = _checked(video, wanted, frame_count)
    if not wanted:
        return
    stats = stats if stats is not None else DecodeStats()
    yield from _timed(_read_wanted(video, wanted, frame_count, rate_hz, stats), stats)


def _read_wanted(
    video: Path, wanted: list[int], frame_count: int, rate_hz: int, stats: DecodeStats
) -> Iterator[tuple[int, bytes]]:
    """read_packets' pass, untimed (wanted: _checked, not empty)."""
    with av.open(str(video)) as container:
        stream = container.streams.video[0]
        if not _intra_only(stream.codec_context):
            raise DecodeError(f"{video}: {stream.codec_context.name} packets are not pictures of their own")
        index_of, origin = _grid(video, stream, frame_count, rate_hz)
        plan = _PacketPlan(index_of, set(wanted), None, stats, intra_only=True)
        packets = _forward(container, stream, wanted[0], rate_hz, origin, index_of, stats,
                           lambda demuxed: (packet for packet, _ in plan.packets(demuxed)))
        pending = iter(wanted)
        need = next(pending)
        for packet in packets:
            index = index_of(packet.pts)
            if index != need:
                raise DecodeError(f"{video}: frame {need} is missing (next packet: frame {index})")
            yield index, bytes(packet)
            need = next(pending, None)
            if need is None:
                return
    raise DecodeError(f"{video}: frame {need} of {frame_count} is past the end of the video")


def _timed(items: Iterator, stats: DecodeStats) -> Iterator:
    """items, with the time spent making each (not the caller's between them) added to stats:
    wall seconds, and the CPU seconds of this thread."""
    clock, cpu = time.perf_counter(), time.thread_time()
    for item in items:
        stats.seconds += time.perf_counter() - clock
        stats.cpu_seconds += time.thread_time() - cpu
        yield item
        clock, cpu = time.perf_counter(), time.thread_time()
    stats.seconds += time.perf_counter() - clock
    stats.cpu_seconds += time.thread_time() - cpu


def _checked(video: Path, wanted: Sequence[int], frame_count: int) -> list[int]:
    """The wanted frame indices sorted and unique; DecodeError if one is outside the video."""
    wanted = sorted(set(int(i) for i in wanted))
    if wanted and (wanted[0] < 0 or wanted[-1] >= frame_count):
        bad = wanted[0] if wanted[0] < 0 else wanted[-1]
        raise DecodeError(f"{video}: frame {bad} is outside 0..{frame_count - 1}")
    return wanted


def _grid(video: Path, stream, frame_count: int, rate_hz: int):
    """(index_of, origin): index_of(pts) is a pts's frame index on the stream's rate_hz grid
    (DecodeError off the grid), origin the stream's first pts. Also checks that the stream has
    frame_count frames when its header says how many it has."""
    if stream.frames and stream.frames != frame_count:
        raise DecodeError(f"{video}: {stream.frames} frames in the video but {frame_count} timestamps")
    time_base = stream.time_base
    origin = stream.start_time or 0
    rate = Fraction(rate_hz).limit_denominator(1_000_000)
    scale, unit = time_base.numerator * rate.numerator, time_base.denominator * rate.denominator

    def index_of(pts: int | None) -> int | None:
        if pts is None:
            return None
        exact = (pts - origin) * scale  # frames * unit: integers only, this runs for every packet
        index = (2 * exact + unit) // (2 * unit)
        if 4 * abs(exact - index * unit) > unit:
            raise DecodeError(f"{video}: pts {pts} is not on a {rate_hz} Hz frame grid")
        return index

    return index_of, origin


def _forward(container, stream, first: int, rate_hz: int, origin: int, index_of, stats: DecodeStats, items):
    """items(container.demux(stream)) after one seek to the keyframe at or before frame first:
    an iterator of frames or packets (anything with .pts) from there on. A demuxer can land just
    after that keyframe (chosen by decode time); then it seeks again, further back."""
    time_base = stream.time_base
    back_off = 0
    while True:
        target_index = first - back_off
        if target_index > 0:
            container.seek(origin + int(Fraction(target_index, rate_hz) / time_base), stream=stream, backward=True)
            stats.seeks += 1
        elif back_off:
            container.seek(origin, stream=stream, backward=True)
            stats.seeks += 1
        found = items(container.demux(stream))
        head = next(found, None)
        landed_after = head is None or (head.pts is not None and index_of(head.pts) > first)
        if target_index > 0 and landed_after:
            back_off = max(2 * back_off, rate_hz)
            continue
        return itertools.chain([head] if head is not None else [], found)


def _intra_only(codec) -> bool:
    """Whether every packet of the stream is a picture of its own (no packet refers to another)."""
    return codec.name in IMAGE_CODECS or bool(getattr(codec.codec, "intra_only", False))


def _decoded(packets: Iterator[tuple[av.Packet, bool]], codec) -> Iterator[av.VideoFrame]:
    """Frames out of the decoder, in presentation order, from (packet, may skip if non-reference)."""
    for packet, skippable in packets:
        # Applies to this packet only: a skippable packet is not decoded if it is a non-reference frame.
        codec.skip_frame = "NONREF" if skippable else "DEFAULT"
        yield from codec.decode(packet)
    yield from codec.decode(None)  # drain the frames the decoder still holds


class _PacketPlan:
    """Which packets a pass gives the decoder, one GOP at a time (see the module docstring).

    wanted None: every packet, none skippable. idr tells whether a keyframe packet is an IDR
    picture (None for codecs other than H.264: then no GOP tail is ever left out). intra_only: each
    packet is a picture of its own, so only the wanted ones are given (the others are counted in
    stats.not_decoded).
    """

    def __init__(self, index_of, wanted: set[int] | None, idr, stats: DecodeStats, intra_only: bool = False):
        self.index_of, self.wanted, self.idr, self.stats = index_of, wanted, idr, stats
        self.intra_only = intra_only

    def packets(self, demuxed: Iterator[av.Packet]) -> Iterator[tuple[av.Packet, bool]]:
        wanted = self.wanted
        if wanted is None:
            for packet in demuxed:
                if packet.size:
                    yield packet, False
            return
        remaining = set(wanted)
        if self.intra_only:
            for packet in demuxed:
                if not packet.size:
                    break
                index = self.index_of(packet.pts)
                if index not in wanted:
                    self.stats.not_decoded += 1
                    continue
                yield packet, False
                remaining.discard(index)
                if not remaining:
                    break
            return
        gop: list[av.Packet] = []
        for packet in demuxed:
            if not packet.size:  # the demuxer's final empty packet: end of the stream
                break
            if packet.is_keyframe and gop:
                yield from self._gop(gop, closed=self.idr is not None and self.idr(packet))
                gop = []
            gop.append(packet)
            remaining.discard(self.index_of(packet.pts))
            if not remaining:
                break  # every wanted frame's packet is in: nothing after it is decoded
        yield from self._gop(gop, closed=True)

    def _gop(self, gop: list[av.Packet], closed: bool) -> Iterator[tuple[av.Packet, bool]]:
        """The packets of one GOP (decode order) to decode; closed: nothing after the GOP refers
        into it, so what follows its last wanted frame's packet is left out."""
        indices = [self.index_of(p.pts) for p in gop]
        keep = len(gop)
        if closed and None not in indices:
            keep = max((pos + 1 for pos, i in enumerate(indices) if i in self.wanted), default=0)
        self.stats.not_decoded += len(gop) - keep
        for packet, index in zip(gop[:keep], indices[:keep]):
            yield packet, index is not None and index not in self.wanted


def _idr_test(codec):
    """A function telling whether an H.264 packet holds an IDR picture, None for other codecs.

    MP4 stores H.264 as length-prefixed NAL units (avcC extradata, first byte 1, the length size in
    its fifth byte); raw streams use Annex B start codes.
    """
    if codec.name != "h264":
        return None
    extradata = codec.extradata or b""
    length_size = (extradata[4] & 3) + 1 if len(extradata) > 4 and extradata[0] == 1 else 0

    def is_idr(packet: av.Packet) -> bool:
        data = bytes(packet)
        for nal_type in _nal_types(data, length_size):
            if nal_type in (_H264_SLICE, _H264_IDR):
                return nal_type == _H264_IDR
        return False

    return is_idr


def _nal_types(data: bytes, length_size: int) -> Iterator[int]:
    """The NAL unit types of an H.264 access unit, in order."""
    if length_size:
        pos = 0
        while pos + length_size < len(data):
            size = int.from_bytes(data[pos : pos + length_size], "big")
            yield data[pos + length_size] & 0x1F
            pos += length_size + size
        return
    pos = data.find(b"\x00\x00\x01")
    while 0 <= pos < len(data) - 3:
        yield data[pos + 3] & 0x1F
        pos = data.find(b"\x00\x00\x01", pos + 3)
