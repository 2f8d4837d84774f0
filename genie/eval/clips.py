"""Held-out clips and stretches of real video for evaluating a world.

`select_clips` picks windows of a fixed length from a dataset split, spread over its episodes
and seeded, with the true actions where the dataset has them. `real_stretches` reads longer
runs of frames from the start of each episode, the reference drift is measured against.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from genie.errors import GenieError


@dataclass
class Clips:
    """N real clips of T frames and the true action of each transition (-1 where unknown)."""

    frames: np.ndarray  # (N, T, H, W, 3) uint8
    actions: np.ndarray  # (N, T-1) int64
    action_names: list[str]  # names of the true actions, [] when the dataset has none
    sources: list[str]  # the video each clip comes from
    starts: list[int]  # first frame of each clip within its episode

    def __len__(self) -> int:
        return len(self.frames)

    @property
    def has_true_actions(self) -> bool:
        return bool((self.actions >= 0).any())


def split_episodes(data: str | Path, split: str) -> tuple[object, list[dict]]:
    """(dataset info, the episodes of `split`), refusing a split the dataset does not have."""
    from genie.data.index import open_dataset

    info = open_dataset(data)
    episodes = info.split(split)
    if not episodes:
        splits = ", ".join(sorted({ep["split"] for ep in info.episodes}))
        fix = " (--split train), or prepare it again with --val-fraction above 0 to hold " \
              "some episodes out" if split == "val" else ""
        raise GenieError(f"dataset {data} has no {split} episodes (it has: {splits}): pass "
                         f"--split with one of those{fix}")
    return info, episodes


def select_clips(data: str | Path, split: str, length: int, count: int, seed: int) -> Clips:
    """`count` windows of `length` frames from `split`, spread evenly over its episodes.

    Episodes take turns, so a few long episodes still yield several clips each (their starts
    drawn without replacement with `seed`); fewer clips come back when the split holds fewer
    distinct windows.
    """
    from genie.data.dataset import VideoDataset

    _, episodes = split_episodes(data, split)
    longest = max(ep["length"] for ep in episodes)
    if longest < length:
        raise GenieError(f"no {split} episode of {data} has the {length} frames a clip needs "
                         f"(context + horizon; the longest has {longest}): lower --horizon or "
                         "--context")
    dataset = VideoDataset(data, length, split=split, stride=1, with_actions=True)
    windows = [ep["length"] - length + 1 for ep in dataset.episodes]  # per usable episode
    quota = [0] * len(windows)
    for _ in range(min(count, sum(windows))):  # round robin over episodes with windows left
        e = min((e for e in range(len(windows)) if quota[e] < windows[e]),
                key=lambda e: (quota[e], e))
        quota[e] += 1
    rng = np.random.default_rng(seed)
    picks = []  # (episode, start)
    for e, (n, w) in enumerate(zip(quota, windows, strict=True)):
        picks += [(e, int(s)) for s in np.sort(rng.choice(w, size=n, replace=False))]
    first = np.concatenate([[0], np.cumsum(windows)[:-1]])
    frames, actions = zip(*(dataset[int(first[e]) + s] for e, s in picks), strict=True)
    names = list(dataset.info.meta.get("action_names") or [])
    return Clips(np.stack([f.numpy() for f in frames]), np.stack([a.numpy() for a in actions]),
                 names, [dataset.episodes[e]["source"] for e, _ in picks], [s for _, s in picks])


def real_stretches(data: str | Path, split: str, length: int, max_frames: int) -> list[np.ndarray]:
    """The first `length` frames (fewer if shorter) of episodes of `split`, each (t, H, W, 3).

    Stops once `max_frames` frames are read, taking episodes spread over the split.
    """
    info, episodes = split_episodes(data, split)
    per = max(1, min(length, max_frames))
    wanted = max(1, min(len(episodes), max_frames // per))
    order = np.linspace(0, len(episodes) - 1, wanted).round().astype(int)
    out, total = [], 0
    for i in dict.fromkeys(order.tolist()):
        ep = episodes[i]
        n = min(length, ep["length"], max_frames - total)
        if n < 1:
            break
        shard = np.load(info.path / ep["shard"], mmap_mode="r")
        out.append(np.array(shard[ep["offset"]: ep["offset"] + n]))
        total += n
    return out
