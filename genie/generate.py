"""`genie generate`: a clip from prompt frames and a sequence of latent actions."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from genie.errors import GenieError


def parse_actions(text: str, num_actions: int) -> list[int]:
    """'1,1,3x4,2' (1-based, as the play keys; NxK repeats N K times) -> 0-based actions."""
    actions = []
    for item in text.replace(" ", "").split(","):
        action, _, times = item.partition("x")
        try:
            a, n = int(action), int(times or 1)
        except ValueError:
            raise GenieError(f"--actions {text!r}: {item!r} is not an action number (e.g. "
                             "1,1,3x4 for 1, 1, then 3 four times)") from None
        if not 1 <= a <= num_actions or n < 1:
            raise GenieError(f"--actions {text!r}: actions are 1..{num_actions} and repeats at "
                             "least 1")
        actions += [a - 1] * n
    return actions


def random_actions(count: int, num_actions: int, seed: int, hold: int = 4) -> list[int]:
    """`count` random latent actions, each held for 1..hold steps (as a player would)."""
    rng = np.random.default_rng(seed)
    actions: list[int] = []
    while len(actions) < count:
        actions += [int(rng.integers(num_actions))] * int(rng.integers(1, hold + 1))
    return actions[:count]


def generate(world, prompt: np.ndarray, actions: list[int], seed: int = 0) -> np.ndarray:
    """The prompt frames (t, H, W, 3) followed by one generated frame per action."""
    world.reset(prompt, seed=seed)
    generated = world.rollout(actions) if actions else np.zeros((0, *prompt.shape[1:]), np.uint8)
    return np.concatenate([prompt[-world.context:], generated])


def save_clip(frames: np.ndarray, path: str | Path, fps: float, scale: int = 1) -> Path:
    """Write frames (T, H, W, 3) as .mp4 (or any container PyAV writes) or raw .npy."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if scale > 1:  # nearest neighbour: keep the pixels crisp
        frames = frames.repeat(scale, axis=1).repeat(scale, axis=2)
    if path.suffix.lower() == ".npy":
        tmp = path.with_name(path.name + ".tmp.npy")
        np.save(tmp, frames)
        tmp.rename(path)
        return path
    from genie.data.video import VideoWriter

    with VideoWriter(path, fps=fps) as writer:
        for frame in frames:
            writer.write(frame)
    return path
