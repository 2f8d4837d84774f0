"""Shared network blocks: attention backends, positions, the ST transformer, its KV cache and
the quantizers used by the tokenizer, the latent action model and the dynamics models."""

from genie.nn.attn import (
    BACKENDS,
    SelfAttention,
    attention,
    attention_mask,
    use_attention_backend,
)
from genie.nn.kv_cache import KVCache
from genie.nn.positions import RotaryEmbedding, SpatialPosEmb, sincos_2d
from genie.nn.quantizers import FSQ, VectorQuantizer, code_usage
from genie.nn.st_block import STBlock, STTransformer, SwiGLU, modulate

__all__ = [
    "BACKENDS",
    "FSQ",
    "KVCache",
    "RotaryEmbedding",
    "STBlock",
    "STTransformer",
    "SelfAttention",
    "SpatialPosEmb",
    "SwiGLU",
    "VectorQuantizer",
    "attention",
    "attention_mask",
    "code_usage",
    "modulate",
    "sincos_2d",
    "use_attention_backend",
]
