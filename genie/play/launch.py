"""`genie play`: from command-line choices to a running session (a world or a replay).

Everything a user can get wrong is checked before the window opens (no display, no world, a
prompt that cannot be read), each as one GenieError sentence with the fix.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

from genie.errors import GenieError
from genie.plural import plural


def check_display(headless: bool) -> None:
    """Headless runs get SDL's dummy driver; a window on Linux needs an X or Wayland display."""
    if headless:
        os.environ["SDL_VIDEODRIVER"] = "dummy"  # before pygame opens its display
        return
    if (sys.platform.startswith("linux") and not os.environ.get("SDL_VIDEODRIVER")
            and not os.environ.get("DISPLAY") and not os.environ.get("WAYLAND_DISPLAY")):
        raise GenieError("there is no display to open a window on (DISPLAY and WAYLAND_DISPLAY "
                         "are unset): run `genie play --headless --steps 100 --record play.mp4` "
                         "instead, or play on a machine with a screen")


def idle_cores(busy: float | None = None, cores: int | None = None) -> int:
    """Torch threads for the world when --threads is left out: the cores other work leaves idle,
    at least 1. `busy` is the cores' worth of work running now (busy_cores), or where that
    cannot be read the 1-minute load average; a core counts as busy from 0.75 on.

    Headless play of the shipped world on 2 cores with a busy loop on one of them: 198-212 ms a
    frame on two threads (each parallel op waits for the thread that shares the busy core)
    against 56-62 on one; on idle cores two threads made 59-63 ms and one 68-78. Work started
    after play has begun is not seen; --threads then sets the count.
    """
    import torch

    if busy is None:
        busy = busy_cores()
    if busy is None:
        busy = os.getloadavg()[0] if hasattr(os, "getloadavg") else 0.0
    if cores is None:
        cores = torch.get_num_threads()
    return max(1, cores - int(busy + 0.25))


def busy_cores(interval: float = 0.25, read=None) -> float | None:
    """How many of this process's cores other work kept busy over the next `interval` seconds,
    from the kernel's per-CPU time counters (/proc/stat), or None where there are none (macOS).

    Measured now rather than taken from the load average, which trails by a minute: just after
    busy loops on both cores had ended (load average 1.88) the machine was idle, and the shipped
    world took 38.6-45.9 ms a frame on the two threads this picks against 54.1 on the one the
    load average gave. `read` returns the counters' text (tests).
    """
    if read is None:
        def read():
            with open("/proc/stat") as f:
                return f.read()
    try:
        own, start, before = _own_seconds(), time.monotonic(), _cpu_times(read())
        time.sleep(interval)
        after, elapsed, own = _cpu_times(read()), time.monotonic() - start, _own_seconds() - own
    except OSError:
        return None
    mine = os.sched_getaffinity(0) if hasattr(os, "sched_getaffinity") else set(after)
    busy = 0.0
    for cpu in mine & set(before) & set(after):
        (busy0, total0), (busy1, total1) = before[cpu], after[cpu]
        if total1 > total0:
            busy += (busy1 - busy0) / (total1 - total0)
    # Less this process's own threads (a finished bf16 probe's OpenMP threads still spinning).
    return max(0.0, busy - own / elapsed) if elapsed > 0 else busy


def _own_seconds() -> float:
    times = os.times()
    return times.user + times.system


def _cpu_times(text: str) -> dict[int, tuple[int, int]]:
    """/proc/stat text -> {cpu: (busy ticks, all ticks)}; idle and iowait are the idle ticks."""
    times = {}
    for line in text.splitlines():
        name, *ticks = line.split()
        if name.startswith("cpu") and name[3:].isdigit():
            values = [int(t) for t in ticks[:8]]  # user nice system idle iowait irq softirq steal
            total = sum(values)
            times[int(name[3:])] = (total - values[3] - values[4], total)
    return times


def world_prompts(world, spec: str | None) -> list:
    """What N cycles through: the --prompt (checked now), then the world's prompts/ files."""
    from genie.play.app import Prompt
    from genie.prompts import load_prompt

    def loader(source, name="prompt"):
        return lambda: load_prompt(source, world.size, world.context, world.prompt_files(), name)

    prompts = []
    if spec is not None:
        loader(spec, "--prompt")()  # a bad --prompt fails here, before any window opens
        prompts.append(Prompt(Path(spec.rstrip("/")).name or spec, loader(spec, "--prompt")))
    for path in world.prompt_files():
        prompts.append(Prompt(path.stem, loader(path)))
    if not prompts:
        raise GenieError(f"world {world.folder} has no prompts/ folder: give --prompt with an "
                         "image, a video, a .npy clip or DATASET[:EPISODE]")
    return prompts


def script_actions(text: str, steps: int, num_actions: int, seed: int) -> list[int]:
    """Headless actions: 'random' (held a few steps each) or '0,1,2' (0-based, cycled)."""
    from genie.generate import random_actions, repeated

    if text == "random":
        return random_actions(steps, num_actions, seed)
    try:
        cycle = [int(a) for a in text.replace(" ", "").split(",") if a]
    except ValueError:
        cycle = []
    if not cycle or not all(0 <= a < num_actions for a in cycle):
        raise GenieError(f"--actions {text!r}: give 'random' or latent actions 0..{num_actions - 1}"
                         " separated by commas (e.g. 0,1,2; they repeat in turn)")
    return repeated(cycle, steps)


def _replay(spec: str):
    from genie.play.app import Prompt
    from genie.play.replay import ReplayWorld
    from genie.prompts import split_dataset_spec

    path, first = split_dataset_spec(spec, "--replay")
    first = first or 0
    env = ReplayWorld(path)
    if not 0 <= first < len(env.episodes):
        raise GenieError(f"dataset {path} has {plural(len(env.episodes), env.split + ' episode')}"
                         f": episode {first} does not exist (give 0..{len(env.episodes) - 1})")
    prompts = [Prompt(f"episode {e}", lambda e=e: e) for e in env.prompts(first)]
    return env, prompts, f"replay {Path(path).name}"


def _threads_note(threads: int | None) -> str:
    return "" if threads is None else f", {plural(threads, 'thread')}"


def play(*, world: str | None = None, prompt: str | None = None, replay: str | None = None,
         scale: int = 8, fps_cap: float | None = None, record: str | None = None,
         previews: bool = True, seed: int = 0, headless: bool = False,
         steps: int | None = None, actions: str = "random", device: str = "auto",
         threads: int | None = None, precision: str = "auto", sampler: dict | None = None):
    """Open a play session (or run one headless) and return its Summary when it ends.

    `threads` sets torch's CPU threads on the thread that steps the world; `precision` and
    `sampler` (overrides of the world's sampling settings, e.g. {'temperature': 1.0}) as in
    `genie.load` (precision auto: bf16 autocast where the machine multiplies bf16 fast)."""
    check_display(headless)
    if fps_cap is not None and fps_cap <= 0:
        raise GenieError(f"--fps-cap {fps_cap:g}: give a number of steps a second above 0, or "
                         "leave it out")
    if replay is not None:
        if world is not None or prompt is not None or sampler:
            raise GenieError("--replay shows recorded frames and needs no --world, --prompt or "
                             "sampling options: leave them out")
        env, prompts, title = _replay(replay)
    else:
        import genie
        from genie.worlds import default_world

        path = Path(world) if world is not None else default_world()
        env = genie.load(path, device=device, precision=precision, sampler=sampler)
        prompts = world_prompts(env, prompt)
        if threads is None and env.device.type == "cpu":
            threads = idle_cores()
        # The speed depends on both.
        title = f"{path.resolve().name} ({env.precision}{_threads_note(threads)})"
    script = None
    if headless:
        script = script_actions(actions, steps or 64, env.num_actions, seed)
    elif steps is not None:
        raise GenieError("--steps counts frames of a --headless run: add --headless, or leave "
                         "--steps out to play")
    import pygame

    from genie.play.app import App

    fps = fps_cap if fps_cap is not None else (None if headless else 15.0)
    app = App(env, prompts, title=title, scale=scale, fps_cap=fps, previews=previews,
              seed=seed, record=record, script=script, threads=threads)
    try:
        app.open()
    except pygame.error as e:
        pygame.display.quit()
        raise GenieError(f"could not open a window ({e}): run with --headless instead") from e
    summary = app.run()
    if headless and summary.failures:  # a window shows failures; a script must not hide them
        raise GenieError(f"the headless run stopped after {summary.frames} frames: "
                         f"{summary.failures[0]}")
    return summary
