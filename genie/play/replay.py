"""A recorded episode behind the world's play interface, for `genie play --replay`.

The window talks to it exactly as to a learned world (reset/step/snapshot/restore/preview), so
the same UI that plays a model steps through real frames: every key shows the real next frame;
the key pressed is logged, not used. Its one 'action' is 'next frame'; the caption names the
action the recorder really took, where the dataset has them.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from genie.errors import GenieError


class ReplayWorld:
    """Real episodes of a prepared dataset, one frame per step (validation split, else train)."""

    num_actions = 1
    action_names = ["next frame"]
    key_map = {key: 0 for key in ("left", "right", "up", "down", "a", "d", "w", "s", "space")}

    def __init__(self, dataset: str | Path, split: str = "val"):
        from genie.data.index import open_dataset

        self.info = open_dataset(dataset)
        self.split = split if self.info.split(split) else "train"
        self.episodes = self.info.split(self.split)
        if not self.episodes:
            raise GenieError(f"dataset {dataset} has no episodes to replay: prepare it again")
        self.true_names = self.info.meta.get("action_names") or []
        self.taken: list[int] = []  # the keys' latent actions, in order: logged, not used
        self._frames: np.ndarray | None = None
        self._true: np.ndarray | None = None
        self.episode, self.steps = 0, 0

    @property
    def size(self) -> tuple[int, int]:
        return self.info.size

    @property
    def caption(self) -> str:
        """A line for the panel: where in the recording we are and what the recorder did."""
        if self._frames is None:
            return ""
        t, n = self.steps, len(self._frames)
        text = f"replay ep {self.episode} ({self.split}) frame {t + 1}/{n}"
        if t + 1 >= n:
            return text + ": end (N: next)"
        if self._true is not None and self._true[t] >= 0:
            a = int(self._true[t])
            text += f", next: {self.true_names[a] if a < len(self.true_names) else a}"
        return text

    def reset(self, prompt: int, seed: int | None = None) -> np.ndarray:
        """Start episode `prompt` (an index into the split's episodes) at its first frame."""
        episode = int(prompt)
        if not 0 <= episode < len(self.episodes):
            raise GenieError(f"dataset {self.info.path} has {len(self.episodes)} {self.split} "
                             f"episodes: episode {episode} does not exist (give 0.."
                             f"{len(self.episodes) - 1})")
        ep = self.episodes[episode]
        shard = np.load(self.info.path / ep["shard"], mmap_mode="r")
        rows = slice(ep["offset"], ep["offset"] + ep["length"])
        self._frames = np.array(shard[rows])  # (T, H, W, 3), one episode: small
        sidecar = self.info.path / (ep["shard"][:-4] + ".actions.npy")
        self._true = np.load(sidecar, mmap_mode="r")[rows] if sidecar.exists() else None
        self.episode, self.steps = episode, 0
        self.taken = []
        return self._frames[0]

    def step(self, action: int) -> np.ndarray:
        """The real next frame (the last one again at the end of the episode)."""
        if self._frames is None:
            raise RuntimeError("call reset(episode) first")
        self.taken.append(int(action))
        self.steps = min(self.steps + 1, len(self._frames) - 1)
        return self._frames[self.steps]

    def snapshot(self) -> tuple[int, int]:
        return self.steps, len(self.taken)

    def restore(self, state: tuple[int, int]) -> None:
        self.steps, taken = state
        del self.taken[taken:]

    def preview(self, actions=None) -> np.ndarray:
        """Whatever the key, the next frame is the recorded one."""
        n = self.num_actions if actions is None else len(actions)
        nxt = self._frames[min(self.steps + 1, len(self._frames) - 1)]
        return np.repeat(nxt[None], n, axis=0)

    def prompts(self, first: int = 0) -> list[int]:
        """Episode numbers from `first` on, then from the start: what N cycles through."""
        n = len(self.episodes)
        return [(first + i) % n for i in range(n)]
