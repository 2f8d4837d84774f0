"""Device, threads and precision: picked once per run, from what the user asked and the hardware.

bf16 is only worth it where the hardware multiplies bf16 matrices fast (recent GPUs, CPUs with
AMX). Rather than trusting CPU flags, "auto" times small products in both dtypes.
"""

from __future__ import annotations

import functools
import math
import time
from concurrent.futures import ThreadPoolExecutor

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
    """True when a bf16 matrix product runs clearly faster than fp32 on this CPU.

    The fastest of 8 products in each dtype, alternated: one timing of a few milliseconds is
    at the mercy of the scheduler, and a run that a busy moment sent to fp32 trains at half
    speed (a `genie train` started as another process exited measured fp32 here, where bf16
    products run in 0.36-0.48 of the fp32 time).

    The products run on a thread of their own that ends with them. Run on the caller's
    thread, they left its OpenMP threads behind, and a world then stepped on another thread
    ran at half speed: `genie play --headless` made 10-11 frames/s after the probe against
    19-21 with it on its own thread (2 cores).
    """
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="genie-bf16-probe") as pool:
        return pool.submit(_bf16_products_faster).result()  # the thread ends with the `with`


def _bf16_products_faster() -> bool:
    a = {dtype: torch.randn(512, 512).to(dtype) for dtype in (torch.bfloat16, torch.float32)}
    best = dict.fromkeys(a, math.inf)
    for x in a.values():
        x @ x  # warm-up: first calls pick kernels
    for _ in range(8):
        for dtype, x in a.items():
            start = time.perf_counter()
            x @ x
            best[dtype] = min(best[dtype], time.perf_counter() - start)
    return best[torch.bfloat16] < 0.7 * best[torch.float32]
