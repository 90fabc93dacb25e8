"""Decoding the frames a scene wants: one forward pass per video (sampling/encode.py makes the JPEGs).

A scene never seeks per frame: decode_frames seeks once to the keyframe at or before the first
wanted frame and goes forward, stopping after the last wanted one. It decodes only what the wanted
frames need. Packets are read one group of pictures (GOP: keyframe to keyframe) ahead; in an H.264
GOP that an IDR frame closes (nothing after an IDR refers to a frame before it), the packets after
the last wanted frame's packet in decode order are never decoded, and a GOP without a wanted frame
is skipped whole. Unwanted non-reference frames inside what is decoded are dropped by libavcodec
(skip_frame). Wanted frames come out bit-identical to a full decode. Frames are identified by their
presentation time on the video's constant-rate grid (index = pts * time_base * rate), which is the
row of the frame in the log's timestamps file.
"""

from __future__ import annotations

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
    frames. skip_unwanted lets the pass leave out what no wanted frame needs (GOP tails and GOPs
    closed by an IDR frame, unwanted non-reference frames): the wanted frames decode
    bit-identically; without it every frame up to the last wanted one is decoded. threads is the
    decoder's thread count (frame threading; None: sampling_threads()). Raises DecodeError when a
    wanted frame is not in the video.
    """
    wanted = sorted(set(int(i) for i in wanted))
    if not wanted:
        return
    if wanted[0] < 0 or wanted[-1] >= frame_count:
        bad = wanted[0] if wanted[0] < 0 else wanted[-1]
        raise DecodeError(f"{video}: frame {bad} is outside 0..{frame_count - 1}")
    stats = stats if stats is not None else DecodeStats()
    threads = sampling_threads() if threads is None else max(1, int(threads))
    clock, cpu = time.perf_counter(), time.thread_time()
    with av.open(str(video)) as container:
        stream = container.streams.video[0]
        stream.thread_count = threads
        stream.thread_type = "FRAME" if threads > 1 else "NONE"
        if stream.frames and stream.frames != frame_count:
            raise DecodeError(f"{video}: {stream.frames} frames in the video but {frame_count} timestamps")
        time_base = stream.time_base
        origin = stream.start_time or 0
        codec = stream.codec_context

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

        plan = _PacketPlan(index_of, set(wanted) if skip_unwanted else None, _idr_test(codec), stats)
        # Seek once, to the keyframe at or before the first wanted frame. A demuxer can land just
        # after it (keyframe chosen by decode time); then seek again, further back.
        first = wanted[0]
        back_off = 0
        while True:
            target_index = first - back_off
            if target_index > 0:
                container.seek(origin + int(Fraction(target_index, rate_hz) / time_base), stream=stream, backward=True)
                stats.seeks += 1
            elif back_off:
                container.seek(origin, stream=stream, backward=True)
                stats.seeks += 1
            frames = _decoded(plan.packets(container.demux(stream)), codec)
            head = next(frames, None)
            landed_after = head is None or (head.pts is not None and index_of(head.pts) > first)
            if target_index > 0 and landed_after:
                back_off = max(2 * back_off, rate_hz)
                continue
            break

        pending = iter(wanted)
        need = next(pending)
        for frame in itertools.chain([head] if head is not None else [], frames):
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
            stats.seconds += time.perf_counter() - clock
            stats.cpu_seconds += time.thread_time() - cpu
            yield index, frame
            clock, cpu = time.perf_counter(), time.thread_time()
            need = next(pending, None)
            if need is None:
                return
        stats.seconds += time.perf_counter() - clock
        stats.cpu_seconds += time.thread_time() - cpu
    raise DecodeError(f"{video}: frame {need} of {frame_count} is past the end of the video")


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
    picture (None for codecs other than H.264: then no GOP tail is ever left out).
    """

    def __init__(self, index_of, wanted: set[int] | None, idr, stats: DecodeStats):
        self.index_of, self.wanted, self.idr, self.stats = index_of, wanted, idr, stats

    def packets(self, demuxed: Iterator[av.Packet]) -> Iterator[tuple[av.Packet, bool]]:
        wanted = self.wanted
        if wanted is None:
            for packet in demuxed:
                if packet.size:
                    yield packet, False
            return
        remaining = set(wanted)
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
