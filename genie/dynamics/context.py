"""What a sampler carries from frame to frame, whatever the backend: the base of both samplers.

Dimensions: B batch, T' frames kept, h×w token grid, N = h*w tokens per frame.

A sampler keeps the last frames as its model reads them (codes for MaskGIT, noised latents for
the DiT), the action leading into each, the absolute position of the next frame, the KV cache
and its random stream. `ContextSampler` holds that bookkeeping, the snapshots and the frame
loop; a backend adds only how a frame is sampled and how a frame enters the context.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch
from torch import Tensor

from genie.nn import KVCache


@dataclass(frozen=True)
class SamplerState:
    """Everything the next frame depends on, for snapshot and restore (undo, previews)."""

    frames: Tensor  # (B, T', N, ...) the last T' < receptive field frames as the model reads them
    actions: Tensor  # (B, T') the action leading into each of them
    position: int  # absolute index of the next frame
    cache: KVCache | None
    rng: Tensor  # the generator's state
    # The last frame (B, N, ...) and its action (B,), kept but not yet in the cache.
    pending: tuple[Tensor, Tensor] | None = None
    copies: int = 1  # the batch is this many copies of B / copies rows (see repeat)

    def repeat(self, times: int) -> SamplerState:
        """`times` copies of every batch row (previews of several actions from one state).

        Every copy gets the random draws the rows would get on their own, so the preview of an
        action is the frame that stepping with it gives."""
        def rows(x: Tensor) -> Tensor:
            return x.repeat((times,) + (1,) * (x.dim() - 1))

        pending = None if self.pending is None else (rows(self.pending[0]), rows(self.pending[1]))
        return dataclasses.replace(
            self, frames=rows(self.frames), actions=rows(self.actions), pending=pending,
            cache=None if self.cache is None else self.cache.repeat(times),
            copies=self.copies * times)


class ContextSampler:
    """Generates the codes of one frame per action, carrying the context along.

    sampler.reset(prompt_codes, prompt_actions)   # (B, t, h, w), (B, t-1) or None when t = 1
                                                   # (a DiT on encoder latents: (B, t, N, C))
    codes = sampler.next_frame(action)             # action: int or (B,) -> codes (B, h, w)
    snap = sampler.state(); ...; sampler.load_state(snap)  # rewind, exactly

    A backend defines `_context` (codes -> frames as the model reads them), `_prefill` (the
    prompt into the cache), `_sample_frame` (the next frame's codes) and, if it uses `_flush`,
    `_commit` (one finished frame into the cache).

    A finished frame enters the cache only when the next one is sampled: it stays `_pending`
    until then, so a backend can commit it in the same pass as its first step on the next
    frame (`_take_pending`), or commit it first (`_flush`). Either way the frames are the same.
    """

    def __init__(self, model, settings):
        self.model = model
        self.settings = settings
        # On the model's device: CUDA sampling needs a CUDA generator.
        self.generator = torch.Generator(device=model.device).manual_seed(settings.seed)
        self._frames: Tensor | None = None  # (B, T', N, ...), see SamplerState
        self._actions: Tensor | None = None  # (B, T')
        self._position = 0
        self._cache: KVCache | None = None
        self._pending: tuple[Tensor, Tensor] | None = None
        self._copies = 1  # see SamplerState.repeat

    @property
    def position(self) -> int:
        """Absolute index of the next frame (frames given or generated so far)."""
        return self._position

    @torch.no_grad()
    def reset(self, tokens: Tensor, actions: Tensor | None = None, seed: int | None = None) -> None:
        """Start from prompt codes (B, t, h, w) (or, for a DiT on encoder latents, the
        tokenizer's latents (B, t, N, C)) and the t-1 actions between them (None if t=1).

        `seed` reseeds the generator; left out, the random stream continues.
        """
        model = self.model
        b, t = tokens.shape[:2]
        if actions is None:
            if t > 1:
                raise ValueError(f"a prompt of {t} frames needs its actions")
            actions = torch.zeros(b, 0, dtype=torch.long, device=model.device)
        frame_actions = model.frame_actions(actions.to(model.device).long(), t)
        if seed is not None:
            self.generator.manual_seed(seed)
        self._copies = 1
        frames = self._context(tokens.to(model.device))  # (B, t, N, ...)
        self._cache, self._pending = None, None
        if self.settings.use_cache:
            self._cache = model.new_cache()
            self._prefill(frames, frame_actions)
        self._position = t
        self._keep(frames, frame_actions)

    def state(self) -> SamplerState:
        """A snapshot; cheap, as the cache shares its tensors (none is modified in place)."""
        self._require_context()
        cache = None if self._cache is None else self._cache.clone()
        return SamplerState(self._frames, self._actions, self._position, cache,
                            self.generator.get_state(), self._pending, self._copies)

    def load_state(self, state: SamplerState) -> None:
        """Rewind to a snapshot; the same snapshot can be loaded any number of times."""
        self._frames, self._actions, self._position = state.frames, state.actions, state.position
        self._cache = None if state.cache is None else state.cache.clone()
        self._pending, self._copies = state.pending, state.copies
        self.generator.set_state(state.rng)

    @torch.no_grad()
    def next_frame(self, action: int | Tensor) -> Tensor:
        """Sample the codes (B, h, w) of the frame that `action` (int or (B,)) leads to."""
        self._require_context()
        b = self._frames.shape[0]
        action = torch.as_tensor(action, device=self._frames.device).long().expand(b)  # (B,)
        codes, sample = self._sample_frame(action)  # (B, N), (B, N, ...)
        frame = self._context(sample[:, None])[:, 0]  # (B, N, ...)
        if self._cache is not None:
            self._pending = (frame, action)
        self._position += 1
        self._keep(torch.cat([self._frames, frame[:, None]], dim=1),
                   torch.cat([self._actions, action[:, None]], dim=1))
        cfg = self.model.config
        return codes.view(b, cfg.grid_h, cfg.grid_w)

    # ------------------------------------------------------------------ a backend's part

    def _context(self, codes: Tensor) -> Tensor:
        """Codes (B, t, h, w) or (B, t, N), or what `_sample_frame` returns beside them, ->
        the frames (B, t, N, ...) the context holds."""
        raise NotImplementedError

    def _prefill(self, frames: Tensor, frame_actions: Tensor) -> None:
        """Commit the prompt's frames (B, t, N, ...) and actions (B, t) to the empty cache."""
        raise NotImplementedError

    def _commit(self, frame: Tensor, action: Tensor) -> None:
        """Append the finished frame (B, N, ...) that `action` (B,) led to to the cache."""
        raise NotImplementedError

    def _sample_frame(self, action: Tensor) -> tuple[Tensor, Tensor]:
        """The codes (B, N) of the frame that `action` (B,) leads to, and the sample `_context`
        turns into the frame the context holds (the codes themselves, or latents)."""
        raise NotImplementedError

    # ------------------------------------------------------------------ bookkeeping

    def _draw(self, shape: tuple[int, ...], normal: bool = False) -> Tensor:
        """Uniform (or normal) draws of `shape` (B, ...) from the sampler's stream. A batch of
        copies (SamplerState.repeat) draws for one copy and repeats it, as that copy alone
        would draw them."""
        one = (shape[0] // self._copies, *shape[1:])
        draw = torch.randn if normal else torch.rand
        x = draw(one, generator=self.generator, device=self.generator.device)
        return x if self._copies == 1 else x.repeat(self._copies, *(1,) * (len(shape) - 1))

    def _take_pending(self) -> tuple[Tensor, Tensor] | None:
        """The frame and action waiting to enter the cache, for the caller to commit now."""
        pending, self._pending = self._pending, None
        return pending

    def _flush(self) -> None:
        """Commit the pending frame, if any, on its own."""
        pending = self._take_pending()
        if pending is not None:
            self._commit(*pending)

    def _keep(self, frames: Tensor, actions: Tensor) -> None:
        # The next frame plus these fill the receptive field: older frames cannot matter.
        keep = self.model.receptive_field - 1
        self._frames, self._actions = frames[:, -keep:], actions[:, -keep:]  # (B, T', ...)

    def _require_context(self) -> None:
        if self._frames is None:
            raise RuntimeError("the sampler has no context yet: call reset(prompt_codes) first")
