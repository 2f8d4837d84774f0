"""Position information: 2-D spatial embeddings inside a frame, rotary positions along time."""

from __future__ import annotations

import torch
from torch import Tensor, nn


def sincos_2d(h: int, w: int, dim: int) -> Tensor:
    """Fixed sine-cosine embeddings (h*w, dim) of an h x w grid, row-major like the tokens.

    Half the channels encode the row and half the column, each as sin/cos pairs over
    geometrically spaced frequencies (as in MAE / ViT).
    """
    if dim % 4:
        raise ValueError(f"sincos_2d needs dim divisible by 4, got {dim}")
    omega = 1.0 / 10000 ** (torch.arange(dim // 4, dtype=torch.float64) / (dim // 4))
    rows, cols = torch.meshgrid(
        torch.arange(h, dtype=torch.float64), torch.arange(w, dtype=torch.float64), indexing="ij"
    )
    parts = []
    for grid in (rows.reshape(-1), cols.reshape(-1)):
        angles = grid[:, None] * omega[None, :]  # (h*w, dim/4)
        parts += [angles.sin(), angles.cos()]
    return torch.cat(parts, dim=1).float()  # (h*w, dim)


class SpatialPosEmb(nn.Module):
    """Adds a position embedding to each of the N = h*w tokens of every frame.

    Shapes: x (B, T, N, D) -> (B, T, N, D). `learned=False` gives fixed 2-D sin-cos values,
    which are recomputed rather than saved with the weights.
    """

    def __init__(self, h: int, w: int, dim: int, learned: bool = True):
        super().__init__()
        self.h, self.w = h, w
        if learned:
            self.emb = nn.Parameter(torch.randn(h * w, dim) * 0.02)
        else:
            self.register_buffer("emb", sincos_2d(h, w, dim), persistent=False)

    def forward(self, x: Tensor) -> Tensor:
        if x.shape[-2] != self.emb.shape[0]:
            raise ValueError(
                f"input has {x.shape[-2]} tokens per frame but the position embedding was "
                f"built for a {self.h}x{self.w} grid ({self.emb.shape[0]} tokens)"
            )
        return x + self.emb.to(x.dtype)


class RotaryEmbedding(nn.Module):
    """Rotary position embedding (RoPE) along one axis, here time.

    Rotating q and k by their absolute positions makes q.k depend only on the offset between
    them. Angles are computed on the fly from integer positions, so there is no maximum
    length. Shapes: x (..., L, Dh), positions (L,) integers -> (..., L, Dh).
    """

    def __init__(self, head_dim: int, base: float = 10000.0):
        super().__init__()
        if head_dim % 2:
            raise ValueError(f"rotary embedding needs an even head_dim, got {head_dim}")
        self.head_dim, self.base = head_dim, base

    def forward(self, x: Tensor, positions: Tensor) -> Tensor:
        # Frequencies and angles are made here in fp32, not kept in a buffer that model.to(bf16)
        # would round: bf16 cannot resolve the angles of frames far into a session.
        exponents = torch.arange(0, self.head_dim, 2, device=x.device, dtype=torch.float32)
        inv_freq = self.base ** (-exponents / self.head_dim)  # (Dh/2,)
        angles = positions.to(torch.float32)[:, None] * inv_freq[None, :]  # (L, Dh/2)
        cos, sin = angles.cos(), angles.sin()
        # Pairs (x1[i], x2[i]), GPT-NeoX layout, rotate to (x1 cos - x2 sin, x2 cos + x1 sin),
        # that is x * [cos, cos] + swap(x) * [-sin, sin] with swap exchanging the halves.
        out = _Rotate.apply(x.float(), torch.cat([cos, cos], -1), torch.cat([-sin, sin], -1))
        return out.to(x.dtype)


class _Rotate(torch.autograd.Function):
    """x * cos + swap(x) * sin, and in backward g * cos + swap(g) * swap(sin), each as one
    swapped copy and two passes in place. Autograd through the same expression takes five
    passes back: a tokenizer training step took 191.0 instead of 199.9 ms and a dynamics step
    488.0 instead of 507.9 (bf16, 2 cores, medians alternating in one process)."""

    @staticmethod
    def forward(ctx, x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
        ctx.save_for_backward(cos, sin)
        return _swap_halves(x).mul_(sin).addcmul_(x, cos)

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[Tensor, None, None]:
        cos, sin = ctx.saved_tensors
        return _swap_halves(grad).mul_(_swap_halves(sin)).addcmul_(grad, cos), None, None


def _swap_halves(x: Tensor) -> Tensor:
    first, second = x.chunk(2, dim=-1)
    return torch.cat([second, first], dim=-1)
