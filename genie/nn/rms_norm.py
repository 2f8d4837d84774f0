"""RMS norm with its backward written out: the query/key norm of every attention layer."""

from __future__ import annotations

import torch
from torch import Tensor


def rms_norm(x: Tensor, weight: Tensor, eps: float = 1e-6) -> Tensor:
    """x * rsqrt(mean(x², last dim) + eps) * weight; `weight` broadcasts against x.

    The same function as `F.rms_norm(x, ...) * weight`. torch's CPU kernel is a composite
    of casts and small elementwise passes, forward and backward, and at the heads of 16-32
    channels of the tiny models the query/key norm took a fifth of a LAM training step. Here
    the forward is one reduction and two products, the backward six passes. In fp32, as
    SelfAttention runs it, bf16 training steps took (medians, alternating in one process)
    465.6 against 511.7 ms (dynamics), 211.8 against 222.5 (tokenizer), 91.6 against 93.5
    (LAM). Give it fp32 inputs (in bf16 its broadcast products over 16 channels are slower
    than torch's kernel) and the weight in x's dtype: the output keeps x's dtype, as its
    passes write in place where they can. A pass into a buffer just read is faster than one
    into fresh memory, and that made bf16 training steps 176.6 against 183.4 ms (tokenizer),
    93.5 against 94.9 (LAM) and 438.6 against 451.2 (dynamics).
    """
    return _RMSNorm.apply(x, weight, eps)


class _RMSNorm(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: Tensor, weight: Tensor, eps: float) -> Tensor:
        acc = torch.promote_types(x.dtype, torch.float32)  # never sum squares in bf16
        norm = torch.linalg.vector_norm(x, dim=-1, keepdim=True, dtype=acc)
        inv = torch.rsqrt(norm.square_().div_(x.shape[-1]).add_(eps))  # (..., 1)
        ctx.save_for_backward(x, weight, inv)
        return torch.mul(x, inv.to(x.dtype)).mul_(weight)

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[Tensor, Tensor, None]:
        # y = x r w with r = (mean(x²) + eps)^-1/2, so dr/dx = -r³ x / D and
        # dx = g w r - x r³ (Σ g w x) / D;  dw = Σ over the broadcast dims of g x r.
        x, weight, inv = ctx.saved_tensors
        g_inv = grad * inv.to(grad.dtype)
        g_x_inv = g_inv * x
        grad_weight = g_x_inv.sum_to_size(weight.shape)
        if grad_weight is g_x_inv:  # nothing was summed: keep it from the product below
            grad_weight = grad_weight.clone()
        dot = g_x_inv.mul_(weight).sum(-1, keepdim=True, dtype=inv.dtype)  # r Σ g w x
        coef = (dot * inv.square() / x.shape[-1]).to(x.dtype)
        grad_x = g_inv.mul_(weight).addcmul_(x, coef, value=-1)
        return grad_x, grad_weight, None
