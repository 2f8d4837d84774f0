"""Denoising one frame at a time from a DiTDynamics model.

Dimensions: B batch, T frames, h×w token grid, N = h*w tokens per frame, C code width.

Each new frame starts as Gaussian noise and is integrated from level 1 to 0 in `steps` Euler
steps of the rectified-flow ODE (diffusers' FlowMatchEulerDiscreteScheduler makes the grid and
takes the steps: every row of a batch is at the same level, which is all its step function
handles). Past frames are held at a small fixed level `context_noise`: the finished frame is
snapped to its codes, turned back into a latent (on encoder latents: kept, put back on the
sphere), noised at that level with seeded noise, and committed. The model was trained on
noisy context (diffusion forcing), so a slightly wrong sample is read as noise to see through
rather than as fact to copy: the stabilisation Oasis and GameNGen rely on for long rollouts.

With the KV cache on, a denoising step costs one pass over the new frame's N tokens, plus one
pass per frame to commit it; off, the same code recomputes the model's receptive field.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from diffusers import FlowMatchEulerDiscreteScheduler
from torch import Tensor

from genie.dynamics.context import ContextSampler
from genie.dynamics.dit.model import DiTDynamics
from genie.errors import GenieError


@dataclass
class DiTSettings:
    """How frames are sampled; the defaults serve play, generation and evaluation alike."""

    steps: int = 8  # Euler steps per frame
    context_noise: float = 0.1  # noise level the context frames are held at
    # SD3's timestep shift: > 1 spends more of the steps at high noise, where the frame's layout
    # is decided; 1 is an even grid.
    shift: float = 1.0
    use_cache: bool = True
    seed: int = 0

    def __post_init__(self) -> None:
        if self.steps < 1:
            raise GenieError(f"the DiT needs at least 1 denoising step per frame, got {self.steps}")
        if not 0 <= self.context_noise < 1:
            raise GenieError(f"context_noise is a noise level in [0, 1), got {self.context_noise}")
        if self.shift <= 0:
            raise GenieError(f"shift must be positive, got {self.shift}")


class DiTSampler(ContextSampler):
    """Samples each frame by denoising; the context holds latents (B, T', N, C), lightly noised.

    sampler = DiTSampler(model, DiTSettings(seed=0)), then reset / next_frame / state /
    load_state as every ContextSampler.
    """

    def __init__(self, model: DiTDynamics, settings: DiTSettings | None = None):
        super().__init__(model, settings or DiTSettings())
        # Every frame sets a fresh grid, which resets the scheduler's step counter: it never
        # outlives a frame, so snapshots, taken between frames, need not hold it.
        self.scheduler = FlowMatchEulerDiscreteScheduler(shift=self.settings.shift)

    def _context(self, frames: Tensor) -> Tensor:
        """Codes (B, t, h, w) or latents (B, t, N, C) -> latents (B, t, N, C) at the context
        level, with seeded noise."""
        return self._noised(self.model.latents(frames))

    def _prefill(self, frames: Tensor, frame_actions: Tensor) -> None:
        b, t = frame_actions.shape
        self.model.prefill(frames, self._context_levels(b, t), frame_actions, self._cache)

    def _commit(self, frame: Tensor, action: Tensor) -> None:
        level = self._context_levels(len(action), 1)[:, 0]  # (B,)
        self.model.commit(frame, level, action, self._cache)

    def _sample_frame(self, action: Tensor) -> tuple[Tensor, Tensor]:
        x = self._denoise(action)  # (B, N, C)
        codes = self.model.snap(x)  # (B, N)
        return codes, x if self.model.config.latent == "encoder" else codes

    def _denoise(self, action: Tensor) -> Tensor:
        """The new frame's clean latents (B, N, C), integrated from noise at level 1 to 0."""
        self._flush()
        b, _, n, c = self._frames.shape
        x = self._draw((b, n, c), normal=True)
        scheduler = self.scheduler
        scheduler.set_timesteps(self.settings.steps, device=x.device)
        for i, t in enumerate(scheduler.timesteps):
            level = scheduler.sigmas[i].expand(b)  # (B,) the level x is at, in [0, 1]
            x = scheduler.step(self._velocity(x, level, action), t, x).prev_sample
        return x

    def _velocity(self, x: Tensor, level: Tensor, action: Tensor) -> Tensor:
        """Velocity (B, N, C) of the frame being denoised, through the cache or recomputed."""
        if self._cache is not None:
            return self.model.next_velocity(x, level, action, self._cache, commit=False)
        b, t = self._actions.shape
        latents = torch.cat([self._frames, x[:, None]], dim=1)  # (B, T'+1, N, C)
        levels = torch.cat([self._context_levels(b, t), level[:, None]], dim=1)  # (B, T'+1)
        actions = torch.cat([self._actions, action[:, None]], dim=1)  # (B, T'+1)
        start = self._position - t
        return self.model.velocity(latents, levels, actions, start=start)[:, -1]

    def _noised(self, x0: Tensor) -> Tensor:
        """Clean latents (B, T, N, C) -> the same at the context level, with seeded noise."""
        tau = self.settings.context_noise
        noise = self._draw(tuple(x0.shape), normal=True)
        return (1 - tau) * x0 + tau * noise

    def _context_levels(self, b: int, t: int) -> Tensor:
        return torch.full((b, t), self.settings.context_noise, device=self.model.device)
