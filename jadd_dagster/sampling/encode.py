"""Decoded camera frames to JPEG bytes at a profile's size and lens model (FrameEncoder)."""

from __future__ import annotations

import threading
from collections import OrderedDict
from concurrent.futures import Future

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


# Encoders kept by frame_encoder: a worker's scenes come log by log, each with its few cameras.
ENCODER_CACHE_SIZE = 8
_encoders: OrderedDict[tuple, Future] = OrderedDict()
_encoders_lock = threading.Lock()


def frame_encoder(
    calib: CameraCalibration, image_size: tuple[int, int] | None, undistort: bool, quality: int
) -> "FrameEncoder":
    """A FrameEncoder for these arguments, made once per process and shared: its remap tables
    (60-80 ms to compute for a 1600x900 lens) serve every piece and every scene of the camera.
    Threads asking for the same encoder at once wait for the one making it. An encoder is only
    read once made, so threads may encode with it side by side."""
    key = (calib, tuple(int(v) for v in image_size) if image_size else None, bool(undistort), int(quality))
    with _encoders_lock:
        made = _encoders.get(key)
        mine = made is None
        if mine:
            made = _encoders[key] = Future()
            while len(_encoders) > ENCODER_CACHE_SIZE:
                _encoders.popitem(last=False)
        else:
            _encoders.move_to_end(key)
    if mine:
        try:
            made.set_result(FrameEncoder(calib, image_size, undistort, quality))
        except BaseException as error:
            with _encoders_lock:
                if _encoders.get(key) is made:
                    del _encoders[key]  # the next caller tries again
            made.set_exception(error)
    return made.result()


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
                planes = [self.luma(planes[0]), *self.chroma.pair(planes[1], planes[2])]
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
        return self._remap(self._prefiltered(image))

    def pair(self, first: np.ndarray, second: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Both planes warped, the same values as warping each on its own: OpenCV's remap
        vectorises whole pixels of 4 channels, so one pass over (first, second, first, second),
        with the merge and the extraction, costs about 0.77 of two passes over single planes
        (1600x900 chroma, bench/RESULTS.md, session 6)."""
        first, second = self._prefiltered(first), self._prefiltered(second)
        warped = self._remap(cv2.merge([first, second, first, second]))
        return cv2.extractChannel(warped, 0), cv2.extractChannel(warped, 1)

    def _prefiltered(self, image: np.ndarray) -> np.ndarray:
        if self.prefilter is None:
            return image
        return cv2.resize(image, self.prefilter, interpolation=cv2.INTER_AREA)

    def _remap(self, image: np.ndarray) -> np.ndarray:
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
