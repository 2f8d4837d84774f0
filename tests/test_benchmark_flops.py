import sys
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).parents[1] / "benchmarks"))
from flops import flop_counter  # noqa: E402


def test_cpu_attention_kernel_counts_as_its_matmuls():
    # torch's own counter gives SDPA's CPU kernel 0 FLOPs; the benchmark's must count it as
    # the same attention written as matmuls, forward and backward.
    q, k, v = (torch.randn(2, 3, 16, 8, requires_grad=True) for _ in range(3))
    with flop_counter() as fused:
        F.scaled_dot_product_attention(q, k, v, is_causal=True).sum().backward()
    with flop_counter() as written:
        ((q @ k.transpose(-1, -2)) / 8 ** 0.5).softmax(-1).matmul(v).sum().backward()
    assert fused.get_total_flops() == written.get_total_flops() > 0


def test_training_benchmark_times_the_preset_with_overrides():
    from training import _models

    model, batch, _ = _models("lam", ["lam.dim=96", "lam.train.batch_size=3"])
    assert model.config.dim == 96 and batch.shape[0] == 3
    model, _, _ = _models("lam")
    assert model.config.dim == 64  # the preset itself, untouched by the call before
