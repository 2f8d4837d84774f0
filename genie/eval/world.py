"""`genie eval world`: how far ahead a world predicts held-out video, and whether it obeys.

For N real clips: prompt with C real frames, then generate H frames three ways with the same
sampling seed: (a) with the latent actions the LAM infers from the real continuation, (b) with
random latent actions, (c) the copy baseline (the last prompt frame as the world shows it,
repeated). Per horizon h: PSNR and SSIM of each against the real frame, ΔtPSNR(h) = PSNR(a) -
PSNR(b), and the tokenizer's own reconstruction of the real frame, the ceiling no generated
frame can beat on average. Definitions: genie/eval/metrics.py.

The evaluator talks to any object with the `EvalWorld` interface, so tests can hand it fakes
(an oracle, a copier, a world that ignores its actions); `TokenizedWorld` gives a real
`genie.World` that interface.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import numpy as np
import torch

from genie.errors import GenieError
from genie.eval.clips import Clips

WAYS = ("inferred", "random", "copy")


class EvalWorld(Protocol):
    """What the evaluator asks of a world. Frames are uint8 numpy arrays, always batched."""

    size: tuple[int, int]
    context: int
    num_actions: int
    key_map: dict[str, int]

    def reset(self, prompt: np.ndarray, actions=None, seed: int | None = None) -> np.ndarray:
        """Prompt (B, t, H, W, 3) -> the last prompt frame as the world shows it (B, H, W, 3)."""

    def step(self, action) -> np.ndarray:
        """Latent actions (B,) -> the next frames (B, H, W, 3)."""

    def infer_actions(self, video: np.ndarray) -> np.ndarray:
        """Real video (B, T, H, W, 3) -> the latent action of each transition (B, T-1)."""

    def reconstruct(self, video: np.ndarray) -> np.ndarray:
        """Real video (B, T, H, W, 3) through the tokenizer and back, same shape."""

    def codes(self, frames: np.ndarray) -> np.ndarray:
        """Frames (M, H, W, 3), each tokenized on its own -> codes (M, N) int."""


class TokenizedWorld:
    """A `genie.World` with the tokenizer round trip and codes that evaluation needs."""

    def __init__(self, world, batch: int = 32):
        self.world, self.batch = world, batch
        self.size, self.context = world.size, world.context
        self.num_actions, self.key_map = world.num_actions, world.key_map

    def reset(self, prompt: np.ndarray, actions=None, seed: int | None = None) -> np.ndarray:
        return self.world.reset(prompt, actions, seed=seed)

    def step(self, action) -> np.ndarray:
        return self.world.step(action)

    def infer_actions(self, video: np.ndarray) -> np.ndarray:
        return self.world.infer_actions(video)

    @torch.no_grad()
    def reconstruct(self, video: np.ndarray) -> np.ndarray:
        tok = self.world.tokenizer
        with self.world.autocast():
            return np.concatenate([
                tok.decode(tok.encode(torch.from_numpy(part).to(self.world.device))).cpu().numpy()
                for part in np.array_split(video, max(1, -(-len(video) // self.batch)))
            ])

    @torch.no_grad()
    def codes(self, frames: np.ndarray) -> np.ndarray:
        tok = self.world.tokenizer
        x = torch.from_numpy(frames[:, None])  # (M, 1, H, W, 3): every frame on its own
        with self.world.autocast():
            return torch.cat([tok.encode(part.to(self.world.device)).flatten(1).cpu()
                              for part in x.split(self.batch * 4)]).numpy()


@dataclass
class EvalSettings:
    """One evaluation's knobs; `context` None means min(4, the world's context)."""

    split: str = "val"
    context: int | None = None
    horizon: int = 16
    clips: int = 64
    seed: int = 0
    drift_steps: int = 256
    drift_clips: int = 4
    batch: int = 32
    videos: int = 4  # clips kept for side-by-side videos
    preview_prompts: int = 20  # prompts for the per-action preview separation (0 skips it)

    def resolve(self, world: EvalWorld) -> EvalSettings:
        """Check against the world and fill in the context; one clear error per mistake."""
        context = min(4, world.context) if self.context is None else self.context
        for name, value, least in (("--horizon", self.horizon, 1), ("--context", context, 1),
                                   ("--clips", self.clips, 1), ("--batch", self.batch, 1),
                                   ("--drift-steps", self.drift_steps, 0),
                                   ("--drift-clips", self.drift_clips, 1),
                                   ("--preview-prompts", self.preview_prompts, 0)):
            if value < least:
                raise GenieError(f"{name} {value}: give a whole number of at least {least}")
        if context > world.context:
            raise GenieError(f"--context {context} is more than this world's context of "
                             f"{world.context} frames: give --context {world.context} or less")
        return dataclasses.replace(self, context=context)


@dataclass
class Evaluation:
    """metrics.json's content and the frames the report turns into videos."""

    metrics: dict
    videos: dict[str, np.ndarray] = field(default_factory=dict)  # name -> (T, H, W', 3)


@dataclass
class HorizonScores:
    psnr: dict[str, np.ndarray]  # way (and "ceiling") -> (N, H) per clip and horizon
    ssim: dict[str, np.ndarray]
    latent: np.ndarray  # (N, T-1) the LAM's actions for every transition of each clip
    samples: dict[str, np.ndarray]  # real, inferred, random -> (k, C+H, H, W, 3), first k clips


def _per_frame(metric, real: np.ndarray, fake: np.ndarray) -> np.ndarray:
    return metric(torch.from_numpy(real), torch.from_numpy(fake)).numpy()


def score_horizons(world: EvalWorld, clips: Clips, context: int, horizon: int, seed: int,
                   batch: int, keep: int = 4, progress: bool = True) -> HorizonScores:
    """Roll out every clip three ways, `batch` clips at a time, and score each frame."""
    from tqdm import tqdm

    from genie.eval.metrics import psnr, ssim

    n, c, hz = len(clips), context, horizon
    # Drawn for all clips at once, so the actions do not depend on how clips are batched.
    random = np.random.default_rng(seed).integers(0, world.num_actions, (n, hz))
    scores = {m: {w: np.zeros((n, hz)) for w in (*WAYS, "ceiling")} for m in ("psnr", "ssim")}
    latent = np.zeros((n, clips.frames.shape[1] - 1), np.int64)
    samples = {"real": clips.frames[:keep]}
    bar = tqdm(total=2 * n * hz, desc="eval world", unit="frame", disable=not progress)
    for lo in range(0, n, batch):
        video = clips.frames[lo:lo + batch]  # (B, C+H, H, W, 3)
        prompt, real = video[:, :c], video[:, c:c + hz]
        latent[lo:lo + len(video)] = world.infer_actions(video)
        # Action t leads from frame t to t+1: frame c+h-1 (the h-th generated) follows c+h-2.
        actions = {"inferred": latent[lo:lo + len(video), c - 1:c - 1 + hz],
                   "random": random[lo:lo + len(video)]}
        frames = {"ceiling": world.reconstruct(video)[:, c:c + hz]}
        for way in ("inferred", "random"):
            first = world.reset(prompt, seed=seed)  # the same sampling stream for both ways
            out = []
            for h in range(hz):
                out.append(world.step(actions[way][:, h]))
                bar.update(len(video))
            frames[way] = np.stack(out, axis=1)  # (B, H, H, W, 3)
        frames["copy"] = np.repeat(first[:, None], hz, axis=1)
        for way, fake in frames.items():
            scores["psnr"][way][lo:lo + len(video)] = _per_frame(psnr, real, fake)
            scores["ssim"][way][lo:lo + len(video)] = _per_frame(ssim, real, fake)
            if way in ("inferred", "random") and lo < keep:
                samples.setdefault(way, [])
                samples[way].append(np.concatenate([prompt, fake], axis=1)[:keep - lo])
    bar.close()
    samples = {k: v if k == "real" else np.concatenate(v) for k, v in samples.items()}
    samples["real"] = samples["real"][:, :c + hz]
    return HorizonScores(scores["psnr"], scores["ssim"], latent, samples)


def _paired(a: np.ndarray, b: np.ndarray) -> tuple[list[float], list[float | None]]:
    """Mean over clips of a - b per horizon, and its standard error (None from one clip)."""
    diff = a - b
    if len(diff) < 2:
        return diff.mean(0).tolist(), [None] * diff.shape[1]
    return diff.mean(0).tolist(), (diff.std(0, ddof=1) / np.sqrt(len(diff))).tolist()


def summarize_horizons(scores: HorizonScores) -> dict:
    """Means over clips: the `horizons`, `psnr`, `ssim`, `delta_psnr` and `copy_margin`."""
    psnr = {way: v.mean(0).tolist() for way, v in scores.psnr.items()}
    ssim = {way: v.mean(0).tolist() for way, v in scores.ssim.items()}
    # Both gaps are paired over the same clips; their spread says whether a gap of this size
    # is more than the luck of the clip draw (copy's score varies a lot from clip to clip).
    delta, delta_sem = _paired(scores.psnr["inferred"], scores.psnr["random"])
    margin, margin_sem = _paired(scores.psnr["inferred"], scores.psnr["copy"])
    return {"horizons": list(range(1, len(psnr["inferred"]) + 1)), "psnr": psnr, "ssim": ssim,
            "delta_psnr": delta, "delta_psnr_sem": delta_sem,
            "copy_margin": margin, "copy_margin_sem": margin_sem}


def side_by_side(*clips: np.ndarray, gap: int = 2) -> np.ndarray:
    """Clips (T, H, W, 3) next to each other with a white gap -> (T, H, W', 3)."""
    bar = np.full((*clips[0].shape[:2], gap, 3), 255, np.uint8)
    parts = [p for clip in clips for p in (clip, bar)][:-1]
    return np.concatenate(parts, axis=2)


def run_eval(world: EvalWorld, data: str | Path, settings: EvalSettings,
             progress: bool = True) -> Evaluation:
    """Every measurement of `genie eval world` on a world-like object; see the module doc."""
    from genie.eval.actions import evaluate_actions
    from genie.eval.clips import real_stretches, select_clips
    from genie.eval.drift import measure_drift

    s = settings.resolve(world)
    start = time.perf_counter()
    clips = select_clips(data, s.split, s.context + s.horizon, s.clips, s.seed)
    if clips.frames.shape[2:4] != tuple(world.size):
        h, w = world.size
        raise GenieError(f"dataset {data} is {clips.frames.shape[2]}x{clips.frames.shape[3]} "
                         f"but the world is {h}x{w}: evaluate on data prepared at {h}x{w}")
    scores = score_horizons(world, clips, s.context, s.horizon, s.seed, s.batch, s.videos,
                            progress)
    metrics = {"clips": len(clips), **summarize_horizons(scores)}
    videos = {f"clip_{i:02d}": side_by_side(scores.samples["real"][i],
                                            scores.samples["inferred"][i],
                                            scores.samples["random"][i])
              for i in range(len(scores.samples["real"]))}
    if s.drift_steps:
        # Prompts spread over the clips; the real reference: episode openings as long as a
        # rollout, from the same split.
        pick = np.linspace(0, len(clips) - 1, min(s.drift_clips, len(clips))).round()
        prompts = clips.frames[np.unique(pick.astype(int)), :s.context]
        stretches = real_stretches(data, s.split, s.context + s.drift_steps, max_frames=2048)
        metrics["drift"], rollout = measure_drift(world, prompts, stretches, s.context,
                                                  s.drift_steps, s.seed, s.batch, progress)
        videos["drift_00"] = np.concatenate([prompts[0], rollout[0]])
    else:
        metrics["drift"] = {"skipped": "--drift-steps 0"}
    if s.preview_prompts:
        from genie.eval.previews import preview_separation

        # Averaged over horizon 1: the ceiling of the frames the previews are.
        metrics["previews"] = preview_separation(
            world, clips.frames[:s.preview_prompts, :s.context],
            ceiling=float(scores.psnr["ceiling"][:, 0].mean()), seed=s.seed)
    metrics["actions"] = evaluate_actions(world, clips, scores.latent, s.context, s.seed,
                                          s.batch, progress)
    metrics["settings"] = {"split": s.split, "context": s.context, "horizon": s.horizon,
                           "clips": len(clips), "clips_asked": s.clips, "seed": s.seed,
                           "drift_steps": s.drift_steps,
                           "drift_clips": s.drift_clips, "batch": s.batch,
                           "preview_prompts": s.preview_prompts,
                           "clip_sources": sorted(set(clips.sources))}
    metrics["seconds"] = time.perf_counter() - start
    return Evaluation(metrics, videos)


def evaluate_world(world_path: str | Path, data: str | Path, settings: EvalSettings, *,
                   device: str = "auto", sampler: dict | None = None,
                   precision: str = "fp32", progress: bool = True) -> Evaluation:
    """Load the world at `world_path` (`sampler` overriding its sampling settings, in
    `precision`, see `genie.load`) and evaluate it on `data` (see `run_eval`)."""
    import genie
    from genie.world import World

    world: World = genie.load(world_path, device=device, sampler=sampler, precision=precision)
    result = run_eval(TokenizedWorld(world, settings.batch), data, settings, progress)
    result.metrics["settings"] |= {
        "world": str(Path(world_path).resolve()), "data": str(Path(data).resolve()),
        "sampler": dataclasses.asdict(world.sampler.settings), "device": str(world.device),
        "precision": world.precision,
        "backend": world.meta.get("backend", "maskgit"), "world_context": world.context,
        "genie_version": genie.__version__,
    }
    return result
