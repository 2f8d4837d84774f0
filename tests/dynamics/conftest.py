"""A synthetic token world small enough to learn in seconds, shared by dynamics-level tests.

One "player" code moves one cell per step over a constant background code, in the direction
of the action (0 up, 1 down, 2 left, 3 right), and stays put when a wall blocks the move. The
background code and the start cell vary per episode, so a model has to read them from the
context rather than memorise them. (Walls rather than wrap-around: a wrapped move jumps
across the grid, which a transformer with learned positions needs about twice the steps to
pick up.)
"""

from __future__ import annotations

from dataclasses import dataclass

import pytest
import torch

MOVES = torch.tensor([[-1, 0], [1, 0], [0, -1], [0, 1]])  # (row, column) step of each action


@dataclass(frozen=True)
class TokenWorld:
    h: int = 4
    w: int = 4
    vocab: int = 16
    num_actions: int = len(MOVES)

    @property
    def player(self) -> int:
        return self.vocab - 1

    def step(self, frame: torch.Tensor, action: torch.Tensor) -> torch.Tensor:
        """The true next frame (B, h, w) after `action` (B,) from `frame` (B, h, w)."""
        flat = frame.flatten(1)  # (B, N)
        is_player = flat == self.player
        cell = is_player.int().argmax(1)  # (B,)
        background = flat.masked_fill(is_player, -1).amax(1)  # (B,) every other cell holds it
        move = MOVES[action]  # (B, 2)
        row = (cell // self.w + move[:, 0]).clamp(0, self.h - 1)
        col = (cell % self.w + move[:, 1]).clamp(0, self.w - 1)
        out = background[:, None].repeat(1, self.h * self.w)  # (B, N)
        out[torch.arange(len(out)), row * self.w + col] = self.player
        return out.view_as(frame)

    def rollout(self, episodes: int, frames: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Codes (E, T, h, w) and uniformly random actions (E, T-1) of `episodes` episodes."""
        g = torch.Generator().manual_seed(seed)
        background = torch.randint(0, self.player, (episodes,), generator=g)
        cell = torch.randint(0, self.h * self.w, (episodes,), generator=g)
        first = background[:, None].repeat(1, self.h * self.w)  # (E, N)
        first[torch.arange(episodes), cell] = self.player
        actions = torch.randint(0, self.num_actions, (episodes, frames - 1), generator=g)
        clip = [first.view(episodes, self.h, self.w)]
        for t in range(frames - 1):
            clip.append(self.step(clip[-1], actions[:, t]))
        return torch.stack(clip, dim=1), actions


@pytest.fixture(scope="session")
def token_world() -> TokenWorld:
    return TokenWorld()
