import math

import pytest
import torch
import torch.nn.functional as F

from genie.nn import FSQ, VectorQuantizer, code_usage


def test_usage_stats_for_uniform_and_single_code():
    uniform = code_usage(torch.arange(16).repeat(3), 16)
    assert uniform["usage"] == 1.0
    torch.testing.assert_close(uniform["perplexity"], torch.tensor(16.0))
    single = code_usage(torch.full((50,), 5), 16)
    assert single["usage"] == 1 / 16
    torch.testing.assert_close(single["perplexity"], torch.tensor(1.0))


def test_vq_codes_are_the_nearest_normalized_codebook_vectors():
    torch.manual_seed(0)
    vq = VectorQuantizer(dim=24, codebook_size=64, code_dim=8).eval()
    x = torch.randn(3, 1000, 24)  # 3,000 vectors: the search runs in more than one block
    quantized, codes, stats = vq(x)
    assert quantized.shape == x.shape and codes.shape == (3, 1000)
    z = F.normalize(vq.in_proj(x), dim=-1)
    e = F.normalize(vq.codebook, dim=-1)
    # Brute force: smallest Euclidean distance between unit vectors = largest cosine.
    dists = (z[..., None, :] - e).pow(2).sum(-1)  # (3, 1000, K)
    assert torch.equal(codes, dists.argmin(-1))
    torch.testing.assert_close(quantized, vq.lookup(codes), atol=1e-6, rtol=1e-6)
    expected = (1 + 0.25) * F.mse_loss(e[codes], z)
    torch.testing.assert_close(stats["loss"], expected, atol=1e-6, rtol=1e-5)


def test_vq_gradient_passes_straight_through_to_the_input():
    torch.manual_seed(0)
    vq = VectorQuantizer(dim=8, codebook_size=32, code_dim=8)  # no projections
    x = torch.randn(10, 8, requires_grad=True)
    weights = torch.randn(10, 8)
    quantized, _, stats = vq(x)
    (quantized * weights).sum().backward(retain_graph=True)
    # Straight-through: the gradient is that of the normalized input, as if unquantized.
    x_ref = x.detach().clone().requires_grad_()
    (F.normalize(x_ref, dim=-1) * weights).sum().backward()
    torch.testing.assert_close(x.grad, x_ref.grad)
    assert vq.codebook.grad is None
    stats["loss"].backward()
    assert vq.codebook.grad.abs().sum() > 0  # the codebook learns from its own loss


def test_vq_distances_in_fp32_under_bf16_autocast():
    torch.manual_seed(0)
    vq = VectorQuantizer(dim=16, codebook_size=512, code_dim=8).eval()
    x = torch.randn(200, 16)
    _, codes_fp32, _ = vq(x)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        quantized, codes_bf16, stats = vq(x)
    assert torch.equal(codes_bf16, codes_fp32)
    assert torch.isfinite(quantized).all() and stats["loss"].dtype == torch.float32


def make_collapsed_vq(seed=0):
    torch.manual_seed(seed)
    vq = VectorQuantizer(dim=4, codebook_size=8, code_dim=4, restart_after=2)
    with torch.no_grad():
        # Inputs all point along +x; code 0 does too and the rest point away, so they die.
        vq.codebook.copy_(-torch.eye(4).repeat(2, 1) - torch.tensor([1.0, 0, 0, 0]))
        vq.codebook[0] = torch.tensor([1.0, 0, 0, 0])
    return vq


def collapsed_batch():
    return torch.tensor([1.0, 0, 0, 0]) + 0.3 * torch.randn(64, 4)


def test_dead_codes_are_restarted_from_encoder_outputs():
    vq = make_collapsed_vq()
    for _ in range(2):
        _, codes, stats = vq(collapsed_batch())
        assert stats["restarted"] == 0 and stats["usage"] == 1 / 8
    assert (vq.steps_unused[1:] >= 2).all()
    x = collapsed_batch()
    _, codes, stats = vq(x)
    assert stats["restarted"] == 7
    assert stats["usage"] > 1 / 8  # revived codes are picked straight away
    # Each revived code is exactly one of this batch's normalized encoder outputs.
    z = F.normalize(vq.in_proj(x), dim=-1)
    revived = vq.codebook[1:].detach()
    gaps = (revived[:, None] - z[None]).norm(dim=-1)  # (7, 64)
    assert gaps.min(dim=1).values.max() < 1e-6


def test_dead_code_restart_is_deterministic_given_the_seed():
    def run(seed):
        vq = make_collapsed_vq()
        torch.manual_seed(seed)
        for _ in range(3):
            vq(collapsed_batch())
        return vq.codebook.detach()

    assert torch.equal(run(7), run(7))
    assert not torch.equal(run(7), run(8))


def test_no_restart_in_eval_mode():
    vq = make_collapsed_vq().eval()
    for _ in range(4):
        _, _, stats = vq(collapsed_batch())
    assert stats["restarted"] == 0 and (vq.steps_unused == 0).all()


LEVELS = [8, 5, 5, 5]


def test_fsq_indices_and_codes_round_trip():
    fsq = FSQ(LEVELS)
    assert fsq.codebook_size == math.prod(LEVELS) == 1000
    indices = torch.arange(fsq.codebook_size)
    codes = fsq.indices_to_codes(indices)
    assert codes.shape == (1000, 4) and codes.min() >= -1 and codes.max() <= 1
    assert len(torch.unique(codes, dim=0)) == 1000
    assert torch.equal(fsq.codes_to_indices(codes), indices)


def test_fsq_forward_uses_every_code_and_matches_lookup():
    torch.manual_seed(0)
    fsq = FSQ(LEVELS, dim=16)
    # At unit scale even the corner codes get ~25 hits per 100k draws, so none is missed by luck.
    _, indices, stats = FSQ(LEVELS)(torch.randn(100_000, 4))
    assert len(torch.unique(indices)) == 1000 and stats["usage"] == 1
    y = torch.randn(2, 3, 16, requires_grad=True)
    quantized, indices, stats = fsq(y)
    assert quantized.shape == y.shape and indices.shape == (2, 3)
    assert stats["loss"] == 0 and 0 < stats["usage"] <= 1
    torch.testing.assert_close(quantized, fsq.lookup(indices))
    quantized.sum().backward()
    assert y.grad.abs().sum() > 0  # straight-through rounding


def test_fsq_values_sit_on_the_grid():
    fsq = FSQ([3, 4])
    codes, _, _ = fsq(torch.randn(500, 2) * 3)
    # Level 3 -> {-1, 0, 1}; level 4 -> {-1, -0.5, 0, 0.5}.
    assert set(codes[:, 0].tolist()) == {-1.0, 0.0, 1.0}
    assert set(codes[:, 1].tolist()) == {-1.0, -0.5, 0.0, 0.5}
    with pytest.raises(ValueError, match="at least 2"):
        FSQ([1, 4])
