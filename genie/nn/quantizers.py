"""Straight-through quantizers: normalized-codebook VQ and finite scalar quantization (FSQ).

Both map x (..., D) to (quantized (..., D), codes (...) int64, stats dict). stats["loss"] is
the term to add to the training loss (zero for FSQ); the rest are detached usage statistics.
"""

from __future__ import annotations

import math

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor, nn


def code_usage(codes: Tensor, codebook_size: int) -> dict[str, Tensor]:
    """Fraction of the K codes used in `codes`, and the perplexity of their distribution.

    Perplexity exp(entropy) is K when every code is used equally often and 1 for one code.
    """
    counts = torch.bincount(codes.reshape(-1), minlength=codebook_size).float()
    probs = counts / counts.sum().clamp_min(1)
    entropy = -(probs * probs.clamp_min(1e-12).log()).sum()
    return {"usage": (counts > 0).float().mean(), "perplexity": entropy.exp()}


NEAREST_ROWS = 2048


class VectorQuantizer(nn.Module):
    """VQ with low-dimensional, l2-normalized codes (ViT-VQGAN's factorized codes).

    Dimensions: D input width, C code width (small, e.g. 32), K codebook size, M vectors.
    x (..., D) is projected to C, l2-normalized and matched to the normalized codebook by
    cosine similarity (in fp32, also under autocast); the chosen code is projected back to D.
    Gradients pass straight through to x.

    Losses: codebook ||sg(z) - e||^2 + beta * commitment ||z - sg(e)||^2, z and e unit vectors.
    Dead codes: in training, a code unused for `restart_after` consecutive steps is set to a
    random encoder output of the current batch (drawn from torch's RNG, so seeded runs repeat).
    """

    def __init__(
        self,
        dim: int,
        codebook_size: int,
        code_dim: int = 32,
        beta: float = 0.25,
        restart_after: int | None = 100,
    ):
        super().__init__()
        self.codebook_size, self.beta, self.restart_after = codebook_size, beta, restart_after
        self.in_proj = nn.Linear(dim, code_dim) if code_dim != dim else nn.Identity()
        self.out_proj = nn.Linear(code_dim, dim) if code_dim != dim else nn.Identity()
        self.codebook = nn.Parameter(torch.randn(codebook_size, code_dim))
        self.register_buffer("steps_unused", torch.zeros(codebook_size, dtype=torch.long))

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor, dict[str, Tensor]]:
        with torch.autocast(x.device.type, enabled=False):
            z = self.unit(x)  # (..., C)
            flat = z.reshape(-1, z.shape[-1])  # (M, C)
            restarted = self._restart_dead_codes(flat.detach()) if self.training else 0
            codebook = F.normalize(self.codebook.float(), dim=-1)  # (K, C)
            codes = self.nearest(flat.detach())  # (M,)
            e = codebook[codes].view_as(z)
            codebook_loss = F.mse_loss(e, z.detach())
            commit_loss = F.mse_loss(z, e.detach())
            z_q = z + (e - z).detach()  # straight-through: forward e, backward identity to z
        codes = codes.view(z.shape[:-1])
        if self.training:
            self._count_usage(codes)
        stats = {
            "loss": codebook_loss + self.beta * commit_loss,
            "codebook_loss": codebook_loss.detach(),
            "commit_loss": commit_loss.detach(),
            "restarted": torch.tensor(float(restarted), device=x.device),
            **code_usage(codes, self.codebook_size),
        }
        return self.out_proj(z_q), codes, stats

    def unit(self, x: Tensor) -> Tensor:
        """Inputs (..., D) -> the unit vectors (..., C) matched to the codebook, in fp32."""
        return F.normalize(self.in_proj(x.float()), dim=-1)

    def nearest(self, z: Tensor) -> Tensor:
        """Unit vectors (..., C) -> the code (...) of highest cosine similarity to each."""
        codebook = F.normalize(self.codebook.float(), dim=-1).t()  # (C, K)
        flat = z.float().reshape(-1, z.shape[-1])
        # In blocks of rows: a tokenizer batch's whole (M, K) similarity matrix is 32 MiB, which
        # is fresh memory every step (above what malloc keeps, genie/malloc.py); 2048 rows at a
        # time took 8.5 ms against 20 ms for 8192 vectors and 1024 codes on 2 cores.
        codes = [(rows @ codebook).argmax(dim=-1) for rows in flat.split(NEAREST_ROWS)]
        return torch.cat(codes).view(z.shape[:-1])

    def lookup(self, codes: Tensor) -> Tensor:
        """Codes (...) -> the vectors (..., D) the forward pass would output for them."""
        return self.out_proj(F.normalize(self.codebook.float(), dim=-1)[codes])

    @torch.no_grad()
    def _count_usage(self, codes: Tensor) -> None:
        used = torch.bincount(codes.reshape(-1), minlength=self.codebook_size)
        if dist.is_available() and dist.is_initialized():
            dist.all_reduce(used)  # a code used on any rank is alive
        self.steps_unused += 1
        self.steps_unused[used > 0] = 0

    @torch.no_grad()
    def _restart_dead_codes(self, z: Tensor) -> int:
        # Done before the lookup so the parameter is not modified after autograd saved it.
        if self.restart_after is None:
            return 0
        dead = (self.steps_unused >= self.restart_after).nonzero().squeeze(1)
        if len(dead) == 0:
            return 0
        if len(z) >= len(dead):
            picks = torch.randperm(len(z), device=z.device)[: len(dead)]
        else:
            picks = torch.randint(len(z), (len(dead),), device=z.device)
        fresh = z[picks].to(self.codebook.dtype)
        if dist.is_available() and dist.is_initialized():
            dist.broadcast(fresh, src=0)  # every rank must keep the same codebook
        self.codebook[dead] = fresh
        self.steps_unused[dead] = 0
        return len(dead)


class FSQ(nn.Module):
    """Finite scalar quantization (Mentzer et al. 2023): no codebook, no codebook loss.

    Dimensions: D input width, d = len(levels) code width, K = prod(levels) codes.
    x (..., D) is projected to d channels; channel i is bounded with tanh to `levels[i]` values
    and rounded (straight-through), then scaled to [-1, 1] and projected back to D.
    `codes_to_indices` / `indices_to_codes` convert between the (..., d) grid values and
    integer indices in [0, K).
    """

    def __init__(self, levels: list[int], dim: int | None = None):
        super().__init__()
        if any(level < 2 for level in levels):
            raise ValueError(f"every FSQ level must be at least 2, got {levels}")
        self.levels = list(levels)
        self.codebook_size = math.prod(levels)
        d = len(levels)
        self.in_proj = nn.Linear(dim, d) if dim is not None and dim != d else nn.Identity()
        self.out_proj = nn.Linear(d, dim) if dim is not None and dim != d else nn.Identity()
        levels_t = torch.tensor(levels, dtype=torch.float32)
        self.register_buffer("_levels", levels_t, persistent=False)
        self.register_buffer(
            "_basis",
            torch.cumprod(torch.tensor([1] + levels[:-1], dtype=torch.long), dim=0),
            persistent=False,
        )

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor, dict[str, Tensor]]:
        with torch.autocast(x.device.type, enabled=False):
            z = self.in_proj(x.float())
            rounded = self._bound(z)
            rounded = rounded + (rounded.round() - rounded).detach()  # straight-through round
            codes = rounded / (self._levels // 2)  # (..., d) in [-1, 1]
        indices = self.codes_to_indices(codes)
        stats = {"loss": z.new_zeros(()), **code_usage(indices, self.codebook_size)}
        return self.out_proj(codes), indices, stats

    def _bound(self, z: Tensor, eps: float = 1e-3) -> Tensor:
        # Even levels get a half-step offset so that rounding yields exactly L values.
        half = (self._levels - 1) * (1 + eps) / 2
        offset = torch.where(self._levels % 2 == 0, 0.5, 0.0)
        shift = torch.atanh(offset / half)
        return torch.tanh(z + shift) * half - offset

    def codes_to_indices(self, codes: Tensor) -> Tensor:
        """Grid values (..., d) in [-1, 1] -> indices (...) in [0, K)."""
        half = self._levels // 2
        digits = (codes.float() * half + half).round().long()  # (..., d) in [0, L_i)
        return (digits * self._basis).sum(dim=-1)

    def indices_to_codes(self, indices: Tensor) -> Tensor:
        """Indices (...) in [0, K) -> grid values (..., d) in [-1, 1]."""
        digits = (indices[..., None] // self._basis) % self._levels.long()  # (..., d)
        half = self._levels // 2
        return (digits.float() - half) / half

    def lookup(self, indices: Tensor) -> Tensor:
        """Indices (...) -> the vectors (..., D) the forward pass would output for them."""
        return self.out_proj(self.indices_to_codes(indices))
