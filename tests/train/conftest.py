"""Fixtures of the training tests."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from genie.data.prepare import PrepareSettings, prepare


@pytest.fixture
def small_dataset():
    """Make a small prepared dataset of a given size from synthetic videos."""
    from genie.data.video import VideoWriter

    def make(root: Path, height: int, width: int) -> Path:
        src = root / "src"
        src.mkdir()
        for v in range(2):
            with VideoWriter(src / f"{v}.mp4") as w:
                for t in range(8):
                    w.write(torch.full((height, width, 3), 20 * t + v, dtype=torch.uint8).numpy())
        prepare(src, root / "ds", PrepareSettings(size=(height, width)), progress=False,
                log=lambda m: None)
        return root / "ds"

    return make
