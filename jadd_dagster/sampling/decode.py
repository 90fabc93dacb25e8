"""Decoded camera frames to JPEG: one sequential decode pass per video, and the frame encoder.

A scene never seeks per frame: decode_frames seeks once to the keyframe at or before the first
wanted frame and decodes forward, stopping after the last wanted one. Frames are identified by
their presentation time on the video's constant-rate grid (index = pts * time_base * rate), which
is the row of the frame in the log's timestamps file.
"""

from __future__ import annotations

import itertools
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


class DecodeError(SamplingError):
    """A video does not hold the frames its timestamps file promises."""


@dataclass
class DecodeStats:
    """What a decode pass cost: frames out of the decoder, seeks, and seconds spent decoding."""

    decoded: int = 0
    seeks: int = 0
    seconds: float = 0.0


def decode_frames(
    video: Path,
    wanted: Sequence[int],
    frame_count: int,
    rate_hz: int = 30,
    stats: DecodeStats | None = None,
    skip_unwanted: bool = True,
) -> Iterator[tuple[int, av.VideoFrame]]:
    """Yield (frame index, frame) for each wanted frame index, in order, from one forward pass.

    frame_count is the number of rows of the video's timestamps file; the video must have as many
    frames. skip_unwanted lets libavcodec drop non-reference frames that are not wanted (they
    feed no other frame, so the wanted ones decode bit-identically). Raises DecodeError when a
    wanted frame is not in the video.
    """
    wanted = sorted(set(int(i) for i in wanted))
    if not wanted:
        return
    if wanted[0] < 0 or wanted[-1] >= frame_count:
        bad = wanted[0] if wanted[0] < 0 else wanted[-1]
        raise DecodeError(f"{video}: frame {bad} is outside 0..{frame_count - 1}")
    stats = stats if stats is not None else DecodeStats()
    clock = time.perf_counter()
    with av.open(str(video)) as container:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        if stream.frames and stream.frames != frame_count:
            raise DecodeError(f"{video}: {stream.frames} frames in the video but {frame_count} timestamps")
        time_base = stream.time_base
        origin = stream.start_time or 0
        codec = stream.codec_context

        def index_of(pts: int | None) -> int | None:
            if pts is None:
                return None
            exact = (pts - origin) * time_base * rate_hz
            index = round(exact)
            if abs(exact - index) > Fraction(1, 4):
                raise DecodeError(f"{video}: pts {pts} is not on a {rate_hz} Hz frame grid")
            return index

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
            packets = container.demux(stream)
            frames = _decoded(packets, codec, index_of, set(wanted) if skip_unwanted else None)
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
            yield index, frame
            clock = time.perf_counter()
            need = next(pending, None)
            if need is None:
                return
        stats.seconds += time.perf_counter() - clock
    raise DecodeError(f"{video}: frame {need} of {frame_count} is past the end of the video")


def _decoded(packets, codec, index_of, wanted: set[int] | None) -> Iterator[av.VideoFrame]:
    """Frames out of the decoder, in presentation order; with wanted, others may be skipped."""
    for packet in packets:
        if wanted is not None and packet.pts is not None:
            # Applies to this packet only: non-reference frames that are not wanted are dropped.
            codec.skip_frame = "DEFAULT" if index_of(packet.pts) in wanted else "NONREF"
        # The demuxer's final empty packet flushes the decoder.
        yield from codec.decode(packet)


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
                luts = (_LUMA_TO_FULL, _CHROMA_TO_FULL, _CHROMA_TO_FULL)
                planes = [cv2.LUT(plane, lut) for plane, lut in zip(planes, luts)]
            return simplejpeg.encode_jpeg_yuv_planes(*planes, quality=self.quality)
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


def _pad_to(values: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """values (H, W) extended to size (width, height) by repeating the last row / column."""
    return cv2.copyMakeBorder(values, 0, size[1] - values.shape[0], 0, size[0] - values.shape[1], cv2.BORDER_REPLICATE)


def _to_full_range(zero_in: float, scale: float, zero_out: float) -> np.ndarray:
    """Lookup table (256,) taking limited-range samples to full range: (v - zero_in) * scale + zero_out."""
    values = (np.arange(256, dtype=np.float64) - zero_in) * scale + zero_out
    return np.clip(np.rint(values), 0, 255).astype(np.uint8)


_LUMA_TO_FULL = _to_full_range(16, 255 / 219, 0)  # 16..235 -> 0..255
_CHROMA_TO_FULL = _to_full_range(128, 255 / 224, 128)  # 16..240 -> 0..255, 128 stays
