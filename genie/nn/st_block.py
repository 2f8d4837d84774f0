"""Spatio-temporal (ST) transformer: attention inside each frame, then along time."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from genie.nn.attn import BACKENDS, SelfAttention
from genie.nn.kv_cache import KVCache
from genie.nn.positions import RotaryEmbedding


def modulate(x: Tensor, shift: Tensor, scale: Tensor) -> Tensor:
    """adaLN: x * (1 + scale) + shift, so zero modulation leaves x unchanged."""
    return x * (1 + scale) + shift


class SwiGLU(nn.Module):
    """Gated MLP, x (..., D) -> (..., D).

    SwiGLU rather than GELU: at equal parameters and FLOPs it trains to a lower loss
    (Shazeer 2020; the LLaMA family's choice). The hidden width 2/3 * ratio * D, rounded up to
    a multiple of 8 for the matmul kernels, matches the parameter count of a ratio * D GELU MLP.
    """

    def __init__(self, dim: int, ratio: float = 4.0):
        super().__init__()
        hidden = math.ceil(2 * ratio * dim / 3 / 8) * 8
        self.up = nn.Linear(dim, 2 * hidden)  # value rows, then gate rows
        self.down = nn.Linear(hidden, dim)

    def forward(self, x: Tensor) -> Tensor:
        # Value and gate come from two products, not one split in two: on a CPU, bf16 SiLU and
        # its backward on a half-width strided view run 3x slower than on a contiguous tensor,
        # and the split's backward copies both halves again. Forward and backward of the
        # tokenizer's MLP took 9.0 instead of 10.7 ms on 2 cores (medians, alternating).
        w, b, h = self.up.weight, self.up.bias, self.down.in_features
        value, gate = F.linear(x, w[:h], b[:h]), F.linear(x, w[h:], b[h:])
        return self.down(value * F.silu(gate))


class STBlock(nn.Module):
    """Pre-norm ST block: spatial attention, temporal attention, MLP, each with a residual.

    Dimensions: B batch, T frames, N tokens per frame, D width, Dc conditioning width.
    x (B, T, N, D) -> (B, T, N, D). Spatial attention is bidirectional within each frame
    (batch folded to B*T); temporal attention runs along time at each token position (batch
    folded to B*N), causal unless `causal=False`, with rotary frame positions.

    With `adaln=True` a per-frame `cond` (B, T, Dc) sets shift, scale and gate of each of the
    three sub-layers (DiT's adaLN-Zero); the projection starts at zero, so the block starts as
    the identity.

    forward arguments:
      start: absolute frame index of x's first frame (for the rotary positions), default 0.
      window: temporal attention sees only the W most recent frames, itself included.
      cache, layer: incremental decoding. The frames in x are the next ones after those in
        `cache`; they attend to the cached keys/values of this layer, and with `commit` their
        own are appended. `commit=False` recomputes the same frames (e.g. several MaskGIT or
        denoising steps) without touching the cache; `keep=K` appends only the first K frames
        (a finished frame committed in the same pass as the first step of the next one).
        Position and window come from the cache.
      kv_only: with a cache and commit, stop once this block's temporal keys/values are
        appended and return None; the last block of a stack committing frames whose output
        nothing reads skips its temporal attention and MLP.
    """

    def __init__(
        self,
        dim: int,
        heads: int,
        *,
        mlp_ratio: float = 4.0,
        causal: bool = True,
        qk_norm: bool = True,
        adaln: bool = False,
        cond_dim: int | None = None,
        rope_base: float = 10000.0,
        backend: str = "sdpa",
    ):
        super().__init__()
        self.causal = causal
        # adaLN supplies the scale and shift, so the norms carry no affine parameters then.
        self.norm_s, self.norm_t, self.norm_m = (
            nn.LayerNorm(dim, elementwise_affine=not adaln) for _ in range(3)
        )
        self.spatial = SelfAttention(dim, heads, qk_norm=qk_norm, backend=backend)
        rope = RotaryEmbedding(dim // heads, base=rope_base)
        self.temporal = SelfAttention(dim, heads, qk_norm=qk_norm, rope=rope, backend=backend)
        self.mlp = SwiGLU(dim, mlp_ratio)
        self.modulation = _zero_modulation(cond_dim or dim, 9 * dim) if adaln else None

    def forward(
        self,
        x: Tensor,
        *,
        cond: Tensor | None = None,
        start: int | None = None,
        window: int | None = None,
        cache: KVCache | None = None,
        layer: int = 0,
        commit: bool = True,
        keep: int | None = None,
        kv_only: bool = False,
    ) -> Tensor | None:
        if kv_only and (cache is None or not commit):
            raise ValueError("kv_only appends keys/values to a cache: it needs cache and commit")
        b, t, n, d = x.shape
        mods = _modulation_params(self.modulation, cond, b, t, 9)
        start, window = self._resolve_time(start, window, cache, layer)

        h = self.norm_s(x)
        if mods:
            h = modulate(h, mods[0], mods[1])
        h, _ = self.spatial(h.reshape(b * t, n, d))  # (B*T, N, D)
        h = h.view(b, t, n, d)
        x = x + (mods[2] * h if mods else h)

        h = self.norm_t(x)
        if mods:
            h = modulate(h, mods[3], mods[4])
        h = h.transpose(1, 2).reshape(b * n, t, d)  # (B*N, T, D)
        positions = torch.arange(start, start + t, device=x.device)
        if kv_only:
            k, v = self.temporal.keys_values(h, positions)
            cache.append(layer, k[..., :keep, :], v[..., :keep, :])
            return None
        h, (k, v) = self.temporal(
            h,
            causal=self.causal,
            window=window,
            positions=positions,
            past=None if cache is None else cache.past(layer),
        )
        if cache is not None and commit:
            cache.append(layer, k[..., :keep, :], v[..., :keep, :])
        h = h.view(b, n, t, d).transpose(1, 2)  # (B, T, N, D)
        x = x + (mods[5] * h if mods else h)

        h = self.norm_m(x)
        if mods:
            h = modulate(h, mods[6], mods[7])
        h = self.mlp(h)
        return x + (mods[8] * h if mods else h)

    def _resolve_time(
        self, start: int | None, window: int | None, cache: KVCache | None, layer: int
    ) -> tuple[int, int | None]:
        if cache is None:
            return start or 0, window
        if not self.causal:
            raise ValueError("a KV cache needs causal temporal attention (causal=True)")
        if start is not None:
            raise ValueError("pass either start or cache: a cache knows its next frame index")
        if window is not None and window != cache.window:
            raise ValueError(f"window={window} differs from the cache's window={cache.window}")
        return cache.frames_seen[layer], cache.window

    def set_backend(self, backend: str) -> None:
        """Switch both attention layers to `backend` ('sdpa' or 'xformers')."""
        if backend not in BACKENDS:
            raise ValueError(f"unknown attention backend {backend!r}: choose one of {BACKENDS}")
        for attn in (self.spatial, self.temporal):
            attn.backend = backend


class STTransformer(nn.Module):
    """A stack of ST blocks plus a final norm.

    Dimensions: B batch, T frames, N tokens per frame, D width, Dc conditioning width.
    x (B, T, N, D) [, cond (B, T, Dc)] -> (B, T, N, D). Token embedding and spatial
    positions are the caller's (see SpatialPosEmb); temporal positions are rotary, inside.

    Training and full-sequence evaluation: `forward(x, window=W)` uses a banded causal mask, so
    each frame sees the W most recent frames, itself included, at every layer.
    Incremental decoding: `cache = model.new_cache(window=W)`, then `forward(x_new,
    cache=cache)` for each new frame (B, 1, N, D) or group of frames, under torch.no_grad()
    (a cache filled with grad enabled would hold on to the graph). This computes exactly what
    `forward(all_frames, window=W)` computes for those frames, and a new frame's temporal
    attention costs N * W however long the history. `commit=False` evaluates the new frames
    without appending them, `keep=K` appends only the first K; `output=False` only appends
    them and returns None, skipping the work after the last block's keys/values (a prompt
    prefilled, a finished frame committed).
    With more than one layer, frame t still depends on frames older than t-W+1 through the
    deeper layers' cached keys; that is what the banded mask reproduces.
    """

    def __init__(
        self,
        dim: int,
        depth: int,
        heads: int,
        *,
        mlp_ratio: float = 4.0,
        causal: bool = True,
        qk_norm: bool = True,
        adaln: bool = False,
        cond_dim: int | None = None,
        rope_base: float = 10000.0,
        backend: str = "sdpa",
    ):
        super().__init__()
        self.blocks = nn.ModuleList(
            STBlock(
                dim,
                heads,
                mlp_ratio=mlp_ratio,
                causal=causal,
                qk_norm=qk_norm,
                adaln=adaln,
                cond_dim=cond_dim,
                rope_base=rope_base,
                backend=backend,
            )
            for _ in range(depth)
        )
        self.norm = nn.LayerNorm(dim, elementwise_affine=not adaln)
        self.final_modulation = _zero_modulation(cond_dim or dim, 2 * dim) if adaln else None

    def new_cache(self, window: int | None = None) -> KVCache:
        """An empty cache for this stack; `window` as in forward (None keeps every frame)."""
        return KVCache(len(self.blocks), window)

    def set_backend(self, backend: str) -> None:
        """Switch every attention layer to `backend` ('sdpa' or 'xformers')."""
        for block in self.blocks:
            block.set_backend(backend)

    def forward(
        self,
        x: Tensor,
        *,
        cond: Tensor | None = None,
        start: int | None = None,
        window: int | None = None,
        cache: KVCache | None = None,
        commit: bool = True,
        keep: int | None = None,
        output: bool = True,
    ) -> Tensor | None:
        if cache is not None:
            if cache.depth != len(self.blocks):
                raise ValueError(f"cache has {cache.depth} layers, the model {len(self.blocks)}")
            _ = cache.position  # raises if an interrupted pass left the layers out of step
        last = len(self.blocks) - 1
        for i, block in enumerate(self.blocks):
            x = block(x, cond=cond, start=start, window=window, cache=cache, layer=i,
                      commit=commit, keep=keep, kv_only=not output and i == last)
        if not output:
            return None
        x = self.norm(x)
        mods = _modulation_params(self.final_modulation, cond, x.shape[0], x.shape[1], 2)
        return modulate(x, *mods) if mods else x


def _zero_modulation(cond_dim: int, out_dim: int) -> nn.Sequential:
    linear = nn.Linear(cond_dim, out_dim)
    nn.init.zeros_(linear.weight)
    nn.init.zeros_(linear.bias)
    return nn.Sequential(nn.SiLU(), linear)


def _modulation_params(
    modulation: nn.Module | None, cond: Tensor | None, b: int, t: int, parts: int
) -> list[Tensor]:
    """Split modulation(cond) into `parts` tensors (B, T, 1, D) that broadcast over tokens."""
    if modulation is None:
        if cond is not None:
            raise ValueError("cond was given but the block was built without adaln=True")
        return []
    if cond is None or cond.shape[:2] != (b, t):
        got = None if cond is None else tuple(cond.shape)
        raise ValueError(f"adaLN needs a per-frame cond of shape ({b}, {t}, Dc), got {got}")
    return list(modulation(cond).unsqueeze(2).chunk(parts, dim=-1))
