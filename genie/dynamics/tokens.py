"""The frozen tokenizer's codes and the LAM's actions for a whole dataset, cached on disk.

The dynamics model trains on codes and latent actions, never on pixels. Computing them on the
fly would run both frozen encoders on every batch, every epoch; on the tiny preset that costs
more than the dynamics step itself (see README, dynamics training). So they are computed once
per (dataset, tokenizer, LAM) into a folder:

    codes.npy     (F, h, w) uint16   every frame of the dataset, episodes back to back
    actions.npy   (F,) int16         latent action from frame i to i+1; -1 at an episode's end
    latents.npy   (F, N, C) float16  only for a DiT on encoder latents: the tokenizer's
                                     pre-quantization unit vectors the codes were chosen from
    index.json    episodes (split, offset, length) and what the cache was made from

and read through memory maps. Long episodes are coded in chunks; each chunk is preceded by the
frames its first frame can see through the encoders' temporal windows, so the codes are those
of the whole episode coded at once.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from genie.data.files import write_json_atomic
from genie.data.index import open_dataset
from genie.errors import GenieError

CHUNK = 64  # frames coded per forward pass


def receptive_frames(model, depth: int) -> int | None:
    """Earlier frames a frame's output can depend on through a causal windowed stack."""
    window = getattr(model.config, "window", None)
    return None if window is None else depth * (window - 1)


def code_episode(tokenizer, lam, frames: np.ndarray, device: torch.device, *,
                 latents: bool = False) -> tuple[Tensor, Tensor, Tensor | None]:
    """Frames (L, H, W, 3) uint8 -> (codes (L, h, w), latent actions (L-1,), and with
    `latents` the pre-quantization latents (L, N, C), else None), in chunks."""
    tok_warm = receptive_frames(tokenizer, tokenizer.config.encoder_depth)
    lam_warm = receptive_frames(lam, lam.config.encoder_depth)
    codes, actions, units = [], [], []
    for start in range(0, len(frames), CHUNK):
        end = min(start + CHUNK, len(frames))
        a = 0 if tok_warm is None else max(0, start - tok_warm)
        clip = torch.from_numpy(np.array(frames[a:end]))[None].to(device)
        if latents:
            c, z = tokenizer.encode_latents(clip)
            units.append(z[0, start - a:])  # (end - start, N, C)
        else:
            c = tokenizer.encode(clip)
        codes.append(c[0, start - a:])  # (end - start, h, w)
        # Transitions start-1 .. end-2: the one into this chunk's first frame comes with it.
        first = max(0, start - 1)
        a = 0 if lam_warm is None else max(0, first - lam_warm)
        if end - a >= 2:
            clip = torch.from_numpy(np.array(frames[a:end]))[None].to(device)
            actions.append(lam.infer_actions(clip)[0, first - a:])
    actions = torch.cat(actions) if actions else torch.zeros(0, dtype=torch.long)
    return torch.cat(codes), actions, torch.cat(units) if latents else None


def fingerprint(data: Path, tokenizer_dir: Path, lam_dir: Path) -> dict:
    """What a cache was made from: the dataset and the two models' weights."""
    def digest(folder: Path) -> str:
        h = hashlib.sha1()
        for f in sorted(folder.glob("*.safetensors")):
            h.update(f.read_bytes())
        return h.hexdigest()

    info = open_dataset(data)
    return {"dataset": str(info.path.resolve()), "frames": info.meta["frames"],
            "tokenizer": digest(tokenizer_dir), "lam": digest(lam_dir)}


@torch.no_grad()
def build_token_cache(tokenizer, lam, data: str | Path, out: str | Path, *, made_from: dict,
                      device: torch.device, latents: bool = False) -> Path:
    """Code every episode of `data` into `out` (kept if it was made from the same inputs and
    holds the latents when asked for them)."""
    from tqdm import tqdm

    out = Path(out)
    index_file = out / "index.json"
    if index_file.exists() and json.loads(index_file.read_text())["made_from"] == made_from \
            and (not latents or (out / "latents.npy").exists()):
        return out
    info = open_dataset(data)
    if (info.meta["height"], info.meta["width"]) != (tokenizer.config.height,
                                                      tokenizer.config.width):
        raise GenieError(
            f"dataset {data} is {info.meta['height']}x{info.meta['width']} but the tokenizer "
            f"codes {tokenizer.config.height}x{tokenizer.config.width} frames: use the dataset "
            "it was trained on, or prepare this one at its size"
        )
    tmp = out.with_name(out.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    h, w = tokenizer.config.height // tokenizer.config.patch, \
        tokenizer.config.width // tokenizer.config.patch
    total = sum(ep["length"] for ep in info.episodes)
    codes = np.lib.format.open_memmap(tmp / "codes.npy", "w+", np.uint16, (total, h, w))
    actions = np.lib.format.open_memmap(tmp / "actions.npy", "w+", np.int16, (total,))
    units = np.lib.format.open_memmap(tmp / "latents.npy", "w+", np.float16,
                                      (total, h * w, tokenizer.config.code_dim)) \
        if latents else None
    episodes, offset, shards = [], 0, {}
    tokenizer.eval()
    lam.eval()
    for ep in tqdm(info.episodes, desc="coding dataset", unit="episode"):
        if ep["shard"] not in shards:
            shards[ep["shard"]] = np.load(info.path / ep["shard"], mmap_mode="r")
        frames = shards[ep["shard"]][ep["offset"]: ep["offset"] + ep["length"]]
        c, a, z = code_episode(tokenizer, lam, frames, device, latents=latents)
        n = ep["length"]
        if units is not None:
            units[offset: offset + n] = z.cpu().numpy().astype(np.float16)
        codes[offset: offset + n] = c.cpu().numpy().astype(np.uint16)
        actions[offset: offset + n - 1] = a.cpu().numpy().astype(np.int16)
        actions[offset + n - 1] = -1
        episodes.append({"split": ep["split"], "offset": offset, "length": n})
        offset += n
    for array in (codes, actions, units):
        if array is not None:
            array.flush()
    del codes, actions, units
    write_json_atomic(tmp / "index.json", {"made_from": made_from, "grid": [h, w],
                                           "episodes": episodes})
    shutil.rmtree(out, ignore_errors=True)
    tmp.rename(out)
    return out


class TokenDataset(torch.utils.data.Dataset):
    """Windows of `seq_len` frames of a token cache: (codes (T, h, w), actions (T-1,)) int64,
    and with `latents` a third item, the latents (T, N, C) float32."""

    def __init__(self, folder: str | Path, seq_len: int, split: str = "train", *,
                 latents: bool = False):
        self.folder, self.seq_len, self.latents = Path(folder), seq_len, latents
        index = json.loads((self.folder / "index.json").read_text())
        self.episodes = [ep for ep in index["episodes"]
                         if ep["split"] == split and ep["length"] >= seq_len]
        if not self.episodes:
            raise GenieError(f"no {split} episode of {seq_len}+ frames in the token cache "
                             f"{self.folder}: lower dynamics.context or record longer episodes")
        self._ends = np.cumsum([ep["length"] - seq_len + 1 for ep in self.episodes])
        self._maps: tuple[np.ndarray, ...] | None = None

    def __len__(self) -> int:
        return int(self._ends[-1])

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_maps": None}  # each worker opens its own maps

    def __getitem__(self, index: int) -> tuple[Tensor, ...]:
        if self._maps is None:
            names = ("codes", "actions") + (("latents",) if self.latents else ())
            self._maps = tuple(np.load(self.folder / f"{n}.npy", mmap_mode="r") for n in names)
        e = int(np.searchsorted(self._ends, index, side="right"))
        first = self.episodes[e]["offset"] + index - (int(self._ends[e - 1]) if e else 0)
        rows = slice(first, first + self.seq_len)
        codes, actions = self._maps[:2]
        item = (torch.from_numpy(codes[rows].astype(np.int64)),
                torch.from_numpy(actions[rows][:-1].astype(np.int64)))
        if self.latents:
            item += (torch.from_numpy(self._maps[2][rows].astype(np.float32)),)
        return item
