"""Prompt frames for a world from whatever a user points at.

A prompt spec is one of:
    (nothing)           the world's own prompts/ (prompt_00.npy, ...)
    clip.npy            uint8 frames (t, H, W, 3) or one frame (H, W, 3)
    frame.png / .jpg    one frame
    video.mp4 (any file PyAV reads)   its first frames
    DATASET[:EPISODE]   a prepared dataset's validation episode (default 0), its first frames
Frames of another size are resized to the world's, as `genie data prepare` would.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from genie.errors import GenieError
from genie.plural import plural

IMAGES = {".png", ".jpg", ".jpeg", ".bmp", ".webp"}


def load_prompt(spec: str | Path | None, size: tuple[int, int], frames: int | None,
                world_prompts: list[Path] = (), name: str = "prompt") -> np.ndarray:
    """The first `frames` frames (all when None) of `spec`, as uint8 (t, H, W, 3), t >= 1.

    `name` is what messages call the file: the option it came from, such as --actions-from."""
    if spec is None:
        if not world_prompts:
            raise GenieError("this world has no prompts/ folder: give --prompt FILE or DATASET")
        clip = np.load(world_prompts[0])
    else:
        clip = _read(str(spec), size, frames, name)
    clip = np.asarray(clip)
    if clip.ndim == 3:
        clip = clip[None]
    if clip.ndim != 4 or clip.shape[-1] != 3 or clip.dtype != np.uint8 or not len(clip):
        raise GenieError(f"{name} {spec} must hold uint8 RGB frames (t, H, W, 3), got "
                         f"{clip.shape} {clip.dtype}")
    return _resize(clip[:frames], size)


def split_dataset_spec(spec: str, name: str) -> tuple[Path, int | None]:
    """'DATASET:EPISODE' -> (DATASET, EPISODE); anything else -> (the path, None).

    A colon after an existing folder starts an episode number, and anything else there is a
    mistake worth naming (rather than a file that does not exist)."""
    head, sep, tail = spec.rpartition(":")
    if sep and Path(head).expanduser().is_dir():
        if not tail.isdigit():
            raise GenieError(f"{name} {spec}: the episode after the colon must be a number from "
                             f"0 (e.g. {head}:0)")
        return Path(head).expanduser(), int(tail)
    return Path(spec).expanduser(), None


def _read(spec: str, size: tuple[int, int], frames: int | None, name: str) -> np.ndarray:
    path, episode = split_dataset_spec(spec, name)
    if path.is_dir():
        return dataset_episode(path, episode or 0, frames)
    if not path.exists():
        raise GenieError(f"{name} {spec} does not exist: give an image, a video, a .npy clip "
                         "or a prepared dataset (DATASET or DATASET:EPISODE)")
    suffix = path.suffix.lower()
    if suffix == ".npy":
        try:
            return np.load(path)
        except (ValueError, OSError) as e:
            raise GenieError(f"{name} {path} is not a readable .npy clip ({e}): give uint8 "
                             "frames saved with numpy.save") from e
    if suffix in IMAGES:
        from PIL import Image, UnidentifiedImageError

        try:
            return np.asarray(Image.open(path).convert("RGB"))
        except (OSError, UnidentifiedImageError) as e:
            raise GenieError(f"{name} image {path} could not be read ({e})") from e
    return _video_frames(path, size, frames, name)


def dataset_episode(path: Path, episode: int, frames: int | None = None,
                    split: str = "val") -> np.ndarray:
    """Frames of episode `episode` of a dataset's split (train when there is no val split)."""
    from genie.data.index import open_dataset

    info = open_dataset(path)
    split = split if info.split(split) else "train"
    episodes = info.split(split)
    if not 0 <= episode < len(episodes):
        raise GenieError(f"dataset {path} has {plural(len(episodes), split + ' episode')}: "
                         f"episode {episode} does not exist (give 0..{len(episodes) - 1})")
    ep = episodes[episode]
    shard = np.load(info.path / ep["shard"], mmap_mode="r")
    n = ep["length"] if frames is None else min(frames, ep["length"])
    return np.array(shard[ep["offset"]: ep["offset"] + n])


def _video_frames(path: Path, size: tuple[int, int], frames: int | None,
                  name: str) -> np.ndarray:
    import av

    from genie.data.video import decode_problem, read_frames

    out = []
    try:
        for f in read_frames(path, size=size):
            out.append(f.rgb)
            if len(out) == frames:
                break
    except (av.error.FFmpegError, OSError) as e:
        raise GenieError(f"{name} {path} is not a readable video ({decode_problem(e)}): give "
                         "an image, a video, a .npy clip or a prepared dataset") from e
    if not out:
        raise GenieError(f"{name} video {path} has no frames")
    return np.stack(out)


def _resize(clip: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    if clip.shape[1:3] == tuple(size):
        return clip
    from PIL import Image

    h, w = size
    return np.stack([np.asarray(Image.fromarray(f).resize((w, h), Image.BILINEAR)) for f in clip])
