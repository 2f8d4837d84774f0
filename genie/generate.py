"""`genie generate`: a clip from prompt frames and a sequence of latent actions."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

import numpy as np

from genie.errors import GenieError

CLIP_SUFFIXES = (".mp4", ".gif", ".npy")  # what save_clip writes


def parse_actions(text: str, num_actions: int) -> list[int]:
    """'0,0,3x4,2' (latent actions 0..A-1; NxK repeats action N K times) -> actions."""
    if not text.strip():
        raise GenieError("--actions is empty: give latent actions such as 0,0,3x4 (0, 0, then 3 "
                         "four times), or leave it out for random ones")
    actions = []
    for item in text.replace(" ", "").split(","):
        action, _, times = item.partition("x")
        try:
            a, n = int(action), int(times or 1)
        except ValueError:
            raise GenieError(f"--actions {text!r}: {item!r} is not an action number (e.g. "
                             "0,0,3x4 for 0, 0, then 3 four times)") from None
        if not 0 <= a < num_actions or n < 1:
            raise GenieError(f"--actions {text!r}: this world's actions are 0..{num_actions - 1} "
                             "and repeats are at least 1")
        actions += [a] * n
    return actions


def repeated(actions: list[int], count: int) -> list[int]:
    """`count` actions: `actions` over and over, in turn."""
    return [actions[i % len(actions)] for i in range(count)]


def random_actions(count: int, num_actions: int, seed: int, hold: int = 4) -> list[int]:
    """`count` random latent actions, each held for 1..hold steps (as a player would)."""
    rng = np.random.default_rng(seed)
    actions: list[int] = []
    while len(actions) < count:
        actions += [int(rng.integers(num_actions))] * int(rng.integers(1, hold + 1))
    return actions[:count]


def actions_from_video(world, video: np.ndarray) -> list[int]:
    """The latent actions the world's LAM reads off real frames (T, H, W, 3): T-1 of them."""
    if len(video) < 2:
        raise GenieError("--actions-from needs a video of at least 2 frames: actions are "
                         "read from the change between frames")
    return [int(a) for a in world.infer_actions(video)]


def generate(world, prompt: np.ndarray, actions: list[int], seed: int = 0) -> np.ndarray:
    """The prompt frames (t, H, W, 3) followed by one generated frame per action."""
    world.reset(prompt, seed=seed)
    generated = world.rollout(actions) if actions else np.zeros((0, *prompt.shape[1:]), np.uint8)
    return np.concatenate([prompt[-world.context:], generated])


def side_by_side(generated: np.ndarray, real: np.ndarray, gap: int = 2) -> np.ndarray:
    """Frames as [real | generated], separated by a white bar; the real clip is held at its end
    (or padded black when empty) where it is shorter."""
    t, h, w, _ = generated.shape
    if len(real) == 0:
        real = np.zeros((1, h, w, 3), np.uint8)
    real = np.concatenate([real[:t], np.repeat(real[-1:], max(0, t - len(real)), 0)])
    bar = np.full((t, h, gap, 3), 255, np.uint8)
    return np.concatenate([real, bar, generated], axis=2)


def save_clip(frames: np.ndarray, path: str | Path, fps: float, scale: int = 1) -> Path:
    """Write frames (T, H, W, 3) as .mp4 or .gif scaled up `scale` times, or as .npy unscaled:
    an .npy is for computing with, so it holds the frames themselves."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in CLIP_SUFFIXES:
        raise GenieError(f"{path} is not a clip name: end it in {', '.join(CLIP_SUFFIXES)}")
    path.parent.mkdir(parents=True, exist_ok=True)
    if suffix == ".npy":
        tmp = path.with_name(f".{path.name}.tmp.npy")  # renamed at the end: never half files
        np.save(tmp, frames)
        tmp.rename(path)
        return path
    if scale > 1:  # nearest neighbour: keep the pixels crisp
        frames = frames.repeat(scale, axis=1).repeat(scale, axis=2)
    if suffix == ".gif":
        from PIL import Image

        tmp = path.with_name(f".{path.name}.tmp.gif")
        images = [Image.fromarray(f) for f in frames]
        images[0].save(tmp, save_all=True, append_images=images[1:], loop=0,
                       duration=round(1000 / fps))
        tmp.rename(path)
        return path
    from genie.data.video import VideoWriter

    with VideoWriter(path, fps=fps) as writer:  # written under a temporary name too
        for frame in frames:
            writer.write(frame)
    return path


def recipe_path(clip: str | Path) -> Path:
    """Where the recipe of `clip` goes (NAME.json beside it), checked before anything is made:
    a file there that is not a recipe (a dataset's index.json, say) is never replaced."""
    path = Path(clip).with_suffix(".json")
    if path.exists() and not _is_recipe(path):
        raise GenieError(f"{path} is not a genie recipe and the recipe of {Path(clip).name} "
                         "would replace it: choose another --out")
    return path


def _is_recipe(path: Path) -> bool:
    try:
        recipe = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return False
    return isinstance(recipe, dict) and {"genie_version", "actions", "seed"} <= recipe.keys()


def save_recipe(path: str | Path, world, *, prompt: str | None, prompt_frames: int,
                actions: list[int], seed: int, **extra) -> Path:
    """The JSON beside a clip: everything needed to generate it again."""
    from genie import __version__

    recipe = {"world": str(Path(world.folder).resolve()) if world.folder else None,
              "prompt": prompt, "prompt_frames": prompt_frames, "actions": actions,
              "seed": seed, "sampler": asdict(world.sampler.settings),
              "precision": world.precision,
              "genie_version": __version__, **extra}
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(recipe, indent=2) + "\n")
    tmp.rename(path)
    return path
