"""A synthetic controllable video: a small square moved in one of 4 directions each step.

Shared by the LAM test (do the latent actions find the directions?) and the world test (does
a world trained on the video obey its actions?). The square wraps at the edges, over a flat
background of a random dark colour per clip; nobody tells the models the directions.
"""

from __future__ import annotations

import torch

SIZE, SIDE = 16, 4  # frame and square sides, in pixels
DIRECTIONS = torch.tensor([[0, 1], [0, -1], [1, 0], [-1, 0]])  # (dy, dx): right, left, down, up
COLOR = torch.tensor([230, 200, 40], dtype=torch.uint8)


def sprite_video(clips: int, frames: int, seed: int, *, speed: int = 2,
                 starts=range(SIZE)) -> tuple[torch.Tensor, torch.Tensor]:
    """(clips, frames, 16, 16, 3) uint8 and the true directions (clips, frames - 1).

    The square's top-left corner starts at a (y, x) drawn from `starts` for each, and moves
    `speed` px a step.
    """
    g = torch.Generator().manual_seed(seed)
    directions = torch.randint(0, 4, (clips, frames - 1), generator=g)
    starts = torch.as_tensor(starts)
    pos = starts[torch.randint(0, len(starts), (clips, 2), generator=g)]  # (clips, 2)
    background = torch.randint(0, 40, (clips, 1, 1, 3), generator=g, dtype=torch.uint8)
    yy, xx = torch.meshgrid(torch.arange(SIZE), torch.arange(SIZE), indexing="ij")
    video = []
    for t in range(frames):
        inside = ((yy - pos[:, :1, None]) % SIZE < SIDE) & ((xx - pos[:, 1:, None]) % SIZE < SIDE)
        video.append(torch.where(inside[..., None], COLOR, background))  # (clips, H, W, 3)
        if t < frames - 1:
            pos = pos + speed * DIRECTIONS[directions[:, t]]  # directions[t]: frame t -> t+1
    return torch.stack(video, 1), directions
