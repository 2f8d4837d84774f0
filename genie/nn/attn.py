"""Attention on (B, heads, L, head_dim) tensors with interchangeable kernels, and the layer.

Named attn.py so that genie.nn.attention stays the function, not a shadowed module.

Masks are bottom-right aligned: a query block of length Lq is the *last* Lq positions of an
Lk-long sequence, which is what a query attending to a key/value cache is.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from genie.nn.positions import RotaryEmbedding
from genie.nn.rms_norm import rms_norm

BACKENDS = ("sdpa", "xformers")

# CUDA attention kernels put batch*heads on a grid dimension capped at 65535; folded ST batches
# exceed it easily (temporal attention folds B*N: 16 clips of 32x32 tokens with 4 heads do).
MAX_BATCH_HEADS = 65535


def attention_mask(
    lq: int, lk: int, *, causal: bool, window: int | None = None, device: torch.device | None = None
) -> Tensor | None:
    """Boolean (Lq, Lk) mask, True where a query may attend, or None when nothing is masked.

    Query i sits at position lk - lq + i. Causal hides later keys; `window` W keeps only the
    W most recent keys up to and including the query's own position (a causal band).
    """
    _check_mask_args(lq, lk, causal, window)
    if not causal:
        return None
    first_query = lk - lq
    # Nothing to mask: every key precedes every query and all fit in the band.
    if lq == 1 and (window is None or lk <= window):
        return None
    q_pos = torch.arange(first_query, lk, device=device)[:, None]  # (Lq, 1)
    k_pos = torch.arange(lk, device=device)[None, :]  # (1, Lk)
    mask = k_pos <= q_pos
    if window is not None:
        mask &= k_pos > q_pos - window
    return mask


def _check_mask_args(lq: int, lk: int, causal: bool, window: int | None) -> None:
    if window is not None and not causal:
        raise ValueError("window needs causal=True: it bands a causal mask")
    if window is not None and window < 1:
        raise ValueError(f"window must be at least 1 frame, got {window}")
    if lq > lk:
        raise ValueError(f"more queries ({lq}) than keys ({lk}): queries must be the last keys")


def attention(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    *,
    causal: bool = False,
    window: int | None = None,
    backend: str = "sdpa",
    scale: float | None = None,
) -> Tensor:
    """Multi-head attention: q (B, H, Lq, Dh), k and v (B, H, Lk, Dh) -> (B, H, Lq, Dh).

    With Lq < Lk the queries are the last Lq positions (bottom-right aligned masks), so a new
    frame attends to cached keys plus itself. `window` restricts causal attention to the W
    most recent positions, the query's own included. Folded batches larger than the kernels'
    grid limit are run in chunks of at most MAX_BATCH_HEADS batch*heads.
    """
    if backend not in BACKENDS:
        raise ValueError(f"unknown attention backend {backend!r}: choose one of {BACKENDS}")
    _check_mask_args(q.shape[-2], k.shape[-2], causal, window)
    if backend == "xformers":
        kernel = _xformers_kernel()
        if not q.is_cuda:
            raise RuntimeError("attention backend 'xformers' needs CUDA tensors: use 'sdpa'")
    else:
        kernel = _sdpa
    scale = 1.0 / math.sqrt(q.shape[-1]) if scale is None else scale
    batch, heads = q.shape[:2]
    chunk = max(1, MAX_BATCH_HEADS // heads)
    if batch <= chunk:
        return kernel(q, k, v, causal=causal, window=window, scale=scale)
    outs = [
        kernel(
            q[i : i + chunk],
            k[i : i + chunk],
            v[i : i + chunk],
            causal=causal,
            window=window,
            scale=scale,
        )
        for i in range(0, batch, chunk)
    ]
    return torch.cat(outs)


# On a CPU, SDPA's fused kernel in bf16 is slower than two plain matmuls at the short sequences
# of ST attention. Forward and backward on 2 cores (AVX-512 BF16), fused vs matmuls: 32 frames of
# 256 tokens, 4 heads of 32: 47.6 vs 32.4 ms; 1024 token positions of 8 causal frames: 27.3 vs
# 7.6 ms; the LAM's 64 frames of 64 tokens, heads of 16: 20.5 vs 2.7 ms. At 1024 tokens the
# fused kernel wins (101 vs 185 ms), and in fp32 it wins at every one of these shapes.
MATMUL_MAX_KEYS = 256


def _sdpa(q: Tensor, k: Tensor, v: Tensor, *, causal: bool, window: int | None, scale: float):
    lq, lk = q.shape[-2], k.shape[-2]
    low_precision = q.dtype in (torch.bfloat16, torch.float16)
    if q.device.type == "cpu" and low_precision and lk <= MATMUL_MAX_KEYS:
        mask = attention_mask(lq, lk, causal=causal, window=window, device=q.device)
        return _matmul_attention(q, k, v, mask, scale)
    # SDPA's own is_causal is top-left aligned and lets fused kernels skip the mask tensor, so
    # use it only where top-left and bottom-right coincide (square) and the band masks nothing.
    if causal and lq == lk and (window is None or window >= lk):
        return F.scaled_dot_product_attention(q, k, v, is_causal=True, scale=scale)
    mask = attention_mask(lq, lk, causal=causal, window=window, device=q.device)
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=scale)


def _matmul_attention(q: Tensor, k: Tensor, v: Tensor, mask: Tensor | None, scale: float) -> Tensor:
    """Softmax attention as written, scores held in full: the fast form for short sequences in
    bf16 on a CPU. The softmax accumulates in fp32 inside the kernel; only its output is bf16,
    as the probabilities fed to the value product are in fused kernels."""
    return _MatmulAttention.apply(q, k, v, mask, scale)


class _MatmulAttention(torch.autograd.Function):
    """softmax(q k^T * scale, masked) v, with the softmax and its backward written over the
    score buffer they read (bit for bit what autograd through the plain expression gives).

    Autograd's softmax and its backward each fill a fresh (B, H, Lq, Lk) buffer, the largest
    tensor of the step; written in place, the pass lands in memory it has just read. bf16 steps
    alternating in one process on 2 cores, plain expression against this: tokenizer 154.5 and
    150.9 ms (faster in 9 of 12 rounds), dynamics 389.8 and 385.5 (11 of 12); the LAM (width
    96), 101.9 and 101.6 (6 of 12), unchanged.
    """

    @staticmethod
    def forward(ctx, q: Tensor, k: Tensor, v: Tensor, mask: Tensor | None, scale: float):
        q = q * scale
        probs = q @ k.transpose(-1, -2)  # (B, H, Lq, Lk) scores, softmaxed in place
        if mask is not None:
            probs.masked_fill_(~mask, float("-inf"))
        torch.softmax(probs, -1, out=probs)
        ctx.save_for_backward(q, k, v, probs)
        ctx.scale = scale
        return probs @ v

    @staticmethod
    def backward(ctx, grad: Tensor):
        q, k, v, probs = ctx.saved_tensors
        grad_scores = grad @ v.transpose(-1, -2)  # gradient of the probabilities, then in place
        torch.ops.aten._softmax_backward_data.out(  # of the scores
            grad_scores, probs, -1, probs.dtype, grad_input=grad_scores)
        grad_q = (grad_scores @ k).mul_(ctx.scale)
        grad_k = grad_scores.transpose(-1, -2) @ q
        grad_v = probs.transpose(-1, -2) @ grad
        return grad_q, grad_k, grad_v, None, None


def use_attention_backend(model: nn.Module, backend: str) -> None:
    """Run every SelfAttention of `model` through `backend`. A setting of the run (run.attention),
    not of the saved model: the same weights train or play through either kernel."""
    if backend not in BACKENDS:
        raise ValueError(f"unknown attention backend {backend!r}: choose one of {BACKENDS}")
    for module in model.modules():
        if isinstance(module, SelfAttention):
            module.backend = backend


def _xformers_kernel():
    try:
        from xformers.ops import fmha
    except ImportError:
        raise RuntimeError(
            "attention backend 'xformers' needs the xformers package "
            "(pip install 'genie[gpu]') or use backend='sdpa'"
        ) from None

    def kernel(
        q: Tensor, k: Tensor, v: Tensor, *, causal: bool, window: int | None, scale: float
    ) -> Tensor:
        if window is not None:
            bias = fmha.attn_bias.LowerTriangularFromBottomRightLocalAttentionMask(window)
        elif causal:
            bias = fmha.attn_bias.LowerTriangularFromBottomRightMask()
        else:
            bias = None
        # xformers wants (B, L, H, Dh); transposed views keep head_dim contiguous, as it needs.
        out = fmha.memory_efficient_attention(
            q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), attn_bias=bias, scale=scale
        )
        return out.transpose(1, 2)  # (B, H, Lq, Dh)

    return kernel


# Up to this many new frames attend to a cache by broadcast products (below), whose memory grows
# with new frames x cached frames; more go through SDPA on the concatenated keys.
FEW_QUERIES = 4


def _few_queries_with_past(
    q: Tensor, k: Tensor, v: Tensor, past_k: Tensor, past_v: Tensor, window: int | None
) -> Tensor:
    """Causal attention of a few new queries (B, H, Lq, Dh) over cached keys (B, H, L, Dh)
    plus the new keys (B, H, Lq, Dh), the queries being the last Lq positions.

    Scores against the cache and against the new keys are joined before the softmax, so the
    cache is never concatenated: on a CPU that copy made a cached temporal attention 9x slower
    for one query, and a two-frame pass 3x slower. The products are broadcast multiplies and
    sums, not matmuls: B*H products of a few rows by L columns are too small for a batched
    matmul, which ran 1.5x slower here.
    """
    lq, lp = q.shape[-2], past_k.shape[-2]
    q = q * (1.0 / math.sqrt(q.shape[-1]))
    if lq == 1:  # the common case, a frame being sampled: a row of scores, nothing masked
        scores = torch.cat([(q * past_k).sum(-1), (q * k).sum(-1)], -1)  # (B, H, L + 1)
        weights = scores.softmax(-1)[..., None]  # (B, H, L + 1, 1)
        return (weights[..., :-1, :] * past_v).sum(-2, keepdim=True) + weights[..., -1:, :] * v
    q = q[..., :, None, :]  # (B, H, Lq, 1, Dh)
    scores = torch.cat([(q * past_k[..., None, :, :]).sum(-1),  # (B, H, Lq, L)
                        (q * k[..., None, :, :]).sum(-1)], -1)  # (B, H, Lq, L + Lq)
    mask = attention_mask(lq, lp + lq, causal=True, window=window, device=q.device)
    weights = scores.masked_fill(~mask, float("-inf")).softmax(-1)[..., None]
    return ((weights[..., :lp, :] * past_v[..., None, :, :]).sum(-2)
            + (weights[..., lp:, :] * v[..., None, :, :]).sum(-2))  # (B, H, Lq, Dh)


class _SplitHeads(torch.autograd.Function):
    """qkv (B', L, 3*D) -> qk (2, B', H, L, Dh) in `qk_dtype` and v (B', H, L, Dh), each made
    by one copy, and in backward one gradient buffer written by two copies.

    Autograd through permute, contiguous, slices and a cast makes four passes each way, and
    its slice gradients fill and add whole (3, ...) buffers. For the tokenizer's attention
    shapes projecting queries, keys and values took 7.5 instead of 10.3 ms (spatial) and
    10.3 instead of 13.2 ms (temporal), forward and backward, in bf16 on 2 cores; a training
    step 179.6 instead of 192.1 ms (medians, alternating in one process).
    """

    @staticmethod
    def forward(ctx, qkv: Tensor, heads: int, qk_dtype: torch.dtype) -> tuple[Tensor, Tensor]:
        b, length, width = qkv.shape
        ctx.heads, ctx.qkv_shape, ctx.qkv_dtype = heads, qkv.shape, qkv.dtype
        parts = qkv.view(b, length, 3, heads, width // (3 * heads)).permute(2, 0, 3, 1, 4)
        qk = torch.empty(parts[:2].shape, dtype=qk_dtype, device=qkv.device)
        qk.copy_(parts[:2])
        return qk, parts[2].contiguous()

    @staticmethod
    def backward(ctx, grad_qk: Tensor, grad_v: Tensor) -> tuple[Tensor, None, None]:
        b, length, width = ctx.qkv_shape
        grad = torch.empty(b, length, 3, ctx.heads, width // (3 * ctx.heads),
                           dtype=ctx.qkv_dtype, device=grad_v.device)
        parts = grad.permute(2, 0, 3, 1, 4)
        parts[:2].copy_(grad_qk)
        parts[2].copy_(grad_v)
        return grad.view(b, length, width), None, None


class HeadNorm(nn.Module):
    """The learned scale (head_dim,) of an RMS norm over head_dim; SelfAttention applies it."""

    def __init__(self, head_dim: int, eps: float = 1e-6):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(head_dim))


class SelfAttention(nn.Module):
    """Multi-head self-attention over folded sequences, with optional rotary positions.

    Dimensions: B' folded batch (B*T frames for spatial attention, B*N token positions for
    temporal attention), L sequence length, D width, H heads, Dh = D / H.
    forward: x (B', L, D) -> output (B', L, D) and this call's (k, v), each (B', H, L, Dh),
    keys already rotated, for the caller to cache. `past` (k, v) of earlier positions are
    prepended to the keys/values, so the L queries are the last L of the sequence.
    """

    def __init__(
        self,
        dim: int,
        heads: int,
        *,
        qk_norm: bool = True,
        rope: RotaryEmbedding | None = None,
        backend: str = "sdpa",
    ):
        super().__init__()
        if dim % heads:
            raise ValueError(f"width {dim} is not divisible by {heads} heads")
        if backend not in BACKENDS:
            raise ValueError(f"unknown attention backend {backend!r}: choose one of {BACKENDS}")
        self.heads, self.head_dim = heads, dim // heads
        self.backend = backend
        self.qkv = nn.Linear(dim, 3 * dim, bias=False)
        self.proj = nn.Linear(dim, dim)
        # Normalised queries/keys bound the attention logits, which keeps bf16 training stable.
        self.q_norm = HeadNorm(self.head_dim) if qk_norm else None
        self.k_norm = HeadNorm(self.head_dim) if qk_norm else None
        self.rope = rope

    def forward(
        self,
        x: Tensor,
        *,
        causal: bool = False,
        window: int | None = None,
        positions: Tensor | None = None,
        past: tuple[Tensor, Tensor] | None = None,
    ) -> tuple[Tensor, tuple[Tensor, Tensor]]:
        b, length, dim = x.shape
        q, k, v = self._project(x, positions)
        new_kv = (k, v)
        if past is None:
            out = attention(q, k, v, causal=causal, window=window, backend=self.backend)
        else:
            past_k, past_v = past
            if past_k.shape[0] != b or past_k.dtype != k.dtype:
                raise ValueError(
                    f"cached keys are {tuple(past_k.shape)} {past_k.dtype} but this call has "
                    f"folded batch {b} in {k.dtype}: keep batch size, tokens per frame and "
                    "autocast the same for every step that shares a cache"
                )
            if causal and length <= FEW_QUERIES:  # frames being sampled or committed
                out = _few_queries_with_past(q, k, v, past_k, past_v, window)
            else:
                k = torch.cat([past_k, k], dim=-2)  # (B', H, L_past + L, Dh)
                v = torch.cat([past_v, v], dim=-2)
                out = attention(q, k, v, causal=causal, window=window, backend=self.backend)
        out = out.transpose(1, 2).reshape(b, length, dim)  # (B', L, D)
        return self.proj(out), new_kv

    def keys_values(self, x: Tensor, positions: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """Only this call's (k, v), each (B', H, L, Dh), as forward returns them: what a frame
        committed to a cache needs from the last layer, whose output nothing reads."""
        _, k, v = self._project(x, positions)
        return k, v

    def _project(self, x: Tensor, positions: Tensor | None) -> tuple[Tensor, Tensor, Tensor]:
        """x (B', L, D) -> q, k, v (B', H, L, Dh), queries and keys normalised and rotated."""
        if self.rope is not None and positions is None:
            raise ValueError("rotary attention needs the positions of its tokens")
        qkv = self.qkv(x)
        # Norm and rotation run in fp32 with one conversion each way: the rotation needs it
        # (RotaryEmbedding) and the norm is faster so (genie/nn/rms_norm.py). The conversion
        # in is folded into the copy that splits the heads; in fp32 nothing is converted.
        detour = self.q_norm is not None or self.rope is not None
        qk_dtype = torch.promote_types(qkv.dtype, torch.float32) if detour else qkv.dtype
        # Queries and keys are normalised and rotated together, as one (2, B', H, L, Dh)
        # tensor: sampling a frame makes hundreds of these small calls, half as many this way.
        qk, v = _SplitHeads.apply(qkv, self.heads, qk_dtype)
        if self.q_norm is not None:
            qk = self._norm(qk)
        if self.rope is not None:
            qk = self.rope(qk, positions)
        q, k = qk.to(v.dtype).unbind(0)
        return q, k, v

    def _norm(self, qk: Tensor) -> Tensor:
        """RMS norm of queries and keys (2, ..., Dh), each with its own scale."""
        scale = torch.stack([self.q_norm.weight, self.k_norm.weight]).to(qk.dtype)  # (2, Dh)
        scale = scale.view(2, *(1,) * (qk.dim() - 2), self.head_dim)
        return rms_norm(qk, scale, self.q_norm.eps)
