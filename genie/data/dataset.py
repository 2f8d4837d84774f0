"""Windows of frames from a prepared dataset, for training and evaluation."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import torch

from genie.data.index import open_dataset
from genie.errors import GenieError

log = logging.getLogger(__name__)


class VideoDataset(torch.utils.data.Dataset):
    """Windows of `seq_len` frames (every `frame_skip`-th frame) inside one episode.

    Item i is the i-th window start over all episodes of the split (every `stride` frames), so a
    DataLoader with `shuffle=True` and a seeded generator draws random windows reproducibly.
    Items are `(T, H, W, 3)` uint8 tensors or, with `with_actions=True`, `(frames, actions)` where
    `actions[t]` (int64, -1 if unknown) is the true action from frame t to frame t+1 — the first
    of the `frame_skip` source actions that transition spans.

    Shards are memory-mapped lazily, so each DataLoader worker opens its own maps.
    """

    def __init__(
        self,
        path: str | Path,
        seq_len: int,
        split: str = "train",
        frame_skip: int = 1,
        stride: int = 1,
        with_actions: bool = False,
    ):
        if seq_len < 1 or frame_skip < 1 or stride < 1:
            raise GenieError("seq_len, frame_skip and stride must be at least 1")
        self.info = open_dataset(path)
        self.seq_len, self.frame_skip, self.stride = seq_len, frame_skip, stride
        self.with_actions = with_actions
        self.span = (seq_len - 1) * frame_skip + 1
        episodes = self.info.split(split)
        self.episodes = [ep for ep in episodes if ep["length"] >= self.span]
        if not self.episodes:
            longest = max((ep["length"] for ep in episodes), default=0)
            raise GenieError(
                f"no {split} episode of {self.info.path} has the {self.span} frames a window "
                f"needs ({len(episodes)} episodes, longest {longest}): lower seq_len or frame_skip"
            )
        if len(self.episodes) < len(episodes):
            log.warning(
                "%d of %d %s episodes are shorter than %d frames and are skipped",
                len(episodes) - len(self.episodes), len(episodes), split, self.span,
            )
        windows = [(ep["length"] - self.span) // stride + 1 for ep in self.episodes]
        self._ends = np.cumsum(windows)
        self._maps: dict[str, tuple[np.ndarray, np.ndarray | None]] = {}

    def __len__(self) -> int:
        return int(self._ends[-1])

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        state["_maps"] = {}  # memory maps are not shared across processes: reopen in each worker
        return state

    def _shard(self, name: str) -> tuple[np.ndarray, np.ndarray | None]:
        if name not in self._maps:
            frames = np.load(self.info.path / name, mmap_mode="r")
            actions_path = self.info.path / (name[:-4] + ".actions.npy")
            actions = np.load(actions_path, mmap_mode="r") if actions_path.exists() else None
            self._maps[name] = (frames, actions)
        return self._maps[name]

    def locate(self, index: int) -> tuple[dict, int]:
        """(episode, first frame within it) of window `index`."""
        if not 0 <= index < len(self):
            raise IndexError(f"window {index} out of range for {len(self)} windows")
        e = int(np.searchsorted(self._ends, index, side="right"))
        before = int(self._ends[e - 1]) if e else 0
        return self.episodes[e], (index - before) * self.stride

    def __getitem__(self, index: int):
        episode, start = self.locate(index)
        frames, actions = self._shard(episode["shard"])
        first = episode["offset"] + start
        rows = slice(first, first + self.span, self.frame_skip)
        clip = torch.from_numpy(np.array(frames[rows]))  # (T, H, W, 3) uint8, copied off the map
        if not self.with_actions:
            return clip
        if actions is None:
            acts = torch.full((self.seq_len - 1,), -1, dtype=torch.int64)
        else:
            acts = torch.from_numpy(actions[rows][:-1].astype(np.int64))
        return clip, acts
