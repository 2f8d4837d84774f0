"""A synthetic dataset whose every answer is known, for the world evaluator's tests.

A camera pans over a fixed random texture: LEFT moves the view 2 px left (the picture shifts
2 px right), RIGHT the other way, NOOP keeps it. Actions are drawn independently per step, so an
off-by-one in action alignment cannot hide behind held actions. A stamp in the top-left corner
(frame index, episode) makes every frame unique, so a fake world can find where a prompt came
from. Two validation episodes and one training episode, lossless.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from genie.data.prepare import PrepareSettings, prepare
from genie.data.video import VideoWriter

NAMES = ["LEFT", "NOOP", "RIGHT"]
STEP = {0: -2, 1: 0, 2: 2}  # view position change per true action
LENGTH = 40


def pan_episode(seed: int, length: int = LENGTH) -> tuple[np.ndarray, np.ndarray]:
    """Frames (length, 64, 64, 3) and actions (length-1,) of one panning episode."""
    rng = np.random.default_rng(seed)
    texture = rng.integers(0, 256, (64, 64 + 2 * 2 * length, 3), dtype=np.uint8)
    actions = rng.integers(0, 3, length - 1)
    x, frames = 2 * length, []
    for t in range(length):
        frame = texture[:, x:x + 64].copy()
        frame[:2, :4] = (6 * t % 256, 80 * seed % 256, 0)  # unique stamp
        frames.append(frame)
        if t < length - 1:
            x += STEP[int(actions[t])]
    return np.stack(frames), actions


def write_episodes(src: Path, splits: dict[str, list[int]]) -> None:
    for split, seeds in splits.items():
        (src / split).mkdir(parents=True)
        for seed in seeds:
            frames, actions = pan_episode(seed)
            with VideoWriter(src / split / f"ep{seed}.mp4", lossless=True) as writer:
                for frame in frames:
                    writer.write(frame)
            np.save(src / split / f"ep{seed}.actions.npy", actions.astype(np.int16))
    (src / "record.json").write_text(json.dumps({"action_names": NAMES}))


@pytest.fixture(scope="session")
def pan_dataset(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("pan")
    write_episodes(root / "src", {"train": [0], "val": [1, 2]})
    prepare(root / "src", root / "ds", PrepareSettings(size=(64, 64)), workers=1,
            progress=False, log=lambda msg: None)
    return root / "ds"


@pytest.fixture(scope="session")
def train_only_dataset(tmp_path_factory) -> Path:
    """One episode, all of it training data: no val split."""
    root = tmp_path_factory.mktemp("train_only")
    write_episodes(root / "src", {"train": [5]})
    prepare(root / "src", root / "ds", PrepareSettings(size=(64, 64), val_fraction=0), workers=1,
            progress=False, log=lambda msg: None)
    return root / "ds"
