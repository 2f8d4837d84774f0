import math

import pytest
import torch

import genie.nn.attn as attn_mod
from genie.nn import (
    RotaryEmbedding,
    SelfAttention,
    STTransformer,
    attention,
    attention_mask,
    use_attention_backend,
)


def qkv(b=2, h=3, lq=5, lk=5, dh=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    q = torch.randn(b, h, lq, dh, generator=g)
    k = torch.randn(b, h, lk, dh, generator=g)
    v = torch.randn(b, h, lk, dh, generator=g)
    return q, k, v


def reference(q, k, v, causal, window=None):
    """Plain softmax attention with the mask written out position by position."""
    lq, lk = q.shape[-2], k.shape[-2]
    allowed = torch.ones(lq, lk, dtype=torch.bool)
    for i in range(lq):
        pos = lk - lq + i
        for j in range(lk):
            if causal and j > pos:
                allowed[i, j] = False
            if window is not None and j <= pos - window:
                allowed[i, j] = False
    scores = q @ k.transpose(-1, -2) / math.sqrt(q.shape[-1])
    scores = scores.masked_fill(~allowed, float("-inf"))
    return scores.softmax(-1) @ v


@pytest.mark.parametrize(
    "lq,lk,causal,window",
    [
        (5, 5, False, None),
        (5, 5, True, None),
        (2, 6, True, None),
        (1, 6, True, None),
        (6, 6, True, 3),
        (3, 7, True, 2),
        (1, 7, True, 3),
    ],
)
def test_matches_reference(lq, lk, causal, window):
    q, k, v = qkv(lq=lq, lk=lk)
    out = attention(q, k, v, causal=causal, window=window)
    assert out.shape == q.shape
    torch.testing.assert_close(out, reference(q, k, v, causal, window), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("lq,window", [(1, None), (2, None), (2, 6), (3, 4)])
def test_few_queries_against_a_cache_match_the_reference(lq, window):
    # The cached path: new queries see the past (here 5 frames, 6 - lq of them in a window of
    # 6 for the last query) and the new keys up to their own, never concatenated.
    q, k, v = qkv(lq=lq, lk=5 + lq)
    out = attn_mod._few_queries_with_past(q, k[:, :, 5:], v[:, :, 5:], k[:, :, :5], v[:, :, :5],
                                          window)
    torch.testing.assert_close(out, reference(q, k, v, True, window), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("window", [None, 3])
def test_bottom_right_causal_queries_are_the_last_positions(window):
    # Queries for the last Lq positions against all Lk keys must equal the last Lq rows of
    # the full causal attention: exactly what a new frame attending to a KV cache computes.
    q, k, v = qkv(lq=7, lk=7)
    full = attention(q, k, v, causal=True, window=window)
    tail = attention(q[:, :, -2:], k, v, causal=True, window=window)
    torch.testing.assert_close(tail, full[:, :, -2:], atol=1e-6, rtol=1e-6)
    # Top-left alignment (SDPA's is_causal) would hide keys 2.. from the first query.
    top_left = torch.nn.functional.scaled_dot_product_attention(q[:, :, -2:], k, v, is_causal=True)
    assert not torch.allclose(tail, top_left, atol=1e-3)


@pytest.mark.parametrize("lq,lk,causal,window", [(6, 6, False, None), (6, 6, True, None),
                                                  (2, 7, True, None), (3, 7, True, 2)])
def test_bf16_on_cpu_takes_the_matmul_path_and_matches_the_reference(monkeypatch, lq, lk, causal,
                                                                     window):
    # Short bf16 sequences on a CPU skip SDPA's fused kernel (slower there); same masks, and
    # the same result up to bf16 rounding.
    calls = []
    matmul = attn_mod._matmul_attention
    monkeypatch.setattr(attn_mod, "_matmul_attention", lambda *a: calls.append(1) or matmul(*a))
    q, k, v = qkv(lq=lq, lk=lk, dh=16)
    out = attention(q.bfloat16(), k.bfloat16(), v.bfloat16(), causal=causal, window=window)
    assert calls and out.dtype == torch.bfloat16
    torch.testing.assert_close(out.float(), reference(q, k, v, causal, window), atol=3e-2,
                               rtol=3e-2)
    attention(q, k, v, causal=causal, window=window)  # fp32 stays on SDPA
    monkeypatch.setattr(attn_mod, "MATMUL_MAX_KEYS", lk - 1)  # so do long sequences
    attention(q.bfloat16(), k.bfloat16(), v.bfloat16(), causal=causal, window=window)
    assert len(calls) == 1


@pytest.mark.parametrize("lq,lk,causal,window", [(6, 6, False, None), (3, 7, True, 2)])
def test_matmul_attention_and_its_gradients_match_the_reference(lq, lk, causal, window):
    # The softmax and its backward are written over the score buffer; in fp64 the outputs and
    # the gradients of q, k and v must be those of autograd through the plain expression.
    q, k, v = (t.double().requires_grad_() for t in qkv(lq=lq, lk=lk, dh=16))
    weight = torch.randn(q.shape, dtype=torch.float64)

    def outputs_and_grads(fn):
        for t in (q, k, v):
            t.grad = None
        out = fn()
        (out * weight).sum().backward()
        return out, q.grad, k.grad, v.grad

    mask = attention_mask(lq, lk, causal=causal, window=window)
    got = outputs_and_grads(lambda: attn_mod._matmul_attention(q, k, v, mask, 16 ** -0.5))
    want = outputs_and_grads(lambda: reference(q, k, v, causal, window))
    for g, w in zip(got, want, strict=True):
        torch.testing.assert_close(g, w)


def test_mask_is_skipped_only_when_nothing_is_hidden():
    assert attention_mask(1, 4, causal=True) is None
    assert attention_mask(1, 4, causal=True, window=4) is None
    mask = attention_mask(1, 5, causal=True, window=4)
    assert mask.tolist() == [[False, True, True, True, True]]
    assert attention_mask(2, 3, causal=True).tolist() == [[True, True, False], [True, True, True]]


def test_chunked_matches_unchunked(monkeypatch):
    q, k, v = qkv(b=7, h=2, lq=3, lk=5)
    whole = attention(q, k, v, causal=True, window=2)
    calls = []
    kernel = attn_mod._sdpa

    def counting_kernel(q, k, v, **kw):
        calls.append(q.shape[0] * q.shape[1])
        return kernel(q, k, v, **kw)

    monkeypatch.setattr(attn_mod, "_sdpa", counting_kernel)
    monkeypatch.setattr(attn_mod, "MAX_BATCH_HEADS", 6)
    chunked = attention(q, k, v, causal=True, window=2)
    assert calls == [6, 6, 2]  # batch chunks of 3, 3, 1 with 2 heads
    torch.testing.assert_close(chunked, whole, atol=0, rtol=0)


def test_bad_arguments_raise():
    q, k, v = qkv()
    with pytest.raises(ValueError, match="causal"):
        attention(q, k, v, window=2)
    with pytest.raises(ValueError, match="backend"):
        attention(q, k, v, backend="flash9")
    with pytest.raises(ValueError, match="queries"):
        attention(q, k[:, :, :2], v[:, :, :2], causal=True)
    # CPU tensors (or no xformers installed): a one-line error pointing at sdpa.
    with pytest.raises(RuntimeError, match="sdpa"):
        attention(q, k, v, backend="xformers")


def test_a_run_sets_the_backend_of_every_attention_layer():
    model = STTransformer(dim=16, depth=2, heads=2)
    use_attention_backend(model, "xformers")
    layers = [m for m in model.modules() if isinstance(m, SelfAttention)]
    assert len(layers) == 4 and all(m.backend == "xformers" for m in layers)
    with pytest.raises(ValueError, match="flash9"):
        use_attention_backend(model, "flash9")


def test_rope_depends_only_on_offsets():
    rope = RotaryEmbedding(8)
    g = torch.Generator().manual_seed(1)
    q, k = torch.randn(1, 8, generator=g), torch.randn(1, 8, generator=g)

    def score(i, j):
        return (rope(q, torch.tensor([i])) * rope(k, torch.tensor([j]))).sum()

    torch.testing.assert_close(score(3, 1), score(1003, 1001), atol=1e-4, rtol=1e-4)
    assert not torch.allclose(score(3, 1), score(3, 2), atol=1e-3)
    # A rotation: norms are kept, and positions far beyond any training length just work.
    far = rope(q, torch.tensor([100_000]))
    torch.testing.assert_close(far.norm(), q.norm())


def test_rope_gradient_is_the_inverse_rotation_of_the_output_gradient():
    rope = RotaryEmbedding(8)
    positions = torch.tensor([0, 3, 7])
    x = torch.randn(2, 3, 3, 8, requires_grad=True)
    grad_out = torch.randn(2, 3, 3, 8)
    (grad,) = torch.autograd.grad(rope(x, positions), x, grad_out)
    # A rotation's transpose is the rotation by minus the angle: positions negated.
    torch.testing.assert_close(grad, rope(grad_out, -positions))
    # And the plain expression's autograd agrees.
    angles = positions[:, None].float() * 10000.0 ** (-torch.arange(0, 8, 2) / 8)
    cos, sin = torch.cat([angles.cos()] * 2, -1), torch.cat([-angles.sin(), angles.sin()], -1)
    plain = x * cos + torch.cat([x[..., 4:], x[..., :4]], -1) * sin
    torch.testing.assert_close(rope(x, positions), plain)
    torch.testing.assert_close(grad, torch.autograd.grad(plain, x, grad_out)[0])


def test_self_attention_rejects_a_mismatched_cache():
    layer = SelfAttention(16, 2, rope=RotaryEmbedding(8))
    x = torch.randn(3, 1, 16)
    past = (torch.zeros(4, 2, 2, 8), torch.zeros(4, 2, 2, 8))
    with pytest.raises(ValueError, match="folded batch"):
        layer(x, causal=True, positions=torch.tensor([2]), past=past)


def reference_projection(layer, x, positions):
    """q, k, v as the layer should make them, in plain ops: split heads, RMS-norm, rotate."""
    b, length, dim = x.shape
    q, k, v = layer.qkv(x).view(b, length, 3, layer.heads, layer.head_dim).permute(2, 0, 3, 1, 4)
    q = torch.nn.functional.rms_norm(q, (layer.head_dim,), eps=1e-6) * layer.q_norm.weight
    k = torch.nn.functional.rms_norm(k, (layer.head_dim,), eps=1e-6) * layer.k_norm.weight
    if layer.rope is not None:
        q, k = layer.rope(q, positions), layer.rope(k, positions)
    return q, k, v


@pytest.mark.parametrize("rope", [False, True])
def test_projection_and_its_gradients_match_plain_ops(rope):
    torch.manual_seed(0)
    layer = SelfAttention(24, 3, rope=RotaryEmbedding(8) if rope else None).double()
    with torch.no_grad():  # scales other than 1, so that a gradient routed wrong shows
        layer.q_norm.weight.uniform_(0.5, 1.5)
        layer.k_norm.weight.uniform_(0.5, 1.5)
    x = torch.randn(4, 5, 24, dtype=torch.float64, requires_grad=True)
    positions = torch.arange(3, 8)
    weights = [torch.randn(4, 3, 5, 8, dtype=torch.float64) for _ in range(3)]

    def outputs_and_grads(project):
        x.grad = None
        layer.zero_grad()
        q, k, v = project(x, positions)
        sum((t * w).sum() for t, w in zip((q, k, v), weights, strict=True)).backward()
        return (q, k, v, x.grad, layer.qkv.weight.grad, layer.q_norm.weight.grad,
                layer.k_norm.weight.grad)

    got = outputs_and_grads(layer._project)
    want = outputs_and_grads(lambda x, p: reference_projection(layer, x, p))
    for g, w in zip(got, want, strict=True):
        torch.testing.assert_close(g, w)
