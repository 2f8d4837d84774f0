"""Device, threads and precision: picked once per run, from what the user asked and the hardware.

bf16 is only worth it where the hardware multiplies bf16 matrices fast (recent GPUs, CPUs with
AMX). Rather than trusting CPU flags, "auto" times one small product in both dtypes.
"""

from __future__ import annotations

import functools
import time

import torch

from genie.errors import GenieError

DEVICES = ("auto", "cpu", "cuda", "mps")
PRECISIONS = ("auto", "bf16", "fp32")


def pick_device(requested: str = "auto") -> torch.device:
    if requested not in DEVICES:
        raise GenieError(f"--device {requested!r} is not one of {', '.join(DEVICES)}")
    if requested == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if requested == "cuda" and not torch.cuda.is_available():
        raise GenieError("--device cuda asked for, but torch sees no CUDA GPU: use --device cpu")
    if requested == "mps" and not torch.backends.mps.is_available():
        raise GenieError("--device mps asked for, but this machine has no MPS: use --device cpu")
    return torch.device(requested)


def set_threads(threads: int | None) -> None:
    if threads is not None:
        if threads < 1:
            raise GenieError(f"--threads {threads} must be at least 1")
        torch.set_num_threads(threads)


def pick_precision(requested: str, device: torch.device) -> str:
    """'bf16' or 'fp32' for this device (accelerate's 'bf16' / 'no')."""
    if requested not in PRECISIONS:
        raise GenieError(f"precision {requested!r} is not one of {', '.join(PRECISIONS)}")
    if requested != "auto":
        return requested
    if device.type == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp32"
    if device.type == "cpu":
        return "bf16" if cpu_bf16_is_fast() else "fp32"
    return "fp32"


@functools.cache
def cpu_bf16_is_fast() -> bool:
    """True when a bf16 matrix product runs clearly faster than fp32 on this CPU."""

    def seconds(dtype: torch.dtype) -> float:
        a = torch.randn(512, 512).to(dtype)
        a @ a  # warm-up: first calls pick kernels
        start = time.perf_counter()
        for _ in range(4):
            a @ a
        return time.perf_counter() - start

    return seconds(torch.bfloat16) < 0.7 * seconds(torch.float32)
