"""FLOPs of a region of torch code, attention included.

torch's FlopCounterMode has formulas for the CUDA attention kernels but not for the CPU one
(`_scaled_dot_product_flash_attention_for_cpu`), so on a CPU it counts SDPA as 0 FLOPs while
the same attention written as two matmuls counts in full. These formulas count the CPU kernel
as its matmuls: 2 products of Lq x Lk x Dh forward (scores, then values) and 4 backward
(gradients of values, probabilities, queries and keys), masked positions included, as the
matmul form computes them.
"""

from __future__ import annotations

import math

import torch
from torch.utils.flop_counter import FlopCounterMode


def _products(q_shape, k_shape) -> int:
    """Multiply-adds of one Lq x Lk x Dh product for every (batch, head): times 2 for FLOPs."""
    *batch, lq, dh = q_shape
    return 2 * math.prod(batch) * lq * k_shape[-2] * dh


def _forward(query, key, value, *args, out_shape=None, **kwargs) -> int:
    return 2 * _products(query, key)


def _backward(grad_out, query, key, value, *args, out_shape=None, **kwargs) -> int:
    return 4 * _products(query, key)


def flop_counter() -> FlopCounterMode:
    """A FlopCounterMode (not printing) that also counts the CPU attention kernel."""
    aten = torch.ops.aten
    return FlopCounterMode(display=False, custom_mapping={
        aten._scaled_dot_product_flash_attention_for_cpu: _forward,
        aten._scaled_dot_product_flash_attention_for_cpu_backward: _backward,
    })
