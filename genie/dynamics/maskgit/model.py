"""The MaskGIT dynamics model: the codes of past frames and a latent action -> the next frame.

Dimensions: B batch, T frames, h×w token grid, N = h*w tokens per frame, K codebook size (the
tokenizer's), A latent actions, D width.

Action alignment, (B, T-1) or (B, T) `actions`, the receptive field and the cache: as for
every dynamics model (genie/dynamics/causal.py).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.modeling_utils import ModelMixin
from torch import Tensor, nn

from genie.dynamics.causal import CausalDynamics, check_context
from genie.nn import KVCache, SpatialPosEmb, STTransformer

# Training masks a share r ~ U(MIN_MASK_RATE, 1) of each frame's tokens (Genie): high rates,
# because sampling starts from a fully masked frame.
MIN_MASK_RATE = 0.5


class MaskGITDynamics(CausalDynamics, ModelMixin, ConfigMixin):
    """ST transformer over token embeddings, causal in time, predicting masked tokens.

    Inputs are codes in [0, K) or the mask id K; outputs are logits (…, K) over the codebook.
    Spatial positions are learned per grid cell; temporal positions are rotary (relative), so a
    KV cache stays valid as the context window slides. The latent action of each frame enters
    every block through adaLN-Zero (a per-frame shift, scale and gate): DiT found this the best
    of the conditioning schemes it compared, and it keeps the action from being diluted to one
    additive term at the input of a deep stack.

    Training (`forward`): masked-token cross-entropy at a mask rate r ~ U(0.5, 1) per clip on
    frames k..T-1, k ~ U{1..T-1} per clip; earlier frames are given whole. Temporal attention
    is banded to `context` frames, the same window the cache keeps at sampling time.
    """

    training_only_config = ("context_noise",)

    @register_to_config
    def __init__(
        self,
        vocab_size: int = 1024,
        grid_h: int = 16,
        grid_w: int = 16,
        num_actions: int = 8,
        dim: int = 256,
        depth: int = 4,
        heads: int = 4,
        context: int = 16,
        context_noise: float = 0.0,
    ):
        super().__init__()
        check_context(context)
        if not 0.0 <= context_noise < 1.0:
            raise ValueError(f"context_noise is a probability below 1, got {context_noise}")
        self.mask_id, self.no_action = vocab_size, num_actions
        self.token_emb = nn.Embedding(vocab_size + 1, dim)  # the extra row is the mask token
        self.pos = SpatialPosEmb(grid_h, grid_w, dim)
        self.action_emb = nn.Embedding(num_actions + 1, dim)  # the extra row is "no action"
        nn.init.normal_(self.token_emb.weight, std=0.02)
        nn.init.normal_(self.action_emb.weight, std=0.02)
        self.transformer = STTransformer(dim, depth, heads, adaln=True, cond_dim=dim)
        self.head = nn.Linear(dim, vocab_size)

    # ------------------------------------------------------------------ shared pieces

    def flat_codes(self, tokens: Tensor) -> Tensor:
        """(B, T, h, w) or (B, T, N) codes -> (B, T, N)."""
        b, t = tokens.shape[:2]
        flat = tokens.reshape(b, t, -1)  # (B, T, N)
        if flat.shape[-1] != self.tokens_per_frame:
            raise ValueError(
                f"frames of {flat.shape[-1]} tokens, but the model was built for a "
                f"{self.config.grid_h}x{self.config.grid_w} grid"
            )
        return flat

    def _backbone(
        self,
        tokens: Tensor,
        frame_actions: Tensor,
        *,
        start: int | None = None,
        cache: KVCache | None = None,
        commit: bool = True,
        keep: int | None = None,
        output: bool = True,
    ) -> Tensor | None:
        """Codes (B, T, N) and per-frame actions (B, T) -> features (B, T, N, D); with
        `output=False` the frames only enter the cache, with `keep=K` only the first K do
        (STTransformer.forward)."""
        x = self.pos(self.token_emb(tokens))  # (B, T, N, D)
        cond = self.action_emb(frame_actions)  # (B, T, D)
        window = None if cache is not None else self.config.context  # a cache has its own
        return self.transformer(x, cond=cond, start=start, window=window, cache=cache,
                                commit=commit, keep=keep, output=output)

    # ------------------------------------------------------------------ training

    def forward(self, batch: tuple[Tensor, Tensor]) -> tuple[Tensor, dict]:
        """batch = (codes (B, T, h, w) int, actions (B, T-1) int) -> (loss, logs)."""
        tokens, actions = batch
        tokens = self.flat_codes(tokens)
        b, t, n = tokens.shape
        if t < 2:
            raise ValueError("training clips need at least 2 frames: one given, one to predict")
        frame_actions = self.frame_actions(actions, t)

        # ceil(r * N) tokens of each frame, as the sampler's schedule counts them; at least one,
        # so no clip is left without a target.
        rate = torch.empty(b, 1, 1, device=tokens.device).uniform_(MIN_MASK_RATE, 1)
        ranks = torch.rand(b, t, n, device=tokens.device).argsort(-1).argsort(-1)  # (B, T, N)
        mask = ranks < (rate * n).ceil()
        # Frames before a random first target k ~ U{1..T-1} are left whole. Sampling predicts a
        # frame from a fully visible past; with every frame after the first masked (Genie), the
        # model would only ever see that at k = 1. Frames after k still see masked pasts.
        first = torch.randint(1, t, (b, 1, 1), device=tokens.device)
        mask &= torch.arange(t, device=tokens.device)[None, :, None] >= first
        inputs = tokens
        if self.training and self.config.context_noise > 0:
            # Rollouts feed the model its own imperfect samples; corrupting a share of the visible
            # tokens teaches it not to copy every context token blindly.
            noisy = (torch.rand(b, t, n, device=tokens.device) < self.config.context_noise) & ~mask
            inputs = torch.where(noisy, torch.randint_like(tokens, self.config.vocab_size), inputs)
        inputs = inputs.masked_fill(mask, self.mask_id)

        h = self._backbone(inputs, frame_actions)  # (B, T, N, D)
        logits = self.head(h[mask]).float()  # (M, K), M masked tokens: the loss needs no others
        targets = tokens[mask]
        loss = F.cross_entropy(logits, targets)
        accuracy = (logits.argmax(-1) == targets).float().mean()
        return loss, {"loss": loss.detach(), "accuracy": accuracy.detach(),
                      "mask_rate": rate.mean()}

    # ------------------------------------------------------------------ inference

    def logits(self, tokens: Tensor, actions: Tensor, *, start: int = 0) -> Tensor:
        """Uncached: codes (B, T, h, w) (mask id K allowed) -> logits (B, T, N, K).

        Every frame is recomputed under the banded `context` window. `start` is the absolute
        index of tokens[:, 0] (rotary positions are relative, so it only matters for matching
        a cached run to the last bit). Frame t depends only on frames t - depth*(context-1)..t,
        so passing that many frames reproduces the whole history exactly (`receptive_field`).
        """
        tokens = self.flat_codes(tokens)
        h = self._backbone(tokens, self.frame_actions(actions, tokens.shape[1]), start=start)
        return self.head(h).float()

    @torch.no_grad()
    def prefill(self, tokens: Tensor, actions: Tensor, cache: KVCache) -> None:
        """Commit the context frames (B, t, h, w) and their actions (B, t-1) to an empty cache.

        A prompt longer than `context` is fine: the cache slides as it fills.
        """
        self._require_empty(cache)
        tokens = self.flat_codes(tokens)
        self._backbone(tokens, self.frame_actions(actions, tokens.shape[1]), cache=cache,
                       output=False)

    @torch.no_grad()
    def next_logits(
        self,
        frame: Tensor,
        action: Tensor,
        cache: KVCache,
        *,
        rows: Tensor | None = None,
        pending: tuple[Tensor, Tensor] | None = None,
    ) -> Tensor:
        """Logits (B, N, K) of the next frame's codes (B, N) or (B, h, w), mask ids allowed.

        Only the new frame is computed, against the cached past; `action` (B,) leads into it.
        `rows` (B, M) token indices limit the logits to those tokens, (B, M, K): a sampler
        needs them only where the frame is still masked, and the head over K codes is the
        widest matrix product of a pass.

        `pending` = (codes (B, N), action (B,)) of the finished frame before this one, not yet
        in the cache: it is committed in this same pass, as frame 0 of a two-frame pass whose
        frame 1 is this one. One pass over two frames costs less than two passes over one,
        and committing a frame once its successor's action is known loses nothing.
        """
        tokens = self.flat_codes(frame[:, None])  # (B, 1, N)
        actions = action[:, None]  # (B, 1)
        keep = None
        if pending is not None:
            tokens = torch.cat([self.flat_codes(pending[0][:, None]), tokens], dim=1)  # (B, 2, N)
            actions = torch.cat([pending[1][:, None], actions], dim=1)  # (B, 2)
            keep = 1
        h = self._backbone(tokens, actions, cache=cache, commit=pending is not None, keep=keep)
        h = h[:, -1]  # (B, N, D)
        if rows is not None:
            h = h.gather(1, rows[..., None].expand(-1, -1, h.shape[-1]))  # (B, M, D)
        return self.head(h).float()
