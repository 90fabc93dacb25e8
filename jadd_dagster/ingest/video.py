"""A camera topic written incrementally as our log's cameras/<CHANNEL>.mp4 (one frame per message).

H.264 (foxglove CompressedVideo, Annex B, one access unit per message, no B-frames as Foxglove's
schema requires) is remuxed: the packets go into the mp4 as they are, never re-encoded. Frames
that cannot be decoded are dropped: those before the first keyframe, and those after lost frames
(a gap in the recording) until the next keyframe, since they refer to frames the log does not have.

JPEG (and PNG) images (sensor_msgs/CompressedImage, foxglove CompressedImage) are decoded and
encoded once to H.264 with libx264: from the JPEG's own full-range YUV 4:2:0 planes when it has
them (no colour conversion), with a keyframe every second (the sampler seeks to keyframes) and
no B-frames. crf 0 is lossless; the default 17 is visually lossless at a fraction of the size.

Presentation times follow the log format's contract (sampling/decode.py): frame i is at
i / camera_hz seconds on a constant-rate grid, written in µs (time base 1/1,000,000); the frame's
real time is row i of cameras/<CHANNEL>.timestamps.parquet.
"""

from __future__ import annotations

import io
from fractions import Fraction
from pathlib import Path

import av
import cv2
import numpy as np

from jadd_dagster.ingest.messages import MessageError, is_h264_keyframe

MICROSECOND = Fraction(1, 1_000_000)
JPEG_FORMATS = ("jpeg", "jpg", "png")


def payload_kind(fmt: str) -> str:
    """'h264' or 'image' for a CompressedVideo / CompressedImage format string (ROS 2 writes e.g.
    'bgr8; jpeg compressed bgr8'); MessageError for anything else."""
    if fmt == "h264":
        return "h264"
    if any(name in fmt for name in JPEG_FORMATS):
        return "image"
    raise MessageError(f"image format {fmt!r} is not supported (jpeg, png or h264)")


class CameraVideo:
    """One camera's mp4, written a frame at a time; add() returns False for a frame it dropped."""

    def __init__(self, path: Path, camera_hz: int, crf: int):
        self.path = path
        self.camera_hz = camera_hz
        self.crf = crf
        self.kind: str | None = None
        self.frames = 0
        self.dropped_waiting_for_keyframe = 0
        self._need_keyframe = True
        self.size: tuple[int, int] | None = None
        self._container = None
        self._stream = None
        self._jpeg = None

    def add(self, fmt: str, data: bytes) -> bool:
        kind = payload_kind(fmt)
        if self.kind is None:
            self.kind = kind
        elif kind != self.kind:
            raise MessageError(f"format {fmt!r} after {self.kind} frames: a camera topic keeps one format")
        if kind == "h264":
            return self._add_h264(data)
        self._add_image(data)
        return True

    def frames_lost(self) -> None:
        """Frames were lost before the next one: H.264 waits for a keyframe (images need not)."""
        self._need_keyframe = True

    def _pts(self) -> int:
        return round(self.frames * 1_000_000 / self.camera_hz)

    def _open(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._container = av.open(str(self.path), "w", format="mp4")

    def _add_h264(self, data: bytes) -> bool:
        keyframe = is_h264_keyframe(data)
        if self._need_keyframe and not keyframe:
            self.dropped_waiting_for_keyframe += 1
            return False
        self._need_keyframe = False
        if self._stream is None:
            try:  # the first access unit carries SPS and PPS: it describes the stream
                with av.open(io.BytesIO(data), format="h264") as probe:
                    template = probe.streams.video[0]
                    self.size = (template.codec_context.width, template.codec_context.height)
                    self._open()
                    self._stream = self._container.add_stream_from_template(template)
            except (av.FFmpegError, IndexError) as error:
                raise MessageError(f"the first keyframe is not H.264 with SPS and PPS ({error})") from None
            self._stream.time_base = MICROSECOND
        packet = av.Packet(data)
        packet.stream = self._stream
        packet.time_base = MICROSECOND
        packet.pts = packet.dts = self._pts()
        packet.is_keyframe = keyframe
        self._container.mux(packet)
        self.frames += 1
        return True

    def _add_image(self, data: bytes) -> None:
        frame = self._decode_image(data)
        if self._stream is None:
            if frame.width % 2 or frame.height % 2:
                raise MessageError(f"a {frame.width}x{frame.height} image: H.264 4:2:0 needs an even width and height")
            self.size = (frame.width, frame.height)
            self._open()
            self._stream = self._container.add_stream("libx264", rate=self.camera_hz)
            self._stream.width, self._stream.height, self._stream.pix_fmt = frame.width, frame.height, "yuvj420p"
            self._stream.codec_context.time_base = Fraction(1, self.camera_hz)
            self._stream.time_base = MICROSECOND
            keyint = self.camera_hz
            self._stream.options = {"preset": "veryfast", "crf": str(self.crf),
                                    "x264-params": f"keyint={keyint}:min-keyint={keyint}:scenecut=0:bframes=0"}
        elif (frame.width, frame.height) != self.size:
            raise MessageError(f"a {frame.width}x{frame.height} image after {self.size[0]}x{self.size[1]} ones")
        if frame.format.name != "yuvj420p":
            frame = frame.reformat(format="yuvj420p")
        frame.pts = self.frames
        frame.time_base = Fraction(1, self.camera_hz)
        self._container.mux(self._stream.encode(frame))
        self.frames += 1

    def _decode_image(self, data: bytes) -> av.VideoFrame:
        if data[:3] == b"\xff\xd8\xff":  # JPEG: decoded to its own YUV planes
            if self._jpeg is None:
                self._jpeg = av.CodecContext.create("mjpeg", "r")
            try:
                frames = self._jpeg.decode(av.Packet(data))
            except av.FFmpegError as error:
                raise MessageError(f"not a decodable JPEG ({error})") from None
            if len(frames) != 1:
                raise MessageError("not a decodable JPEG")
            return frames[0]
        rgb = cv2.imdecode(np.frombuffer(data, dtype=np.uint8), cv2.IMREAD_COLOR)
        if rgb is None:
            raise MessageError("not a decodable JPEG or PNG image")
        return av.VideoFrame.from_ndarray(cv2.cvtColor(rgb, cv2.COLOR_BGR2RGB), format="rgb24")

    def close(self) -> None:
        """Flush the encoder and finish the mp4 (nothing is written for a topic with no frames)."""
        if self._container is None:
            return
        if self.kind == "image":
            self._container.mux(self._stream.encode(None))
        self._container.close()
        self._container = None
