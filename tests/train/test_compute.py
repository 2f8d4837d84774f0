"""Device and precision choice: what a user asks for, and what "auto" measures."""

from __future__ import annotations

import threading

import pytest
import torch

from genie.errors import GenieError
from genie.train.compute import cpu_bf16_is_fast, pick_precision


class _Clock:
    """A fake perf_counter: each start/end pair of calls spans the next of `durations`."""

    def __init__(self, durations: list[float]):
        self.durations, self.now, self.running = iter(durations), 0.0, False

    def __call__(self) -> float:
        if self.running:
            self.now += next(self.durations)
        self.running = not self.running
        return self.now


@pytest.mark.parametrize("durations, fast", [
    ([9.0, 2.0] + [1.0, 2.0] * 7, True),  # bf16's first product hit a busy moment
    ([3.0, 2.0] * 8, False),  # a CPU without fast bf16 products
])
def test_the_bf16_probe_keeps_the_fastest_of_several_products(monkeypatch, durations, fast):
    monkeypatch.setattr("genie.train.compute.time.perf_counter", _Clock(durations))
    cpu_bf16_is_fast.cache_clear()
    try:
        assert cpu_bf16_is_fast() is fast
    finally:
        cpu_bf16_is_fast.cache_clear()


def test_the_bf16_probe_runs_off_the_callers_thread(monkeypatch):
    # OpenMP threads it started on the caller's thread would slow a world stepped elsewhere.
    threads = []
    monkeypatch.setattr("genie.train.compute.time.perf_counter",
                        lambda: threads.append(threading.current_thread()) or 0.0)
    cpu_bf16_is_fast.cache_clear()
    try:
        cpu_bf16_is_fast()
    finally:
        cpu_bf16_is_fast.cache_clear()
    assert threads and threading.current_thread() not in threads


def test_precision_asked_for_is_kept_and_a_bad_one_named():
    cpu = torch.device("cpu")
    assert pick_precision("fp32", cpu) == "fp32" and pick_precision("bf16", cpu) == "bf16"
    with pytest.raises(GenieError, match="precision 'half' is not one of auto, bf16, fp32"):
        pick_precision("half", cpu)
