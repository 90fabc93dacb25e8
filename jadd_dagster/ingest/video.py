"""A camera topic written incrementally as our log's cameras/<CHANNEL>.mp4 (one frame per message).

H.264 (foxglove CompressedVideo, Annex B, one access unit per message, no B-frames as Foxglove's
schema requires) is remuxed: the packets go into the mp4 as they are, never re-encoded. Frames
that cannot be decoded are dropped: those before the first keyframe, and those after lost frames
(a gap in the recording) until the next keyframe, since they refer to frames the log does not have.

JPEG and PNG images (sensor_msgs/CompressedImage, foxglove CompressedImage) are stored as they
were recorded: each message's bytes become one packet of an mp4 stream of codec mjpeg or png
(every packet a keyframe), never decoded or encoded here, so the sampler can copy a JPEG into a
dataset untouched. Each image is checked by its header only (JPEG markers up to the first scan,
PNG signature and IHDR): one format and one size per topic. With the topic map's jpeg_crf set
they are instead decoded and encoded once to H.264 with libx264 (a smaller log, 4.8x for the
camera on bench/bench_ingest.py's drive, but every dataset frame is then a second encode): from the JPEG's own full-range YUV 4:2:0 planes when it
has them, a keyframe every second (the sampler seeks to keyframes) and no B-frames; crf 0 is lossless.

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
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
# JPEG start-of-frame markers (baseline, extended, progressive, lossless; Huffman and arithmetic).
_SOF_MARKERS = {0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF}
_SOS = 0xDA
_STANDALONE = {0x01, *range(0xD0, 0xD8)}  # TEM and RSTn: markers without a length


def payload_kind(fmt: str) -> str:
    """'h264' or 'image' for a CompressedVideo / CompressedImage format string (ROS 2 writes e.g.
    'bgr8; jpeg compressed bgr8'); MessageError for anything else."""
    if fmt == "h264":
        return "h264"
    if any(name in fmt for name in JPEG_FORMATS):
        return "image"
    raise MessageError(f"image format {fmt!r} is not supported (jpeg, png or h264)")


def image_header(data: bytes) -> tuple[str, tuple[int, int]]:
    """('mjpeg' or 'png', (width, height)) of an image from its header, without decoding it;
    MessageError when it is neither a JPEG (markers up to a frame header and a scan) nor a PNG."""
    if data[:8] == PNG_SIGNATURE:
        if len(data) < 24 or data[12:16] != b"IHDR":
            raise MessageError("a PNG image without its IHDR header")
        return "png", (int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big"))
    if data[:3] != b"\xff\xd8\xff":
        raise MessageError("not a decodable JPEG or PNG image")
    size, pos = None, 2
    while pos + 4 <= len(data):
        if data[pos] != 0xFF:
            raise MessageError(f"not a decodable JPEG (no marker at byte {pos})")
        marker = data[pos + 1]
        if marker == 0xFF:  # fill byte
            pos += 1
            continue
        if marker in _STANDALONE:
            pos += 2
            continue
        length = int.from_bytes(data[pos + 2 : pos + 4], "big")
        if marker in _SOF_MARKERS and pos + 9 <= len(data):
            height, width = int.from_bytes(data[pos + 5 : pos + 7], "big"), int.from_bytes(data[pos + 7 : pos + 9], "big")
            size = (width, height)
        if marker == _SOS:
            if size is None or 0 in size:
                raise MessageError("not a decodable JPEG (no frame size before its scan)")
            return "mjpeg", size
        pos += 2 + length
    raise MessageError("not a decodable JPEG (truncated before its scan)")


class CameraVideo:
    """One camera's mp4, written a frame at a time; add() returns False for a frame it dropped.

    crf None: images are stored as recorded; a number: encoded once to H.264 at that x264 quality.
    """

    def __init__(self, path: Path, camera_hz: int, crf: int | None = None):
        self.path = path
        self.camera_hz = camera_hz
        self.crf = crf
        self.kind: str | None = None
        self.codec: str | None = None  # what the mp4 holds: h264, mjpeg or png
        self.frames = 0
        self.dropped_waiting_for_keyframe = 0
        self._need_keyframe = True
        self.size: tuple[int, int] | None = None
        self._container = None
        self._stream = None
        self._jpeg = None

    @property
    def reencoded(self) -> bool:
        return self.kind == "image" and self.codec == "h264"

    def add(self, fmt: str, data: bytes) -> bool:
        kind = payload_kind(fmt)
        if self.kind is None:
            self.kind = kind
        elif kind != self.kind:
            raise MessageError(f"format {fmt!r} after {self.kind} frames: a camera topic keeps one format")
        if kind == "h264":
            return self._add_h264(data)
        if self.crf is None:
            self._add_image(data)
        else:
            self._encode_image(data)
        return True

    def frames_lost(self) -> None:
        """Frames were lost before the next one: H.264 waits for a keyframe (images need not)."""
        self._need_keyframe = True

    def _pts(self) -> int:
        return round(self.frames * 1_000_000 / self.camera_hz)

    def _open(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._container = av.open(str(self.path), "w", format="mp4")

    def _copy_stream(self, data: bytes, demuxer: str) -> None:
        """The mp4's stream, described by the first packet's own stream (for stream copy)."""
        with av.open(io.BytesIO(data), format=demuxer) as probe:
            template = probe.streams.video[0]
            self._open()
            self._stream = self._container.add_stream_from_template(template)
        self._stream.time_base = MICROSECOND

    def _mux(self, data: bytes, keyframe: bool) -> None:
        packet = av.Packet(data)
        packet.stream = self._stream
        packet.time_base = MICROSECOND
        packet.pts = packet.dts = self._pts()
        # The last frame too lasts one period: an mp4's edit list would otherwise cut it off.
        packet.duration = round((self.frames + 1) * 1_000_000 / self.camera_hz) - packet.pts
        packet.is_keyframe = keyframe
        self._container.mux(packet)
        self.frames += 1

    def _add_h264(self, data: bytes) -> bool:
        keyframe = is_h264_keyframe(data)
        if self._need_keyframe and not keyframe:
            self.dropped_waiting_for_keyframe += 1
            return False
        self._need_keyframe = False
        if self._stream is None:
            try:  # the first access unit carries SPS and PPS: it describes the stream
                self._copy_stream(data, "h264")
            except (av.FFmpegError, IndexError) as error:
                raise MessageError(f"the first keyframe is not H.264 with SPS and PPS ({error})") from None
            self.codec = "h264"
            self.size = (self._stream.codec_context.width, self._stream.codec_context.height)
        self._mux(data, keyframe)
        return True

    def _add_image(self, data: bytes) -> None:
        codec, size = image_header(data)
        if self._stream is None:
            try:
                self._copy_stream(data, "jpeg_pipe" if codec == "mjpeg" else "png_pipe")
            except (av.FFmpegError, IndexError) as error:
                raise MessageError(f"not a decodable {'JPEG' if codec == 'mjpeg' else 'PNG'} image ({error})") from None
            self.codec, self.size = codec, size
        elif codec != self.codec:
            raise MessageError(f"a {_NAMES[codec]} image after {_NAMES[self.codec]} ones: a camera topic keeps one format")
        elif size != self.size:
            raise MessageError(f"a {size[0]}x{size[1]} image after {self.size[0]}x{self.size[1]} ones")
        self._mux(data, True)

    def _encode_image(self, data: bytes) -> None:
        frame = self._decode_image(data)
        if self._stream is None:
            if frame.width % 2 or frame.height % 2:
                raise MessageError(f"a {frame.width}x{frame.height} image: H.264 4:2:0 needs an even width and height")
            self.size = (frame.width, frame.height)
            self.codec = "h264"
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
        if self.reencoded:
            self._container.mux(self._stream.encode(None))
        self._container.close()
        self._container = None


_NAMES = {"mjpeg": "JPEG", "png": "PNG"}
