"""`genie data record coinrun`: CoinRun gameplay from procgen, played by a random agent.

Each episode is its own environment on a level drawn from the requested range by a generator
seeded with (seed, episode), so the files depend only on the arguments — not on the number of
workers, nor on which other episodes were recorded. The agent holds each action for a few
steps so that motion is visible across frames, as it would be in human play.

Output, per episode: `coinrun_000042.mp4` and `coinrun_000042.actions.npy` (int16, one true
action per transition: len = frames - 1); once for the folder: `record.json` with the action
names, settings and each episode's level and length.
"""

from __future__ import annotations

import contextlib
import io
import os
import shutil
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from genie.data.files import write_json_atomic
from genie.data.pool import worker_pool
from genie.errors import GenieError

GAMES = ("coinrun",)
FPS = 15  # procgen's native frame rate
MAX_LEVEL = 2**31 - 1
# procgen's combos 0..8 are the movement keys; 9..14 (D, A, W, S, Q, E) do nothing in CoinRun,
# so the agent never spends steps on them.
ACTION_NAMES = [
    "LEFT+DOWN", "LEFT", "LEFT+UP", "DOWN", "NOOP", "UP", "RIGHT+DOWN", "RIGHT", "RIGHT+UP",
]


@dataclass
class RecordSettings:
    game: str = "coinrun"
    episodes: int = 10
    max_steps: int = 1000
    seed: int = 0
    mode: str = "hard"
    start_level: int = 0
    levels: int = 0  # 0: unlimited, every level from start_level up
    size: int = 64
    lossless: bool = False
    hold: tuple[int, int] = (1, 6)  # the agent keeps an action for this many frames (inclusive)
    # Game steps per recorded frame, the action held through them (RL's "action repeat"). At 64px
    # one CoinRun step moves the view by ~0.5 px and an action's own effect is ~0.1 px (inertia),
    # so with 1 the frames barely show what was pressed.
    repeat: int = 1


def record(
    out: str | Path,
    settings: RecordSettings,
    workers: int | None = None,
    overwrite: bool = False,
    log=print,
    progress: bool = True,
) -> dict:
    """Record `settings.episodes` episodes into `out`; returns the contents of record.json."""
    from tqdm import tqdm

    _check(settings)
    out = Path(out).expanduser()
    if out.exists() and any(out.iterdir()):
        if not overwrite:
            raise GenieError(f"{out} is not empty: choose another --out or add --overwrite")
        if not (out / "record.json").exists():
            raise GenieError(f"{out} holds files genie did not record: choose another --out")
        shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    workers = max(1, min(workers or os.cpu_count() or 1, settings.episodes))
    jobs = [(str(out), asdict(settings), i) for i in range(settings.episodes)]
    pool = None
    if workers > 1:
        # procgen spends ~2 s per process loading its sprites; load them once here and fork, so
        # workers start with them in memory (nothing else is running in this process yet).
        _warm_up(settings)
        pool = worker_pool("fork", workers)
    episodes = []
    try:
        results = pool.imap(_record_episode, jobs) if pool else map(_record_episode, jobs)
        with tqdm(total=len(jobs), unit="episode", desc="record", disable=not progress) as bar:
            for episode in results:
                episodes.append(episode)
                bar.update(1)
                bar.set_postfix(frames=sum(e["frames"] for e in episodes), refresh=False)
    finally:
        if pool:
            pool.terminate()
    seconds = time.perf_counter() - start
    meta = {
        "game": settings.game, "fps": FPS / settings.repeat, "action_names": ACTION_NAMES,
        "settings": asdict(settings), "episodes": episodes,
        "frames": sum(e["frames"] for e in episodes),
    }
    write_json_atomic(out / "record.json", meta)  # no timings in it: same arguments, same bytes
    return {**meta, "seconds": seconds}


def _check(s: RecordSettings) -> None:
    if s.game not in GAMES:
        raise GenieError(f"unknown game {s.game!r}: the recorder knows {', '.join(GAMES)}")
    if s.mode not in ("easy", "hard"):
        raise GenieError(f"--mode {s.mode!r} must be easy or hard")
    if s.episodes < 1 or s.max_steps < 1 or s.repeat < 1:
        raise GenieError("--episodes, --max-steps and --repeat must be at least 1")
    if not 0 <= s.seed < 2**32:
        raise GenieError(f"--seed {s.seed} must lie in 0..{2**32 - 1}")
    if s.start_level < 0 or s.levels < 0 or s.start_level + s.levels > MAX_LEVEL:
        raise GenieError(f"levels must lie in 0..{MAX_LEVEL}: check --start-level and --levels")
    if s.size < 8:
        raise GenieError(f"--size {s.size} is too small: use at least 8 (64 is CoinRun's own)")
    try:
        with contextlib.redirect_stderr(io.StringIO()):  # gym prints a deprecation banner
            import procgen  # noqa: F401
    except ImportError as e:
        raise GenieError(
            "the CoinRun recorder needs procgen: pip install 'genie[games]'"
        ) from e


def _warm_up(s: RecordSettings) -> None:
    with contextlib.redirect_stderr(io.StringIO()):
        from procgen import ProcgenGym3Env
    ProcgenGym3Env(num=1, env_name=s.game, distribution_mode=s.mode, num_threads=0).close()


def episode_env(s: RecordSettings, i: int):
    """(environment, agent generator, level) of episode i: the same for the same arguments."""
    with contextlib.redirect_stderr(io.StringIO()):
        from procgen import ProcgenGym3Env
    rng = np.random.default_rng([s.seed, i])
    span = s.levels or MAX_LEVEL - s.start_level
    level = s.start_level + int(rng.integers(span))
    env = ProcgenGym3Env(
        num=1, env_name=s.game, distribution_mode=s.mode, start_level=level, num_levels=1,
        rand_seed=int(rng.integers(MAX_LEVEL)), num_threads=0,
        # other sizes come from procgen's 512x512 render, not from upscaling its 64px frames
        render_mode="rgb_array" if s.size != 64 else None,
    )
    return env, rng, level


def _record_episode(job) -> dict:
    """Play and write one episode; runs in a worker process."""
    from genie.data.video import VideoWriter

    out, s, i = job
    s = RecordSettings(**{**s, "hold": tuple(s["hold"])})
    env, rng, level = episode_env(s, i)
    hires = s.size != 64
    name = f"{s.game}_{i:06d}"
    actions: list[int] = []
    with VideoWriter(Path(out) / f"{name}.mp4", fps=FPS / s.repeat, lossless=s.lossless) as video:
        _, obs, _ = env.observe()  # its `first` flag is set: this is the episode's start
        video.write(_frame(env, obs, hires, s.size))
        first = [False]
        while len(actions) < s.max_steps and not first[0]:
            action = int(rng.integers(len(ACTION_NAMES)))
            hold = int(rng.integers(s.hold[0], s.hold[1] + 1))
            for step in range(1, hold * s.repeat + 1):
                env.act(np.array([action]))
                _, obs, first = env.observe()
                if first[0]:  # the episode ended: this frame already belongs to the next one
                    break
                if step % s.repeat:  # a game step between two recorded frames
                    continue
                video.write(_frame(env, obs, hires, s.size))
                actions.append(action)
                if len(actions) >= s.max_steps:
                    break
        # The sidecar lands before the video is renamed into place: no video without actions.
        sidecar = Path(out) / f"{name}.actions.npy"
        with open(sidecar.with_name(sidecar.name + ".tmp"), "wb") as f:
            np.save(f, np.asarray(actions, dtype=np.int16))
        sidecar.with_name(sidecar.name + ".tmp").replace(sidecar)
    return {"name": name, "level": level, "frames": len(actions) + 1}


def _frame(env, obs: dict, hires: bool, size: int) -> np.ndarray:
    if not hires:
        return obs["rgb"][0]
    import av

    rgb = env.get_info()[0]["rgb"]
    frame = av.VideoFrame.from_ndarray(rgb, format="rgb24")
    return frame.reformat(width=size, height=size, interpolation="AREA").to_ndarray()
