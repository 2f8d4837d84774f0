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

    model, batch, _ = _models("lam", ["lam.dim=64", "lam.heads=4", "lam.train.batch_size=3"])
    assert model.config.dim == 64 and batch.shape[0] == 3
    model, _, _ = _models("lam")
    assert model.config.dim == 128  # the preset itself, untouched by the call before


def test_peak_fractions_pair_each_round_with_its_own_reference():
    # The machine's rate is measured before every round, and each round's step is set against
    # the rate measured just before it: here the "machine" gets 10x faster every round.
    from training import step_rate

    calls = []

    def reference():
        calls.append(1)
        return {"bf16": 10.0 ** len(calls)}

    r = step_rate("lam", "fp32", rounds=3, steps=1, reference=reference,
                  overrides=["lam.dim=32", "lam.heads=2", "lam.train.batch_size=1"])
    assert len(calls) == 3
    # Rounds against 10, 100 and 1000 make a median near the step rate over 100: not over
    # 1000, the best of the run, nor over 10. The 3x margins leave room for steps of unequal
    # length on a busy machine.
    rate = r["flops_per_step"] / r["seconds_per_step"]
    assert r["of_peak"].keys() == {"bf16"}
    assert rate / 300 < r["of_peak"]["bf16"] < rate / 30
