"""Data fixtures: a maker of synthetic videos in any codec."""

from __future__ import annotations

from pathlib import Path

import av
import numpy as np
import pytest


def moving_square(n: int, height: int = 64, width: int = 64, seed: int = 0) -> np.ndarray:
    """(n, H, W, 3) uint8: a bright square sliding over a smooth gradient, one pixel a frame."""
    rng = np.random.default_rng(seed)
    base = np.zeros((height, width, 3), np.uint8)
    base[..., 0] = np.linspace(30, 200, width, dtype=np.uint8)[None, :]
    base[..., 1] = np.linspace(60, 160, height, dtype=np.uint8)[:, None]
    base[..., 2] = rng.integers(40, 120)
    frames = np.repeat(base[None], n, axis=0)
    side = max(4, min(height, width) // 6)
    for t in range(n):
        x = t % (width - side)
        frames[t, height // 3 : height // 3 + side, x : x + side] = (250, 240, 30)
    return frames


def write_video(path: Path, frames: np.ndarray, codec: str = "libx264", pix_fmt: str = "yuv420p",
                fps: int = 15, options: dict | None = None, in_format: str = "rgb24") -> Path:
    """Encode frames with any PyAV codec, to build test inputs of every kind."""
    with av.open(str(path), "w") as container:
        stream = container.add_stream(codec, rate=fps)
        stream.height, stream.width = frames.shape[1:3]
        stream.pix_fmt = pix_fmt
        stream.options = options or {}
        for frame in frames:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format=in_format)))
        container.mux(stream.encode(None))
    return path


@pytest.fixture(scope="session")
def video_maker():
    return write_video, moving_square
