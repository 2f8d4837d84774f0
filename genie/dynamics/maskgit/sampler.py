"""MaskGIT sampling of one frame at a time from a MaskGITDynamics model.

Dimensions: B batch, T frames, h×w token grid, N = h*w tokens per frame, K codebook size.

Each new frame starts fully masked. Every iteration predicts all masked tokens, samples them,
and keeps the most confident, so that the share still masked follows the cosine schedule
cos(pi/2 * s/S); the last iteration fills in the rest (Chang et al., MaskGIT, 2022). With the
KV cache on, an iteration costs one pass over the new frame's N tokens; with it off, the same
code recomputes the history (only the model's receptive field of it, which is exact).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from genie.dynamics.context import ContextSampler
from genie.dynamics.maskgit.model import MaskGITDynamics
from genie.errors import GenieError


@dataclass
class SamplerSettings:
    """How frames are sampled; the defaults serve play, generation and evaluation alike."""

    steps: int = 8  # MaskGIT iterations per frame
    temperature: float = 1.0  # 0 picks the most likely code
    top_k: int | None = None  # sample among the k most likely codes only
    top_p: float | None = None  # ... or among the smallest set holding this much probability
    # Scale of the Gumbel noise on the confidences, annealed to 0 over the iterations (MaskGIT's
    # "choice temperature"): early on it spreads the revealed tokens over the frame.
    confidence_noise: float = 1.0
    use_cache: bool = True
    seed: int = 0

    def __post_init__(self) -> None:
        if self.steps < 1:
            raise GenieError(f"MaskGIT needs at least 1 step per frame, got {self.steps}")
        if self.temperature < 0:
            raise GenieError(f"temperature must be >= 0, got {self.temperature}")
        if self.top_p is not None and not 0 < self.top_p <= 1:
            raise GenieError(f"top_p must be in (0, 1], got {self.top_p}")
        if self.confidence_noise < 0:
            raise GenieError(f"confidence_noise must be >= 0, got {self.confidence_noise}")
        if self.top_k is not None and self.top_k < 1:
            raise GenieError(f"top_k must be at least 1, got {self.top_k}")


def cosine_masked(step: int, steps: int, n: int) -> int:
    """Tokens still masked after iteration `step` (0-based) of `steps`, out of n."""
    return math.floor(n * math.cos(math.pi / 2 * (step + 1) / steps))


def filter_logits(logits: Tensor, top_k: int | None, top_p: float | None) -> Tensor:
    """Set logits (..., K) outside the top-k / top-p (nucleus) set to -inf."""
    if top_k is not None and top_k < logits.shape[-1]:
        kth = logits.topk(top_k, dim=-1).values[..., -1:]  # (..., 1)
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p is not None and top_p < 1:
        sorted_logits, order = logits.sort(dim=-1, descending=True)
        probs = sorted_logits.softmax(-1)
        # Drop a code when the more likely ones already hold top_p: the first is always kept.
        drop = probs.cumsum(-1) - probs >= top_p
        logits = logits.masked_fill(drop.scatter(-1, order, drop), float("-inf"))
    return logits


class MaskGITSampler(ContextSampler):
    """Samples each frame by MaskGIT iterations; the context is the frames' codes (B, T', N).

    sampler = MaskGITSampler(model, SamplerSettings(seed=0)), then reset / next_frame / state /
    load_state as every ContextSampler.
    """

    def __init__(self, model: MaskGITDynamics, settings: SamplerSettings | None = None):
        super().__init__(model, settings or SamplerSettings())

    def _context(self, codes: Tensor) -> Tensor:
        return self.model.flat_codes(codes)  # (B, t, N): MaskGIT reads the codes themselves

    def _prefill(self, frames: Tensor, frame_actions: Tensor) -> None:
        self.model.prefill(frames, frame_actions, self._cache)

    def _sample_frame(self, action: Tensor) -> tuple[Tensor, Tensor]:
        """The codes (B, N) of the frame that `action` (B,) leads to, by the cosine schedule
        (twice: they are also what the context holds).

        Only the M tokens still masked get logits, as rows (B, M) of token indices in
        ascending order; the random draws are made for all N tokens and picked at those rows,
        so the frames do not depend on that economy.
        """
        cfg, model = self.settings, self.model
        b, n = self._frames.shape[0], self._frames.shape[2]
        device = self._frames.device
        frame = torch.full((b, n), model.mask_id, dtype=torch.long, device=device)
        rows = torch.arange(n, device=device).expand(b, n)  # (B, M), every row the same M
        for step in range(cfg.steps):
            logits = self._logits(frame, action, rows)  # (B, M, K)
            codes = self._sample(logits, rows)  # (B, M)
            sampled = frame.scatter(1, rows, codes)
            count = min(cosine_masked(step, cfg.steps, n), rows.shape[1] - 1)
            if step == cfg.steps - 1 or count <= 0:
                break
            # Confidence: log-probability of the sampled code, plus Gumbel noise that fades to
            # nothing by the last step; known tokens are never masked again.
            # (log_softmax would write out all K log-probabilities to read one per token.)
            picked = logits.gather(-1, codes[..., None])[..., 0]  # (B, M)
            confidence = picked - logits.logsumexp(-1)
            noise = cfg.confidence_noise * (1 - (step + 1) / cfg.steps)
            if noise > 0:
                confidence = confidence + noise * self._gumbel((b, n)).gather(1, rows)
            lowest = confidence.argsort(dim=-1, stable=True)[:, :count]  # (B, count)
            rows = rows.gather(1, lowest).sort(dim=-1).values
            frame = sampled.scatter(1, rows, model.mask_id)
        return sampled, sampled

    def _logits(self, frame: Tensor, action: Tensor, rows: Tensor) -> Tensor:
        """Logits (B, M, K) at tokens `rows` (B, M) of the frame being sampled, through the
        cache (the first iteration also commits the frame before) or recomputed."""
        if self._cache is not None:
            return self.model.next_logits(frame, action, self._cache, rows=rows,
                                          pending=self._take_pending())
        tokens = torch.cat([self._frames, frame[:, None]], dim=1)  # (B, T'+1, N)
        actions = torch.cat([self._actions, action[:, None]], dim=1)  # (B, T'+1)
        start = self._position - self._frames.shape[1]
        logits = self.model.logits(tokens, actions, start=start)[:, -1]  # (B, N, K)
        return logits.gather(1, rows[..., None].expand(-1, -1, logits.shape[-1]))

    def _sample(self, logits: Tensor, rows: Tensor) -> Tensor:
        """Codes (B, M) drawn from logits (B, M, K) of tokens `rows` (B, M) with temperature,
        top-k and top-p."""
        cfg = self.settings
        if cfg.temperature == 0:
            return logits.argmax(-1)
        logits = filter_logits(logits / cfg.temperature, cfg.top_k, cfg.top_p)
        # Inverse-CDF sampling: 30x faster than torch.multinomial over 1024 codes on a CPU, where
        # multinomial's exponential draws took a quarter of a world step. Scaling u by the total
        # keeps float round-off from landing past the last code; `right=True` never picks a
        # code of probability 0 (filtered out), whose cumulative sum equals its predecessor's.
        cdf = logits.softmax(-1).cumsum(-1)  # (B, M, K)
        b, n = rows.shape[0], self._frames.shape[2]
        u = self._draw((b, n)).gather(1, rows)
        return torch.searchsorted(cdf, u[..., None] * cdf[..., -1:], right=True)[..., 0]

    def _gumbel(self, shape: tuple[int, ...]) -> Tensor:
        return -torch.log(-torch.log(self._draw(shape).clamp_min(1e-20)))
