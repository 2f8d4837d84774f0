"""Denoising one frame at a time from a DiTDynamics model.

Dimensions: B batch, T frames, h×w token grid, N = h*w tokens per frame, C code width.

Each new frame starts as Gaussian noise and is integrated from level 1 to 0 in `steps` Euler
steps of the rectified-flow ODE (diffusers' FlowMatchEulerDiscreteScheduler makes the grid and
takes the steps: every row of a batch is at the same level, which is all its step function
handles). Past frames are held at a small fixed level `context_noise`: the finished frame is
snapped to its codes, turned back into a latent, noised at that level with seeded noise, and
committed. The model was trained on noisy context (diffusion forcing), so a slightly wrong
sample is read as noise to see through rather than as fact to copy: the stabilisation Oasis
and GameNGen rely on for long rollouts.

With the KV cache on, a denoising step costs one pass over the new frame's N tokens, plus one
pass per frame to commit it; off, the same code recomputes the model's receptive field.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch
from diffusers import FlowMatchEulerDiscreteScheduler
from torch import Tensor

from genie.dynamics.dit.model import DiTDynamics
from genie.errors import GenieError
from genie.nn import KVCache


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


@dataclass(frozen=True)
class DiTState:
    """Everything the next frame depends on, for snapshot and restore (undo, previews)."""

    latents: Tensor  # (B, T', N, C) the last T' context frames as the model sees them (noised)
    actions: Tensor  # (B, T') the action leading into each of them
    position: int  # absolute index of the next frame
    cache: KVCache | None
    rng: Tensor  # the generator's state

    def repeat(self, times: int) -> DiTState:
        """`times` copies of every batch row (previews of several actions from one state)."""
        return dataclasses.replace(
            self, latents=self.latents.repeat(times, 1, 1, 1),
            actions=self.actions.repeat(times, 1),
            cache=None if self.cache is None else self.cache.repeat(times))


class DiTSampler:
    """Generates the codes of one frame per action, carrying the noised context along.

    sampler = DiTSampler(model, DiTSettings(seed=0))
    sampler.reset(prompt_codes, prompt_actions)   # (B, t, h, w), (B, t-1) or None when t = 1
    codes = sampler.next_frame(action)             # action: int or (B,) -> codes (B, h, w)
    snap = sampler.state(); ...; sampler.load_state(snap)  # rewind, exactly
    """

    def __init__(self, model: DiTDynamics, settings: DiTSettings | None = None):
        self.model = model
        self.settings = settings or DiTSettings()
        # On the model's device: CUDA sampling needs a CUDA generator.
        self.generator = torch.Generator(device=model.device).manual_seed(self.settings.seed)
        # Every frame sets a fresh grid, which resets the scheduler's step counter: it never
        # outlives a frame, so snapshots, taken between frames, need not hold it.
        self.scheduler = FlowMatchEulerDiscreteScheduler(shift=self.settings.shift)
        self._latents: Tensor | None = None  # (B, T', N, C), see DiTState
        self._actions: Tensor | None = None  # (B, T')
        self._position = 0
        self._cache: KVCache | None = None

    @property
    def position(self) -> int:
        """Absolute index of the next frame (frames given or generated so far)."""
        return self._position

    @torch.no_grad()
    def reset(self, tokens: Tensor, actions: Tensor | None = None, seed: int | None = None) -> None:
        """Start from prompt codes (B, t, h, w) and the t-1 actions between them (None if t=1).

        `seed` reseeds the generator; left out, the random stream continues.
        """
        model = self.model
        x0 = model.latents(tokens.to(model.device))  # (B, t, N, C)
        b, t = x0.shape[:2]
        if actions is None:
            if t > 1:
                raise ValueError(f"a prompt of {t} frames needs its actions")
            actions = torch.zeros(b, 0, dtype=torch.long, device=model.device)
        frame_actions = model.frame_actions(actions.to(model.device).long(), t)
        if seed is not None:
            self.generator.manual_seed(seed)
        context = self._noised(x0)
        self._cache = None
        if self.settings.use_cache:
            self._cache = model.new_cache()
            model.prefill(context, self._context_levels(b, t), frame_actions, self._cache)
        self._position = t
        self._keep(context, frame_actions)

    def state(self) -> DiTState:
        """A snapshot; cheap, as the cache shares its tensors (none is modified in place)."""
        self._require_context()
        cache = None if self._cache is None else self._cache.clone()
        return DiTState(self._latents, self._actions, self._position, cache,
                        self.generator.get_state())

    def load_state(self, state: DiTState) -> None:
        """Rewind to a snapshot; the same snapshot can be loaded any number of times."""
        self._latents, self._actions, self._position = state.latents, state.actions, state.position
        self._cache = None if state.cache is None else state.cache.clone()
        self.generator.set_state(state.rng)

    @torch.no_grad()
    def next_frame(self, action: int | Tensor) -> Tensor:
        """Sample the codes (B, h, w) of the frame that `action` (int or (B,)) leads to."""
        self._require_context()
        model = self.model
        b = self._latents.shape[0]
        action = torch.as_tensor(action, device=self._latents.device).long().expand(b)  # (B,)
        codes = model.snap(self._denoise(action))  # (B, N)
        context = self._noised(model.latents(codes[:, None]))[:, 0]  # (B, N, C)
        if self._cache is not None:
            model.next_velocity(context, self._context_levels(b, 1)[:, 0], action, self._cache,
                                commit=True)
        self._position += 1
        self._keep(torch.cat([self._latents, context[:, None]], dim=1),
                   torch.cat([self._actions, action[:, None]], dim=1))
        cfg = model.config
        return codes.view(b, cfg.grid_h, cfg.grid_w)

    def _denoise(self, action: Tensor) -> Tensor:
        """The new frame's clean latents (B, N, C), integrated from noise at level 1 to 0."""
        b, _, n, c = self._latents.shape
        x = torch.randn(b, n, c, generator=self.generator, device=self._latents.device)
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
        latents = torch.cat([self._latents, x[:, None]], dim=1)  # (B, T'+1, N, C)
        levels = torch.cat([self._context_levels(b, t), level[:, None]], dim=1)  # (B, T'+1)
        actions = torch.cat([self._actions, action[:, None]], dim=1)  # (B, T'+1)
        start = self._position - t
        return self.model.velocity(latents, levels, actions, start=start)[:, -1]

    def _noised(self, x0: Tensor) -> Tensor:
        """Clean latents (B, T, N, C) -> the same at the context level, with seeded noise."""
        tau = self.settings.context_noise
        noise = torch.randn(x0.shape, generator=self.generator, device=x0.device)
        return (1 - tau) * x0 + tau * noise

    def _context_levels(self, b: int, t: int) -> Tensor:
        return torch.full((b, t), self.settings.context_noise, device=self.model.device)

    def _keep(self, latents: Tensor, actions: Tensor) -> None:
        # The next frame plus these fill the receptive field: older frames cannot matter.
        keep = self.model.receptive_field - 1
        self._latents, self._actions = latents[:, -keep:], actions[:, -keep:]

    def _require_context(self) -> None:
        if self._latents is None:
            raise RuntimeError("the sampler has no context yet: call reset(prompt_codes) first")
