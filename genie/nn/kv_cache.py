"""Temporal key/value cache for incremental (frame by frame) decoding of an ST stack."""

from __future__ import annotations

import torch
from torch import Tensor


class KVCache:
    """Per-layer temporal keys and values of the past frames.

    Dimensions: B batch, N tokens per frame, H heads, L cached frames, Dh head width.
    keys[l] and values[l] are (B*N, H, L, Dh), or None before the first frame; keys are stored
    already rotated by their absolute frame index, so they stay valid when the window slides.

    `window` W is the number of frames a query attends to, itself included, the same W as
    `STTransformer.forward(window=W)`; the cache therefore keeps at most W-1 past frames, all a
    new frame needs. None keeps everything. `position` is the absolute index of the next frame.

    Tensors are replaced on append, never written in place, so `clone()` shares them and a
    snapshot costs no memory.
    """

    def __init__(self, depth: int, window: int | None = None):
        if window is not None and window < 1:
            raise ValueError(f"cache window must be at least 1 frame, got {window}")
        self.window = window
        self.keys: list[Tensor | None] = [None] * depth
        self.values: list[Tensor | None] = [None] * depth
        # Counted per layer so that a block used on its own keeps count; a stack keeps them equal.
        self.frames_seen = [0] * depth

    @property
    def depth(self) -> int:
        return len(self.keys)

    @property
    def position(self) -> int:
        """Absolute frame index of the next frame."""
        if len(set(self.frames_seen)) > 1:
            raise RuntimeError(
                f"KV cache layers disagree on frames seen ({self.frames_seen}): a forward pass "
                "was interrupted; restore a snapshot taken with clone()"
            )
        return self.frames_seen[0]

    def __len__(self) -> int:
        """Frames held (at most window - 1)."""
        k = self.keys[0]
        return 0 if k is None else k.shape[-2]

    def past(self, layer: int) -> tuple[Tensor, Tensor] | None:
        """Cached (keys, values) of `layer`, each (B*N, H, L, Dh), or None when empty."""
        if self.keys[layer] is None:
            return None
        return self.keys[layer], self.values[layer]

    def append(self, layer: int, k: Tensor, v: Tensor) -> None:
        """Add keys/values (B*N, H, T_new, Dh) of new frames; the oldest beyond W-1 drop out."""
        self.frames_seen[layer] += k.shape[-2]
        if self.keys[layer] is not None:
            k = torch.cat([self.keys[layer], k], dim=-2)  # (B*N, H, L + T_new, Dh)
            v = torch.cat([self.values[layer], v], dim=-2)
        keep = k.shape[-2] if self.window is None else self.window - 1
        self.keys[layer], self.values[layer] = _last_frames(k, keep), _last_frames(v, keep)

    def crop(self, frames: int) -> None:
        """Keep only the last `frames` frames in every layer; positions keep counting."""
        if frames < 0:
            raise ValueError(f"cannot crop the cache to {frames} frames")
        for layer in range(self.depth):
            if self.keys[layer] is not None:
                self.keys[layer] = _last_frames(self.keys[layer], frames)
                self.values[layer] = _last_frames(self.values[layer], frames)

    def clone(self) -> KVCache:
        """An independent snapshot; tensors are shared, which is safe as none is mutated."""
        new = KVCache(self.depth, self.window)
        new.keys, new.values = list(self.keys), list(self.values)
        new.frames_seen = list(self.frames_seen)
        return new

    def repeat(self, times: int) -> KVCache:
        """A cache for `times` copies of each batch row, b-major as the (B*N) fold is."""
        new = self.clone()
        new.keys = [None if k is None else k.repeat(times, 1, 1, 1) for k in self.keys]
        new.values = [None if v is None else v.repeat(times, 1, 1, 1) for v in self.values]
        return new


def _last_frames(x: Tensor, frames: int) -> Tensor:
    # Slicing with -0 would keep everything, hence the explicit start.
    return x[..., max(0, x.shape[-2] - frames) :, :]
