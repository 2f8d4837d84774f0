"""The play loop: keys in, frames out, on whatever has reset()/step() (a world or a replay).

The loop runs on the main thread (pygame wants it) and never computes a frame: a `Worker` thread
owns the environment. Each tick reads events, turns key presses into requests, collects the
worker's frames and previews and redraws when something changed. Headless runs use the same loop
with a scripted player instead of a keyboard, on SDL's dummy video driver.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pygame

from genie.play.capture import Recorder, numbered, stamped
from genie.play.keys import Bindings
from genie.play.view import Screen, Status
from genie.play.worker import Failure, Frame, Notice, Previews, Worker
from genie.plural import plural

TICK_S = 1 / 60  # the window's refresh; frames are shown as soon as they arrive regardless
MESSAGE_S = 4.0


@dataclass
class Prompt:
    """One thing to start from: a label for the panel and a loader giving env.reset's argument."""

    label: str
    load: Callable[[], Any]


@dataclass
class Summary:
    """What a run did, for the headless one-line report and for tests."""

    frames: int  # frames generated (steps)
    seconds: float  # from the first step request to the last frame
    compute_ms: float  # mean time the world took per step
    latency_ms: float  # mean time from a step request to its frame
    previews: int  # preview chunks computed
    dropped: int
    recorded: list[Path]
    failures: list[str]
    threads: int | None = None  # torch threads of the world, where play chose or was given them

    @property
    def fps(self) -> float:
        return self.frames / self.seconds if self.seconds > 0 else 0.0

    def line(self) -> str:
        return (f"{self.frames} frames in {self.seconds:.2f}s: {self.compute_ms:.1f} ms/frame "
                f"generating, {self.fps:.1f} fps, {self.latency_ms:.1f} ms from request to "
                f"frame, {self.previews} preview batches"
                + (f", {plural(self.threads, 'thread')}" if self.threads else ""))


class App:
    """A play session: an environment, the prompts to start from and the window."""

    def __init__(self, env, prompts: Sequence[Prompt], *, title: str = "genie", scale: int = 8,
                 fps_cap: float | None = 15, previews: bool = True, seed: int | None = 0,
                 record: str | Path | None = None, script: Sequence[int] | None = None,
                 queue_size: int = 8, undo_limit: int = 64, capture_dir: str | Path = ".",
                 threads: int | None = None):
        if not prompts:
            raise ValueError("a play session needs at least one prompt")
        self.env, self.prompts, self.prompt_index = env, list(prompts), 0
        self.title = title
        self.fps_cap = fps_cap
        self.bindings = Bindings(env.num_actions, env.key_map)
        self.worker = Worker(env, seed=seed, previews=previews, queue_size=queue_size,
                             undo_limit=undo_limit, fps_cap=fps_cap, threads=threads)
        self.screen = Screen(env.size, scale, self.bindings, list(env.action_names))
        self.status = Status(title=title, previews=self.worker.previews)
        self.record_path = Path(record) if record else None
        self.capture_dir = Path(capture_dir)
        self.script = list(script) if script is not None else None
        self.surface: pygame.Surface | None = None
        self.recorder: Recorder | None = None
        self.recorded: list[Path] = []
        self.frame = None  # the frame on screen, (H, W, 3)
        self.version = -1
        self.show_help = False
        self.running = False
        self.ticks = self.redraws = 0
        self.failures: list[str] = []
        self._held: list[tuple[int, int]] = []  # (pygame key, action), most recent last
        self._dirty = True
        self._message_until = 0.0
        self._step_times: deque[float] = deque()
        self.compute_ms: list[float] = []  # per step: the world's time, and request to frame
        self.latency_ms: list[float] = []
        self._first_request: float | None = None
        self._last_frame_at = 0.0
        self._scripted = 0
        self._last_scripted = 0.0
        self._busy_since: float | None = None

    # ------------------------------------------------------------------ life cycle

    def open(self) -> App:
        pygame.display.init()
        pygame.display.set_caption(f"genie play - {self.title}")
        self.surface = pygame.display.set_mode(self.screen.size)
        self.worker.start()
        self._reset()
        if self.record_path is not None:
            self._start_recording(self.record_path)
        self.running = True
        return self

    def run(self, timeout: float | None = None) -> Summary:
        """Tick until quit (Esc, window closed, or the script is done); then close."""
        deadline = None if timeout is None else time.perf_counter() + timeout
        try:
            if not self.running:
                self.open()
            while self.running and (deadline is None or time.perf_counter() < deadline):
                self.tick()
        finally:
            self.close()
        return self.summary()

    def tick(self) -> None:
        """One pass: events, results, the scripted player, redraw, then wait for the next."""
        start = time.perf_counter()
        self.ticks += 1
        for event in pygame.event.get():
            self._event(event)
        self._collect()
        if self.script is not None:
            self._play_script()
        self._update_status()
        if self._dirty:
            self.draw()
        if self.running:
            self.worker.wait(max(0.0, start + TICK_S - time.perf_counter()))

    def close(self) -> None:
        """Stop the worker (it finishes the frame in progress) and finish any recording."""
        self.running = False
        self.worker.stop()
        self._collect()
        self._stop_recording()
        pygame.display.quit()

    def draw(self) -> None:
        self.screen.draw(self.surface, self.status, self.show_help)
        pygame.display.flip()
        self.redraws += 1
        self._dirty = False

    def summary(self) -> Summary:
        end = self._last_frame_at
        seconds = end - self._first_request if self._first_request and end else 0.0
        return Summary(len(self.compute_ms), seconds, _mean(self.compute_ms),
                       _mean(self.latency_ms), self.worker.preview_count, self.worker.dropped,
                       self.recorded, self.failures, self.worker.threads)

    # ------------------------------------------------------------------ input

    def _event(self, event: pygame.event.Event) -> None:
        if event.type == pygame.QUIT:
            self.running = False
        elif event.type == pygame.KEYDOWN:
            press = self.bindings.press(pygame.key.name(event.key),
                                        shift=bool(event.mod & pygame.KMOD_SHIFT))
            if press is None:
                return
            if press.action is not None:
                self.step(press.action)
                self._held = [h for h in self._held if h[0] != event.key]
                self._held.append((event.key, press.action))
                self.worker.hold(press.action)
            else:
                self.command(press.command)
        elif event.type == pygame.KEYUP:
            self._release(event.key)
        elif event.type == getattr(pygame, "WINDOWFOCUSLOST", -1):
            self._held = []  # the key-up goes to another window: do not keep walking
            self.worker.hold(None)
        elif event.type in (getattr(pygame, "WINDOWEXPOSED", -1), pygame.VIDEOEXPOSE):
            self._dirty = True

    def _release(self, key: int) -> None:
        self._held = [h for h in self._held if h[0] != key]
        self.worker.hold(self._held[-1][1] if self._held else None)

    def step(self, action: int) -> None:
        if self._first_request is None:
            self._first_request = time.perf_counter()
        if not self.worker.submit("step", action):
            self._say(f"busy: {self.worker.dropped} key presses dropped", bad=True)

    def command(self, name: str) -> None:
        if name == "quit":
            self.running = False
        elif name == "reset":
            self._reset()
        elif name == "new":
            self.prompt_index = (self.prompt_index + 1) % len(self.prompts)
            self._reset()
        elif name == "undo":
            if not self.worker.submit("undo"):
                self._say(f"busy: {self.worker.dropped} key presses dropped", bad=True)
        elif name == "pause":
            self.worker.set_paused(not self.worker.paused)
        elif name == "help":
            self.show_help = not self.show_help
        elif name == "screenshot":
            self.draw()
            path = stamped(self.capture_dir, ".png")
            pygame.image.save(self.surface, str(path))
            self._say(f"saved {path.name}")
        elif name == "record":
            if self.recorder is not None:
                self._stop_recording()
            else:
                base = self.record_path or stamped(self.capture_dir, ".mp4")
                self._start_recording(numbered(base))
        self._dirty = True

    def _reset(self) -> None:
        prompt = self.prompts[self.prompt_index]
        self.status.title = f"{self.title}: {prompt.label}" if prompt.label else self.title
        if not self.worker.submit("reset", prompt.load):
            self._say(f"busy: {self.worker.dropped} key presses dropped", bad=True)

    # ------------------------------------------------------------------ output

    def _collect(self) -> None:
        for result in self.worker.results():
            if isinstance(result, Frame):
                self._show(result)
            elif isinstance(result, Previews) and result.version == self.version:
                self.screen.set_previews(result.actions, result.frames)
                self._dirty = True
            elif isinstance(result, Failure):
                self.failures.append(result.message)
                self._say(result.message, bad=True)
            elif isinstance(result, Notice):
                self._say(result.message)

    def _show(self, result: Frame) -> None:
        now = time.perf_counter()
        self.frame, self.version = result.frame, result.version
        self.screen.set_frame(result.frame)
        s = self.status
        s.steps, s.caption = result.steps, result.caption
        s.action = result.action if result.kind == "step" else None
        if result.kind == "step":
            self.compute_ms.append(result.compute_ms)
            self.latency_ms.append(result.latency_ms)
            self._step_times.append(now)
            self._last_frame_at = now
            s.gen_ms = result.compute_ms if not s.gen_ms else 0.7 * s.gen_ms + \
                0.3 * result.compute_ms
        if self.recorder is not None:
            self.recorder.write(result.frame)
        self._dirty = True

    def _update_status(self) -> None:
        now = time.perf_counter()
        s = self.status
        while self._step_times and now - self._step_times[0] > 2.0:
            self._step_times.popleft()
        times = self._step_times
        fps = (len(times) - 1) / (times[-1] - times[0]) if len(times) > 1 and \
            times[-1] > times[0] else 0.0
        busy = self.worker.stepping
        self._busy_since = (self._busy_since or now) if busy else None
        busy_s = now - self._busy_since if self._busy_since else 0.0
        new = (round(fps, 1), self.worker.pending, self.worker.dropped, self.worker.paused,
               round(busy_s, 1))
        if new != (round(s.fps, 1), s.queued, s.dropped, s.paused, round(s.busy_s, 1)):
            s.fps, s.queued, s.dropped, s.paused, s.busy_s = new
            self._dirty = True
        if self.recorder is not None:
            text = f"REC {self.recorder.path.name} ({self.recorder.frames})"
            if text != s.recording:
                s.recording, self._dirty = text, True
        elif s.recording:
            s.recording, self._dirty = "", True
        if s.message and now > self._message_until:
            s.message, self._dirty = "", True

    def _say(self, message: str, bad: bool = False) -> None:
        self.status.message, self.status.message_bad = message, bad
        self._message_until = time.perf_counter() + MESSAGE_S
        self._dirty = True

    def _start_recording(self, path: Path) -> None:
        self.recorder = Recorder(path, fps=self.fps_cap or 15)
        if self.frame is not None:
            self.recorder.write(self.frame)
        self._say(f"recording {path.name}")

    def _stop_recording(self) -> None:
        if self.recorder is None:
            return
        recorder, self.recorder = self.recorder, None
        if recorder.frames:
            self.recorded.append(recorder.close())
            self._say(f"saved {recorder.path.name} ({recorder.frames} frames)")
        else:
            recorder.close()

    # ------------------------------------------------------------------ scripted player

    def _play_script(self) -> None:
        """Headless: press the next scripted action once the last one's frame is in."""
        done = len(self.compute_ms)
        if done >= len(self.script) or self.failures:
            self.running = False
            return
        now = time.perf_counter()
        # One request in flight at a time, each when the fps cap allows it (as a player keeping
        # a key down would), so the latency measured is the world's, not the cap's.
        due = self._last_scripted + (1 / self.fps_cap if self.fps_cap else 0.0)
        if self._scripted == done and self.version >= 0 and now >= due:
            self._last_scripted = now
            self.step(self.script[self._scripted])
            self._scripted += 1


def _mean(values: list[float]) -> float:
    return sum(values) / len(values) if values else 0.0
