"""Drift: how long a world's own rollouts keep looking like real video, without ground truth.

Long rollouts (hundreds of frames) with random latent actions, each held 1-4 steps as a player
would, are measured frame by frame:
    sharpness        variance of the Laplacian of the grey image (0-255 scale): blur lowers it,
                     noise raises it;
    colour distance  total variation (half the L1 distance, 0..1) between the frame's joint RGB
                     histogram (8 bins per channel) and the prompt's;
    token entropy    entropy in bits of the histogram of the frame's own tokenizer codes: a
                     collapsed world repeats a few codes, a noisy one spreads over many.
The same statistics over real video of the same split (episode openings, with their first
frames as the "prompt") give a normal range, the 1st to 99th percentile over real frames. A
statistic "leaves" at the first step where its mean over the rollouts falls outside that range.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

STATS = ("sharpness", "colour_distance", "token_entropy")
BINS = 8  # per channel: 512 joint colour bins
RANGE = (1.0, 99.0)  # percentiles of real frames that bound "normal"


def sharpness(frames: np.ndarray) -> np.ndarray:
    """Variance of the Laplacian of each frame's grey image: (M, H, W, 3) uint8 -> (M,)."""
    x = torch.from_numpy(frames).float()
    grey = (x @ torch.tensor([0.299, 0.587, 0.114]))[:, None]  # (M, 1, H, W)
    kernel = torch.tensor([[0.0, 1.0, 0.0], [1.0, -4.0, 1.0], [0.0, 1.0, 0.0]])[None, None]
    return F.conv2d(grey, kernel).flatten(1).var(1).numpy()


def colour_histograms(frames: np.ndarray) -> np.ndarray:
    """Joint RGB histograms (M, BINS**3), each summing to 1."""
    q = torch.from_numpy(frames).long() // (256 // BINS)  # (M, H, W, 3)
    index = ((q[..., 0] * BINS + q[..., 1]) * BINS + q[..., 2]).flatten(1)  # (M, H*W)
    hist = torch.zeros(len(frames), BINS**3).scatter_add_(1, index, torch.ones(index.shape))
    return (hist / index.shape[1]).numpy()


def colour_distance(frames: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """Total variation between each frame's colour histogram and the mean of `reference`'s."""
    ref = colour_histograms(reference).mean(0)
    return 0.5 * np.abs(colour_histograms(frames) - ref).sum(1)


def token_entropy(codes: np.ndarray) -> np.ndarray:
    """Entropy in bits of each row's code histogram: (M, N) int -> (M,)."""
    codes = torch.from_numpy(np.asarray(codes, dtype=np.int64))
    counts = torch.zeros(len(codes), int(codes.max()) + 1).scatter_add_(
        1, codes, torch.ones(codes.shape))
    p = counts / codes.shape[1]
    return -(p * torch.log2(p.clamp_min(1e-12))).sum(1).numpy()


def frame_stats(world, frames: np.ndarray, prompt: np.ndarray) -> dict[str, np.ndarray]:
    """The three statistics of frames (M, H, W, 3) after `prompt` (t, H, W, 3)."""
    return {"sharpness": sharpness(frames), "colour_distance": colour_distance(frames, prompt),
            "token_entropy": token_entropy(world.codes(frames))}


def real_range(world, stretches: list[np.ndarray], context: int) -> dict[str, dict]:
    """Percentile range (and median) of each statistic over real frames after their openings."""
    per: dict[str, list[np.ndarray]] = {name: [] for name in STATS}
    for clip in stretches:
        if len(clip) <= context:
            continue
        for name, values in frame_stats(world, clip[context:], clip[:context]).items():
            per[name].append(values)
    out = {}
    for name, parts in per.items():
        if not parts:
            return {}
        values = np.concatenate(parts)
        lo, hi = np.percentile(values, RANGE)
        out[name] = {"low": float(lo), "high": float(hi), "median": float(np.median(values)),
                     "frames": int(len(values))}
    return out


def drift_rollouts(world, prompts: np.ndarray, steps: int, seed: int, batch: int,
                   progress: bool = True) -> np.ndarray:
    """Frames (D, steps, H, W, 3) of rollouts from prompts (D, C, H, W, 3), random actions."""
    from tqdm import tqdm

    from genie.generate import random_actions

    actions = np.array([random_actions(steps, world.num_actions, seed + i)
                        for i in range(len(prompts))])  # (D, steps), one stream per rollout
    out = []
    with tqdm(total=len(prompts) * steps, desc="drift", unit="frame",
              disable=not progress) as bar:
        for lo in range(0, len(prompts), batch):
            world.reset(prompts[lo:lo + batch], seed=seed)
            frames = []
            for t in range(steps):
                frames.append(world.step(actions[lo:lo + batch, t]))
                bar.update(len(frames[-1]))
            out.append(np.stack(frames, axis=1))
    return np.concatenate(out)


def leave_step(curve: np.ndarray, low: float, high: float) -> int | None:
    """First step (1-based) whose value is outside [low, high]; None when it never leaves."""
    outside = np.flatnonzero((curve < low) | (curve > high))
    return int(outside[0]) + 1 if len(outside) else None


def in_range_share(curve: np.ndarray, low: float, high: float) -> float:
    """Share of the steps whose value lies in [low, high]. Steadier than `leave_step`, which
    one dip of a noisy curve decides: on the shipped world, 4 and 16 rollouts of the same
    sampler left the range of sharpness at steps 180 and 60, in range for 84% and 93% of them."""
    return float(((curve >= low) & (curve <= high)).mean())


def measure_drift(world, prompts: np.ndarray, stretches: list[np.ndarray], context: int,
                  steps: int, seed: int, batch: int, progress: bool = True
                  ) -> tuple[dict, np.ndarray]:
    """(the `drift` section of metrics.json, the rollouts' frames (D, steps, H, W, 3))."""
    rollout = drift_rollouts(world, prompts, steps, seed, batch, progress)
    d, t = rollout.shape[:2]
    curves = {name: np.zeros((d, t)) for name in STATS}  # per rollout and step
    for i in range(d):
        for name, values in frame_stats(world, rollout[i], prompts[i]).items():
            curves[name][i] = values
    ranges = real_range(world, stretches, context)
    result = {"steps": t, "rollouts": d, "actions": "random, each held 1-4 steps",
              "range_percentiles": list(RANGE), "real": ranges,
              "curves": {name: c.mean(0).tolist() for name, c in curves.items()},
              "leaves_at": {}, "in_range": {}}
    for name in STATS:
        if name in ranges:
            r, curve = ranges[name], curves[name].mean(0)
            result["leaves_at"][name] = leave_step(curve, r["low"], r["high"])
            result["in_range"][name] = in_range_share(curve, r["low"], r["high"])
    if not ranges:
        result["note"] = f"no real episode of the split is longer than the {context}-frame " \
                         "context: no real range to compare with"
    return result, rollout
