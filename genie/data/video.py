"""Reading and writing video files with PyAV.

Reading streams frames one at a time (memory stays flat whatever the length of the video) and
keeps what it can of a damaged file: a frame that fails to decode is dropped together with the
frames that depend on it (up to the next key frame), and the caller is told where the gap is so an
episode is never stitched across it.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
from av.video.reformatter import VideoReformatter

VIDEO_SUFFIXES = {".mp4", ".mkv", ".webm", ".avi", ".mov", ".gif", ".m4v", ".mpg", ".mpeg", ".ts"}


def parse_size(text: str) -> tuple[int, int]:
    """'64' -> (64, 64); '90x160' -> (90, 160), written H×W like everywhere in genie."""
    parts = text.lower().split("x")
    try:
        dims = [int(p) for p in parts]
    except ValueError:
        dims = []
    if len(dims) == 1:
        dims = dims * 2
    if len(dims) != 2 or min(dims) < 2:
        raise ValueError(f"size {text!r} is not N or HxW with positive numbers (e.g. 64 or 90x160)")
    return dims[0], dims[1]


def decode_problem(error: Exception) -> str:
    """FFmpeg's words for why a file does not decode, without its error number or the path."""
    return getattr(error, "strerror", None) or str(error)


def center_crop_box(height: int, width: int, aspect: float) -> tuple[int, int, int, int]:
    """The largest centred (top, left, h, w) box of a height×width frame with w/h == aspect."""
    if width / height > aspect:
        w = max(1, round(height * aspect))
        return 0, (width - w) // 2, height, w
    h = max(1, round(width / aspect))
    return (height - h) // 2, 0, h, width


@dataclass
class DecodeReport:
    """What happened while decoding one file: frames seen, decode errors, where gaps fell."""

    frames: int = 0
    errors: int = 0
    dropped: int = 0
    truncated: bool = False
    source_frames: int = 0


@dataclass
class DecodedFrame:
    index: int  # position in the source video (frames dropped for damage keep their slot)
    rgb: np.ndarray  # (H, W, 3) uint8
    after_gap: bool  # frames were lost just before this one: do not join it to the previous


def read_frames(
    path: str | Path,
    size: tuple[int, int] | None = None,
    crop: str | None = None,
    fps: float | None = None,
    report: DecodeReport | None = None,
) -> Iterator[DecodedFrame]:
    """Yield the frames of `path` as RGB uint8, resized to `size` (H, W) if given.

    `crop="center"` cuts the largest centred box of the target aspect before resizing; otherwise
    frames are resized to exactly `size`. `fps` keeps the first frame at or after each tick of a
    1/fps clock (None keeps every frame). Raises av.error.FFmpegError (or OSError) when the file
    cannot be opened at all; damage after that is recorded in `report` instead.
    """
    report = report if report is not None else DecodeReport()
    reformatter = VideoReformatter()  # reused: a fresh one per frame costs more than decoding
    with av.open(str(path)) as container:
        if not container.streams.video:
            raise av.error.InvalidDataError(0, "no video stream")
        stream = container.streams.video[0]
        # Raise on damaged bitstreams instead of concealing them with smeared frames.
        stream.codec_context.options = {"err_detect": "explode"}
        rate = stream.average_rate or stream.guessed_rate
        time_base = stream.time_base
        counter, first_pts, next_tick = 0, None, 0.0
        gap = False  # a decode error since the last frame we kept
        waiting_for_key = False

        def frames() -> Iterator[av.VideoFrame]:
            nonlocal gap, waiting_for_key
            try:
                for packet in container.demux(stream):
                    try:
                        decoded = packet.decode()
                    except av.error.FFmpegError:
                        report.errors += 1
                        gap, waiting_for_key = True, True
                        continue
                    yield from decoded
            except av.error.FFmpegError:
                report.truncated = True  # the container itself broke off: keep what we had

        for frame in frames():
            if first_pts is None and frame.pts is not None:
                first_pts = frame.pts
            if frame.pts is not None and rate and time_base:
                seconds = float((frame.pts - first_pts) * time_base)
                index = round(seconds * float(rate))
            else:
                seconds = counter / float(rate or 1)
                index = counter
            counter += 1
            report.source_frames = max(report.source_frames, index + 1)
            if waiting_for_key:
                if not frame.key_frame:
                    report.dropped += 1
                    continue
                waiting_for_key = False
            if fps is not None:
                if seconds + 1e-6 < next_tick:
                    continue
                next_tick = (np.floor(seconds * fps + 1e-6) + 1) / fps
            yield DecodedFrame(index, _to_rgb(frame, reformatter, size, crop), gap)
            report.frames += 1
            gap = False


def _to_rgb(frame, reformatter, size, crop) -> np.ndarray:
    if size is None:
        return reformatter.reformat(frame, format="rgb24").to_ndarray()
    height, width = size
    if crop == "center":
        top, left, h, w = center_crop_box(frame.height, frame.width, width / height)
        rgb = reformatter.reformat(frame, format="rgb24").to_ndarray()
        rgb = np.ascontiguousarray(rgb[top : top + h, left : left + w])
        frame = av.VideoFrame.from_ndarray(rgb, format="rgb24")
    out = reformatter.reformat(frame, width=width, height=height, format="rgb24",
                               interpolation="AREA")
    return out.to_ndarray()


class VideoWriter:
    """Write RGB uint8 frames to an mp4: H.264 yuv420p by default, lossless H.264 RGB if asked.

    yuv420p needs even sizes, so an odd frame is padded by repeating its last row/column; the
    lossless RGB stream stores any size as is. The file is written under a temporary name and
    renamed on close, so a crash never leaves a playable-looking half file. The frame rate is
    kept as a fraction (7.5 -> 15/2, CoinRun's 15 at --repeat 7 -> 15/7), so a rate that is not
    a whole number plays at that rate, not rounded.
    """

    def __init__(self, path: str | Path, fps: float = 15, lossless: bool = False, crf: int = 16):
        self.path = Path(path)
        self.tmp = self.path.with_name(self.path.name + ".tmp")
        self.fps = Fraction(fps).limit_denominator(1000)
        if self.fps <= 0:
            raise ValueError(f"frame rate {fps} is not a positive number of frames a second")
        self.lossless, self.crf = lossless, crf
        self.container = None
        self.stream = None

    def _open(self, height: int, width: int) -> None:
        # faststart puts the index first, so a truncated copy still decodes up to the cut.
        self.container = av.open(
            str(self.tmp), "w", format="mp4", options={"movflags": "+faststart"}
        )
        if self.lossless:
            stream = self.container.add_stream("libx264rgb", rate=self.fps)
            stream.pix_fmt = "rgb24"
            stream.options = {"qp": "0", "preset": "ultrafast"}
        else:
            stream = self.container.add_stream("libx264", rate=self.fps)
            stream.pix_fmt = "yuv420p"
            stream.options = {"crf": str(self.crf), "preset": "veryfast"}
            height, width = height + height % 2, width + width % 2
        stream.height, stream.width = height, width
        # A key frame every two seconds bounds what one damaged frame takes with it.
        stream.codec_context.gop_size = max(1, round(2 * self.fps))
        stream.thread_count = 1  # tiny frames: threads cost more than they give
        self.stream = stream

    def write(self, rgb: np.ndarray) -> None:
        if self.container is None:
            self._open(*rgb.shape[:2])
        if not self.lossless and (rgb.shape[0] % 2 or rgb.shape[1] % 2):
            rgb = np.pad(rgb, ((0, rgb.shape[0] % 2), (0, rgb.shape[1] % 2), (0, 0)), mode="edge")
        frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(rgb), format="rgb24")
        self.container.mux(self.stream.encode(frame))

    def close(self) -> None:
        if self.container is None:
            return
        self.container.mux(self.stream.encode(None))
        self.container.close()
        self.container = None
        self.tmp.replace(self.path)

    def abort(self) -> None:
        if self.container is not None:
            self.container.close()
            self.container = None
        self.tmp.unlink(missing_ok=True)

    def __enter__(self) -> VideoWriter:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()
