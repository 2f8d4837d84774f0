"""Recording the frames a session shows (mp4) and naming screenshots.

A recording holds the frame on screen when it started, then every frame the world shows after
it, in order: one per step, and the earlier frame again after an undo or a reset. Frames are the
world's own pixels scaled up by a whole factor (nearest neighbour, as `genie generate` does), not
the window with its panel; a screenshot (S) is the whole window.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

RECORD_SCALE = 4


class Recorder:
    """Frames -> one mp4, written under a temporary name and renamed when it is closed."""

    def __init__(self, path: str | Path, fps: float, scale: int = RECORD_SCALE):
        from genie.data.video import VideoWriter

        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.scale = scale
        self.frames = 0
        self._writer = VideoWriter(self.path, fps=fps)

    def write(self, frame: np.ndarray) -> None:
        if self.scale > 1:
            frame = frame.repeat(self.scale, axis=0).repeat(self.scale, axis=1)
        self._writer.write(frame)
        self.frames += 1

    def close(self) -> Path:
        """Finish the file (a recording with no frame leaves none)."""
        self._writer.close()
        return self.path


def numbered(path: Path) -> Path:
    """`path`, or path-2, path-3... when it exists: a second recording keeps the first."""
    candidate, n = path, 1
    while candidate.exists():
        n += 1
        candidate = path.with_name(f"{path.stem}-{n}{path.suffix}")
    return candidate


def stamped(folder: Path, suffix: str) -> Path:
    """A fresh file name in `folder` like genie-play-20250101-120000.png."""
    return numbered(folder / f"genie-play-{time.strftime('%Y%m%d-%H%M%S')}{suffix}")
