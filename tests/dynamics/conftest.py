"""A synthetic token world small enough to learn in seconds, shared by dynamics-level tests.

One "player" code moves one cell per step over a constant background code, in the direction
of the action (0 up, 1 down, 2 left, 3 right), and stays put when a wall blocks the move. The
background code and the start cell vary per episode, so a model has to read them from the
context rather than memorise them. (Walls rather than wrap-around: a wrapped move jumps
across the grid, which a transformer with learned positions needs about twice the steps to
pick up.)

Beside it, what the tests of both samplers do alike: `rollout` and `check_snapshot_replays`.
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


def _rollout(sampler, actions: list[int]) -> torch.Tensor:
    return torch.stack([sampler.next_frame(a) for a in actions], dim=1)  # (B, T, h, w)


@pytest.fixture(scope="session")
def rollout():
    """rollout(sampler, actions) -> the codes (B, T, h, w) of one frame per action."""
    return _rollout


def _check_snapshot_replays(sampler) -> None:
    """From a reset sampler: a snapshot taken after the cache has slid rewinds exactly, any
    number of times, and a different action from it gives a different rollout."""
    _rollout(sampler, [0, 1, 2])  # let the cache slide before the snapshot
    snap = sampler.state()
    first = _rollout(sampler, [1, 3])
    for action in (2, 1):  # try another branch, then undo again and replay the first
        sampler.load_state(snap)
        branch = _rollout(sampler, [action, 3])
    assert torch.equal(branch, first) and sampler.position == snap.position + 2
    sampler.load_state(snap)
    other = _rollout(sampler, [0, 3])
    assert not torch.equal(other, first)
    # A widened snapshot samples every copy from the same past (the world's previews).
    sampler.load_state(snap.repeat(4))
    cfg, b = sampler.model.config, snap.actions.shape[0]
    codes = sampler.next_frame(torch.arange(4 * b) % cfg.num_actions)
    assert codes.shape == (4 * b, cfg.grid_h, cfg.grid_w)


@pytest.fixture(scope="session")
def check_snapshot_replays():
    """check_snapshot_replays(sampler): the snapshot and restore contract of every sampler."""
    return _check_snapshot_replays
