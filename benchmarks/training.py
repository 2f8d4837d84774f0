"""The real training step of each `tiny` model, timed, its FLOPs counted (benchmarks/flops.py).

Each stage gets the batch shape of its preset: tokenizer clips of pixels, LAM clips of pixels,
dynamics clips of codes and actions. For the dynamics, tokens read from the disk cache (a
memmap slice, here an in-memory tensor: the read is microseconds) are timed against tokens
computed on the fly by the frozen tokenizer and LAM for every batch.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable


def _models(stage: str, overrides: list[str] = ()):
    """A `tiny` model of `stage` (with `key=value` overrides), a batch of its preset's shape,
    and the config."""
    import torch

    from genie.config import load_config
    from genie.dynamics import model_class
    from genie.lam.model import LatentActionModel
    from genie.tokenizer.model import VideoTokenizer

    config = load_config("tiny", list(overrides))
    cfg = getattr(config, stage)
    b, t = cfg.train.batch_size, cfg.train.seq_len or config.data.seq_len
    if stage == "dynamics":
        t = min(t, cfg.context)
        grid = 64 // config.tokenizer.patch
        model = model_class(cfg.backend)(
            vocab_size=config.tokenizer.codebook_size, grid_h=grid, grid_w=grid,
            num_actions=config.lam.num_actions, **cfg.model_kwargs())
        batch = (torch.randint(0, config.tokenizer.codebook_size, (b, t, grid, grid)),
                 torch.randint(0, config.lam.num_actions, (b, t - 1)))
        return model, batch, config
    cls = VideoTokenizer if stage == "tokenizer" else LatentActionModel
    model = cls(height=64, width=64, **cfg.model_kwargs())
    return model, torch.randint(0, 256, (b, t, 64, 64, 3), dtype=torch.uint8), config


def on_the_fly_coder(config) -> Callable:
    """Frames (B, T, H, W, 3) -> (codes, actions) by a frozen tiny tokenizer and LAM."""
    import torch

    from genie.lam.model import LatentActionModel
    from genie.tokenizer.model import VideoTokenizer

    tok = VideoTokenizer(height=64, width=64, **config.tokenizer.model_kwargs()).eval()
    lam = LatentActionModel(height=64, width=64, **config.lam.model_kwargs()).eval()

    @torch.no_grad()
    def code(frames):
        return tok.encode(frames), lam.infer_actions(frames)
    return code


def step_rate(stage: str, precision: str, *, on_the_fly: bool = False, rounds: int = 5,
              steps: int = 2, overrides: list[str] = (),
              reference: Callable[[], dict[str, float]] | None = None) -> dict:
    """Frames/s and achieved FLOP/s of one stage's optimizer step (forward, backward, AdamW):
    medians over `rounds` rounds of `steps` steps.

    `reference()` measures the machine's matrix-product rates ({"bf16": FLOP/s, ...}) just
    before each round, and "of_peak" holds the median over rounds of the step's FLOP rate as
    a fraction of each: this machine's speed drifts by up to 30% within minutes, and a rate
    paired with one measured seconds apart keeps that drift out of the fraction.
    """
    import torch
    from flops import flop_counter

    model, batch, config = _models(stage, overrides)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=True)  # as the engine has it
    autocast = torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16")
    frames, code = None, None
    if on_the_fly:
        code = on_the_fly_coder(config)
        b, t = batch[0].shape[:2]
        frames = torch.randint(0, 256, (b, t, 64, 64, 3), dtype=torch.uint8)

    def step() -> None:
        with autocast:
            loss, _ = model(code(frames) if on_the_fly else batch)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    with flop_counter() as counter:
        step()
    flops = counter.get_total_flops()
    step()  # warm-up
    times, fractions = [], []
    for _ in range(rounds):
        peaks = reference() if reference else {}
        start = time.perf_counter()
        for _ in range(steps):
            step()
        times.append((time.perf_counter() - start) / steps)
        fractions.append({name: flops / times[-1] / rate for name, rate in peaks.items()})
    seconds = statistics.median(times)
    shape = batch[0].shape if stage == "dynamics" else batch.shape
    return {"frames_per_s": shape[0] * shape[1] / seconds, "flops_per_step": flops,
            "flop_rate": flops / seconds, "seconds_per_step": seconds,
            "of_peak": {name: statistics.median(f[name] for f in fractions)
                        for name in fractions[0]}}
