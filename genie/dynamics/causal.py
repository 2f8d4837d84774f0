"""What both dynamics models share: frames in time order, each conditioned on the action leading
into it, under temporal attention banded to `context` frames.

Dimensions: B batch, T frames, h×w token grid, N = h*w tokens per frame.

Action alignment: action t is the transition from frame t to frame t+1, so it conditions
frame t+1; frame 0 gets a learned "no action" embedding (id A, the number of actions). Wherever
a model takes `actions` it accepts either
  (B, T-1): the clip starts an episode, frame 0 gets "no action", or
  (B, T):   actions[:, i] leads into frame i, for windows cut from a longer rollout
            (actions[:, 0] may be `no_action`).
"""

from __future__ import annotations

import torch
from torch import Tensor

from genie.nn import KVCache


def check_context(context: int) -> None:
    """Refuse a temporal window too short to hold a past frame beside the next one."""
    if context < 2:
        raise ValueError(f"context must hold at least 2 frames (past and next), got {context}")


class CausalDynamics:
    """Mixin for a dynamics model with `config` (grid_h, grid_w, depth, context), `no_action`
    and an ST `transformer`."""

    @property
    def tokens_per_frame(self) -> int:
        return self.config.grid_h * self.config.grid_w

    def frame_actions(self, actions: Tensor, frames: int) -> Tensor:
        """(B, T-1) or (B, T) actions -> (B, T), the action leading into each frame."""
        if actions.shape[1] == frames - 1:
            start = actions.new_full((actions.shape[0], 1), self.no_action)
            return torch.cat([start, actions], dim=1)  # (B, T)
        if actions.shape[1] == frames:
            return actions
        raise ValueError(
            f"{frames} frames need {frames - 1} actions (one per transition), or {frames} when "
            f"the first frame continues a rollout; got {actions.shape[1]}"
        )

    @property
    def receptive_field(self) -> int:
        """Frames that can influence a frame's output, itself included: depth * (context-1) + 1.

        Passing that many frames to the uncached path reproduces the whole history exactly.
        """
        return self.config.depth * (self.config.context - 1) + 1

    def new_cache(self) -> KVCache:
        """An empty KV cache that slides over the last `context` frames."""
        return self.transformer.new_cache(window=self.config.context)

    @staticmethod
    def _require_empty(cache: KVCache) -> None:
        if cache.position != 0:
            raise ValueError("prefill starts an episode: give it an empty cache (new_cache())")
