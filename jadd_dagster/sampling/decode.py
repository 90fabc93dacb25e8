"""Decoded camera frames to JPEG: one forward pass per video, and the frame encoder.

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
import cv2
import numpy as np
import simplejpeg

from jadd_dagster.camera import CameraCalibration, undistortion_maps
from jadd_dagster.sampling.frames import SamplingError

# Planar YUV formats whose planes JPEG can take as they are (the subsampling follows the planes).
_PLANAR_YUV = {"yuv420p", "yuvj420p", "yuv422p", "yuvj422p", "yuv444p", "yuvj444p"}
_YUV420 = {"yuv420p", "yuvj420p"}
# AVColorSpace values JPEG's BT.601 matrix is right for: unspecified, BT470BG, SMPTE170M.
_BT601 = {2, 5, 6}
_FULL_RANGE = 2  # AVCOL_RANGE_JPEG
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


class FrameEncoder:
    """Turns decoded frames of one camera into JPEG bytes at a profile's size and lens model.

    4:2:0 BT.601 video (the usual H.264 output) never goes through RGB: the JPEG is encoded from
    the decoder's Y, Cb and Cr planes, each remapped on its own grid when undistorting or resizing.
    Other pixel formats and colour matrices are converted to RGB first. Remap tables are computed
    once; out_calib is the calibration of the written images.
    """

    def __init__(self, calib: CameraCalibration, image_size: tuple[int, int] | None, undistort: bool, quality: int):
        self.calib = calib
        self.quality = quality
        out_size = (int(image_size[0]), int(image_size[1])) if image_size else (calib.width, calib.height)
        undistort = undistort and calib.is_distorted  # an undistorted lens needs no remap
        self.luma: _Warp | None = None
        self.chroma: _Warp | None = None
        if out_size == (calib.width, calib.height) and not undistort:
            self.out_calib = calib
            return
        map_x, map_y, self.out_calib = undistortion_maps(calib, out_size, undistort)
        self.luma = _Warp(map_x, map_y, (calib.width, calib.height))
        # A 4:2:0 chroma sample sits at the centre of a 2x2 block of luma samples: luma coordinate
        # u = 2 * c + 0.5. The block's mean source position maps it into the source chroma grid.
        even = (2 * -(-out_size[0] // 2), 2 * -(-out_size[1] // 2))
        chroma_size = (even[0] // 2, even[1] // 2)
        chroma_maps = [
            (cv2.resize(_pad_to(m, even), chroma_size, interpolation=cv2.INTER_AREA) - 0.5) / 2 for m in (map_x, map_y)
        ]
        self.chroma = _Warp(*chroma_maps, (-(-calib.width // 2), -(-calib.height // 2)))

    def encode(self, frame: av.VideoFrame) -> bytes:
        if (frame.width, frame.height) != (self.calib.width, self.calib.height):
            raise SamplingError(
                f"{self.calib.channel}: video frames are {frame.width}x{frame.height}, "
                f"calibration says {self.calib.width}x{self.calib.height}"
            )
        fmt = frame.format.name
        full_range = fmt.startswith("yuvj") or frame.color_range == _FULL_RANGE
        if frame.colorspace in _BT601 and (fmt in _PLANAR_YUV if self.luma is None else fmt in _YUV420):
            planes = [
                np.frombuffer(p, dtype=np.uint8).reshape(p.height, p.line_size)[:, : p.width] for p in frame.planes[:3]
            ]
            if self.luma is not None:
                planes = [self.luma(planes[0]), self.chroma(planes[1]), self.chroma(planes[2])]
            if not full_range:  # JPEG's YCbCr is full range; video usually uses 16..235 / 16..240
                lines = (_LUMA_LINE, _CHROMA_LINE, _CHROMA_LINE)
                planes = [cv2.addWeighted(plane, scale, plane, 0.0, offset) for plane, (scale, offset) in zip(planes, lines)]
            return simplejpeg.encode_jpeg_yuv_planes(_even_padded(planes[0]), *planes[1:], quality=self.quality)
        rgb = frame.to_ndarray(format="rgb24", src_color_range="JPEG" if full_range else None)
        if self.luma is not None:
            rgb = self.luma(rgb)
        return simplejpeg.encode_jpeg(rgb, quality=self.quality, colorspace="RGB", colorsubsampling="420")


class _Warp:
    """cv2.remap with fixed tables: output pixel -> source position (pixels, pixel centres at integers).

    Shrinking to half or less: bilinear sampling alone would alias, so the image is first
    area-averaged to an integer fraction of its size and the tables are moved onto that image.
    """

    def __init__(self, map_x: np.ndarray, map_y: np.ndarray, source_size: tuple[int, int]):
        out_h, out_w = map_x.shape
        factor = int(min(source_size[0] / out_w, source_size[1] / out_h))
        self.prefilter: tuple[int, int] | None = None
        if factor >= 2:
            self.prefilter = (source_size[0] // factor, source_size[1] // factor)
            map_x = (map_x + 0.5) * (self.prefilter[0] / source_size[0]) - 0.5
            map_y = (map_y + 0.5) * (self.prefilter[1] / source_size[1]) - 0.5
        self.maps = cv2.convertMaps(map_x.astype(np.float32), map_y.astype(np.float32), cv2.CV_16SC2)

    def __call__(self, image: np.ndarray) -> np.ndarray:
        if self.prefilter is not None:
            image = cv2.resize(image, self.prefilter, interpolation=cv2.INTER_AREA)
        return cv2.remap(image, self.maps[0], self.maps[1], cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)


def _even_padded(plane: np.ndarray) -> np.ndarray:
    """plane, in a buffer padded to an even height and width by repeating its last row / column.

    libjpeg-turbo reads subsampled luma in pairs of rows and columns: on an odd-sized plane it
    read one row past the end, and the JPEG's last block row changed from run to run.
    """
    height, width = plane.shape
    if not (height % 2 or width % 2):
        return plane
    return cv2.copyMakeBorder(plane, 0, height % 2, 0, width % 2, cv2.BORDER_REPLICATE)[:height, :width]


def _pad_to(values: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """values (H, W) extended to size (width, height) by repeating the last row / column."""
    return cv2.copyMakeBorder(values, 0, size[1] - values.shape[0], 0, size[0] - values.shape[1], cv2.BORDER_REPLICATE)


def _to_full_range(zero_in: float, scale: float, zero_out: float) -> np.ndarray:
    """Lookup table (256,) taking limited-range samples to full range: (v - zero_in) * scale + zero_out."""
    values = (np.arange(256, dtype=np.float64) - zero_in) * scale + zero_out
    return np.clip(np.rint(values), 0, 255).astype(np.uint8)


_LUMA_TO_FULL = _to_full_range(16, 255 / 219, 0)  # 16..235 -> 0..255
_CHROMA_TO_FULL = _to_full_range(128, 255 / 224, 128)  # 16..240 -> 0..255, 128 stays
# The same maps as (scale, offset) of v * scale + offset, computed in float32 by cv2.addWeighted (a
# third of cv2.LUT's time) and rounded to the same values for every input: no luma value lands
# within 0.0068 of a half; the chroma of 16 and 240 land on one (0.5 and 255.5, rounded down and
# clipped by the tables), so the chroma offset is lowered by 1/1024, less than the 0.0045 by which
# every other chroma value misses a half.
_LUMA_LINE = (255 / 219, -16 * 255 / 219)
_CHROMA_LINE = (255 / 224, 128 - 128 * 255 / 224 - 1 / 1024)
