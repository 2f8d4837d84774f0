"""A learned world: tokenizer + latent action model + dynamics, driven one action at a time.

    world = genie.load("worlds/coinrun")
    frame = world.reset(prompt_frames)       # (t, H, W, 3) uint8 -> the last frame, as seen
    frame = world.step(3)                    # latent action 3 -> the next frame (H, W, 3)
    state = world.snapshot(); world.step(5); world.restore(state)   # undo, exactly

Frames are numpy uint8 (H, W, 3). Everything also works batched: a prompt (B, t, H, W, 3) and
actions (B,) give frames (B, H, W, 3), which evaluation uses to roll many clips at once.

A world folder holds tokenizer/, lam/, dynamics/ (each config.json + safetensors), prompts/
(real clips to start from) and world.json (schema, backend, resolution, context, action
names, key map, sampler settings, provenance). Past frames never change, so both the dynamics
and the tokenizer's decoder keep their temporal keys/values in caches: a step costs work on
one frame whatever the history.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from genie.errors import GenieError
from genie.nn import KVCache

SCHEMA = 1
# What a world runs in; load() resolves "auto" to one of them for its device.
RUN_PRECISIONS = ("fp32", "bf16")


@dataclass(frozen=True)
class WorldState:
    """Everything the next step depends on: frames, caches and the random generator."""

    sampler: Any  # the backend sampler's own state
    decoder: KVCache
    frame: Tensor  # (B, H, W, 3) the frame last shown
    steps: int


class World:
    """Tokenizer, LAM and dynamics composed behind `reset(prompt)` / `step(action)`."""

    def __init__(self, tokenizer, lam, dynamics, meta: dict, *, folder: Path | None = None,
                 sampler: dict | None = None, precision: str = "fp32"):
        from genie.dynamics import sampler_for

        if precision not in RUN_PRECISIONS:
            raise GenieError(f"precision {precision!r} is not one of {', '.join(RUN_PRECISIONS)}")
        check_parts(tokenizer, lam, dynamics, meta, folder or Path("."))
        self.precision = precision
        self.tokenizer, self.lam, self.dynamics = tokenizer.eval(), lam.eval(), dynamics.eval()
        self.meta, self.folder = meta, folder
        self.sampler = sampler_for(meta.get("backend", "maskgit"), dynamics,
                                   {**meta.get("sampler", {}), **(sampler or {})})
        self._decoder: KVCache | None = None
        self._frame: Tensor | None = None
        self._batched = False
        self.steps = 0

    # ------------------------------------------------------------------ description

    @property
    def num_actions(self) -> int:
        return self.dynamics.config.num_actions

    @property
    def size(self) -> tuple[int, int]:
        """(H, W) of the frames."""
        return self.tokenizer.config.height, self.tokenizer.config.width

    @property
    def context(self) -> int:
        """Frames the dynamics attends to; longer histories slide."""
        return self.dynamics.config.context

    @property
    def action_names(self) -> list[str]:
        names = self.meta.get("action_names") or []
        return names if len(names) == self.num_actions else \
            [f"action {i + 1}" for i in range(self.num_actions)]

    @property
    def key_map(self) -> dict[str, int]:
        """Key name (pygame's, e.g. 'left', 'space') -> latent action."""
        return dict(self.meta.get("key_map") or {})

    @property
    def device(self) -> torch.device:
        return self.dynamics.device

    def autocast(self) -> torch.autocast:
        """The context every forward pass of this world runs in: bf16 autocast for a bf16
        world, a disabled one for fp32. Caches made under one must be stepped under it."""
        return torch.autocast(self.device.type, dtype=torch.bfloat16,
                              enabled=self.precision == "bf16")

    def prompt_files(self) -> list[Path]:
        """The world's own prompt clips (prompts/*.npy), sorted."""
        return sorted((self.folder / "prompts").glob("*.npy")) if self.folder else []

    # ------------------------------------------------------------------ stepping

    @torch.no_grad()
    def reset(self, prompt, actions=None, seed: int | None = None) -> np.ndarray:
        """Start from real frames (t, H, W, 3) or (B, t, H, W, 3) uint8 (one frame: (H, W, 3)).

        `actions` (t-1) between the prompt frames are inferred by the LAM when left out; only
        the last `context` frames are kept. Returns the last prompt frame as the world shows it
        (through the tokenizer). `seed` reseeds sampling; left out, the stream continues.
        """
        frames, self._batched = self._as_clip(prompt)  # (B, t, H, W, 3)
        frames = frames[:, -self.context:]
        if actions is not None:
            actions = torch.as_tensor(np.asarray(actions), device=self.device).long()
            actions = actions.reshape(frames.shape[0], -1)[:, -(frames.shape[1] - 1):]
        with self.autocast():
            if actions is None and frames.shape[1] > 1:
                actions = self.lam.infer_actions(frames)
            if getattr(self.sampler.model.config, "latent", "code") == "encoder":
                codes, latents = self.tokenizer.encode_latents(frames)  # (B, t, h, w), (B, t, N, C)
                self.sampler.reset(latents, actions, seed=seed)
            else:
                codes = self.tokenizer.encode(frames)  # (B, t, h, w)
                self.sampler.reset(codes, actions, seed=seed)
            self._decoder = self.tokenizer.new_decoder_cache()
            for t in range(codes.shape[1]):
                self._frame = self.tokenizer.decode_next(codes[:, t], self._decoder)
        self.steps = 0
        return self._out(self._frame)

    @torch.no_grad()
    def step(self, action) -> np.ndarray:
        """One latent action (int, or (B,) when batched) -> the next frame."""
        if self._frame is None:
            raise RuntimeError("the world has no prompt yet: call reset(prompt_frames) first")
        action = torch.as_tensor(np.asarray(action), device=self.device).long()
        if action.numel() and (action.min() < 0 or action.max() >= self.num_actions):
            raise ValueError(f"latent actions are 0..{self.num_actions - 1}, got {action.tolist()}")
        with self.autocast():
            codes = self.sampler.next_frame(action)  # (B, h, w)
            self._frame = self.tokenizer.decode_next(codes, self._decoder)
        self.steps += 1
        return self._out(self._frame)

    def rollout(self, actions) -> np.ndarray:
        """Step through `actions` (T,) or (T, B): frames (T, H, W, 3) or (T, B, H, W, 3)."""
        return np.stack([self.step(a) for a in actions])

    def snapshot(self) -> WorldState:
        """The current state; cheap (caches share their tensors)."""
        if self._frame is None:
            raise RuntimeError("nothing to snapshot: call reset(prompt_frames) first")
        return WorldState(self.sampler.state(), self._decoder.clone(), self._frame, self.steps)

    def restore(self, state: WorldState) -> None:
        """Return to a snapshot: the same step with the same action then gives the same frame."""
        self.sampler.load_state(state.sampler)
        self._decoder, self._frame, self.steps = state.decoder.clone(), state.frame, state.steps

    @torch.no_grad()
    def preview(self, actions=None) -> np.ndarray:
        """The next frame for each of `actions` (default all), (A, H, W, 3); state unchanged.

        One batched step from copies of the current state (an unbatched world only).
        """
        if self._batched:
            raise RuntimeError("preview works on an unbatched world (a prompt of one clip)")
        actions = torch.arange(self.num_actions) if actions is None else torch.as_tensor(actions)
        n = len(actions)
        saved = self.snapshot()
        self.sampler.load_state(saved.sampler.repeat(n))
        self._decoder = saved.decoder.repeat(n)
        try:
            with self.autocast():
                codes = self.sampler.next_frame(actions.to(self.device))  # (A, h, w)
                return self.tokenizer.decode_next(codes, self._decoder).cpu().numpy()
        finally:
            self.restore(saved)

    @torch.no_grad()
    def infer_actions(self, video) -> np.ndarray:
        """The latent action of each transition of real frames (T, H, W, 3) -> (T-1,) int."""
        frames, batched = self._as_clip(video)
        with self.autocast():
            actions = self.lam.infer_actions(frames).cpu().numpy()
        return actions if batched else actions[0]

    # ------------------------------------------------------------------ helpers

    def _as_clip(self, frames) -> tuple[Tensor, bool]:
        """uint8 frames in any accepted shape -> ((B, t, H, W, 3) on the device, batched?)."""
        x = torch.as_tensor(np.asarray(frames))
        batched = x.ndim == 5
        x = x.reshape(1, 1, *x.shape) if x.ndim == 3 else x if batched else x[None]
        if x.ndim != 5 or x.shape[-1] != 3 or x.dtype != torch.uint8:
            raise GenieError(f"frames must be uint8 (t, H, W, 3), got {tuple(x.shape)} {x.dtype}")
        if tuple(x.shape[2:4]) != self.size:
            h, w = self.size
            raise GenieError(
                f"frames are {x.shape[2]}x{x.shape[3]} but this world is {h}x{w}: resize them "
                f"(genie data prepare --size {h}x{w}) or use a world trained at that size"
            )
        return x.to(self.device), batched

    def _out(self, frame: Tensor) -> np.ndarray:
        frame = frame.cpu().numpy()
        return frame if self._batched else frame[0]


def check_parts(tokenizer, lam, dynamics, meta: dict, folder: Path) -> None:
    """Refuse parts that do not fit together, naming the mismatch (at load, not mid-forward)."""
    tok, lcfg, dyn = tokenizer.config, lam.config, dynamics.config
    grid = (tok.height // tok.patch, tok.width // tok.patch)
    problems = []
    if tok.codebook_size != dyn.vocab_size:
        problems.append(f"the tokenizer has {tok.codebook_size} codes but the dynamics "
                        f"predicts {dyn.vocab_size}")
    elif hasattr(dynamics, "same_codebook") and not dynamics.same_codebook(
            tokenizer.quantizer.codebook):
        problems.append("the dynamics (a DiT) was trained on another tokenizer: its codebook "
                        "differs from this tokenizer's")
    if grid != (dyn.grid_h, dyn.grid_w):
        problems.append(f"the tokenizer makes a {grid[0]}x{grid[1]} token grid but the "
                        f"dynamics expects {dyn.grid_h}x{dyn.grid_w}")
    if lcfg.num_actions != dyn.num_actions:
        problems.append(f"the LAM has {lcfg.num_actions} actions but the dynamics "
                        f"{dyn.num_actions}")
    if (lcfg.height, lcfg.width) != (tok.height, tok.width):
        problems.append(f"the LAM sees {lcfg.height}x{lcfg.width} frames but the tokenizer "
                        f"{tok.height}x{tok.width}")
    size = meta.get("resolution")
    if size and tuple(size) != (tok.height, tok.width):
        problems.append(f"world.json says {size[0]}x{size[1]} but the tokenizer is "
                        f"{tok.height}x{tok.width}")
    if problems:
        raise GenieError(f"world {folder} does not fit together: {'; '.join(problems)}. Train "
                         "the dynamics on this tokenizer and LAM (genie train world)")


def read_meta(folder: str | Path) -> dict:
    """A world folder's world.json, or one error naming what is wrong with the folder."""
    folder = Path(folder).expanduser()
    if not folder.exists():
        raise GenieError(f"world {folder} does not exist: give the folder of a trained world, or "
                         "train one with `genie train world --out DIR`")
    meta_file = folder / "world.json"
    if not meta_file.exists():
        raise GenieError(f"{folder} is not a world (no world.json): train one with "
                         "`genie train world --out DIR` or give the folder of one")
    try:
        meta = json.loads(meta_file.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise GenieError(f"{meta_file} is damaged ({e}): restore it or train the world "
                         "again") from e
    if not isinstance(meta, dict) or meta.get("schema") != SCHEMA:
        schema = meta.get("schema") if isinstance(meta, dict) else None
        raise GenieError(f"{meta_file} has schema {schema}, this genie reads "
                         f"{SCHEMA}: use the genie version that wrote it")
    return meta


def load(path: str | Path, *, device: str = "auto", sampler: dict | None = None,
         precision: str = "fp32") -> World:
    """Load a world folder. `sampler` overrides its sampling settings (e.g. {'steps': 4}).

    `precision` 'bf16' runs the world under bf16 autocast, 'auto' where the device multiplies
    bf16 fast. fp32 is the default: evaluation figures are measured in it, and bf16 changes
    which token a close call picks, so a sampled rollout drifts away from the fp32 one."""
    from genie.dynamics import model_class
    from genie.lam.model import LatentActionModel
    from genie.tokenizer.model import VideoTokenizer
    from genie.train.compute import pick_device, pick_precision
    from genie.train.stages import load_model

    folder, dev = Path(path).expanduser(), pick_device(device)
    meta = read_meta(folder)
    parts = (load_model(VideoTokenizer, folder / "tokenizer", "tokenizer"),
             load_model(LatentActionModel, folder / "lam", "lam"),
             load_model(model_class(meta.get("backend", "maskgit")), folder / "dynamics",
                        "dynamics"))
    return World(*(p.to(dev) for p in parts), meta, folder=folder, sampler=sampler,
                 precision=pick_precision(precision, dev))
