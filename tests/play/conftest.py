"""A fast fake world for the play loop, and helpers to drive the window without a display."""

from __future__ import annotations

import os
import time
from types import SimpleNamespace

os.environ["SDL_VIDEODRIVER"] = "dummy"  # before pygame opens a display: no screen needed
os.environ.setdefault("SDL_AUDIODRIVER", "dummy")

import numpy as np  # noqa: E402
import pygame  # noqa: E402
import pytest  # noqa: E402

from genie.play.app import App, Prompt  # noqa: E402


class FakeWorld:
    """reset/step/snapshot/restore/preview like genie.World, in microseconds.

    A frame is a function of the action history and a random draw, so an undo that forgot to
    rewind the generator, or a preview that moved the world, gives a different frame.
    """

    size = (12, 16)
    num_actions = 4
    action_names = ["LEFT", "RIGHT", "DOWN", "JUMP"]
    key_map = {"left": 0, "right": 1, "s": 2, "space": 3}

    def __init__(self, step_seconds: float = 0.0, fail_on: int | None = None):
        self.step_seconds, self.fail_on = step_seconds, fail_on
        self.value, self.steps = 0, 0
        self.rng = np.random.default_rng(0)
        self.actions: list[int] = []

    def reset(self, prompt, seed=None):
        self.value, self.steps = int(np.asarray(prompt).mean()) % 200, 0
        self.rng = np.random.default_rng(seed)
        return self._frame(self.value)

    def step(self, action: int) -> np.ndarray:
        if self.step_seconds:
            time.sleep(self.step_seconds)
        if action == self.fail_on:
            raise RuntimeError("this fake world cannot do that")
        self.actions.append(action)
        self.value = self._next(self.value, action, self.rng)
        self.steps += 1
        return self._frame(self.value)

    def snapshot(self):
        return self.value, self.steps, self.rng.bit_generator.state, len(self.actions)

    def restore(self, state) -> None:
        self.value, self.steps, rng, n = state
        self.rng = np.random.default_rng()
        self.rng.bit_generator.state = rng
        del self.actions[n:]

    def preview(self, actions=None) -> np.ndarray:
        actions = range(self.num_actions) if actions is None else actions
        state = self.rng.bit_generator.state
        frames = []
        for a in actions:
            rng = np.random.default_rng()
            rng.bit_generator.state = state
            frames.append(self._frame(self._next(self.value, a, rng)))
        return np.stack(frames)

    @staticmethod
    def _next(value: int, action: int, rng) -> int:
        return (value * 7 + 13 * (action + 1) + int(rng.integers(5))) % 251

    def _frame(self, value: int) -> np.ndarray:
        return np.full((*self.size, 3), value, np.uint8)


PROMPTS = [Prompt("first", lambda: np.full((2, 12, 16, 3), 40, np.uint8)),
           Prompt("second", lambda: np.full((2, 12, 16, 3), 90, np.uint8))]


@pytest.fixture
def fake():
    """The FakeWorld class (tests build it with their own step time or failure)."""
    return FakeWorld


@pytest.fixture
def drive():
    """until(app, condition) and press(key): the keyboard and the clock of the play tests."""
    return SimpleNamespace(until=until, press=press)


@pytest.fixture
def make_app(tmp_path):
    """App(FakeWorld) factory, opened on the dummy display and closed after the test."""
    apps: list[App] = []

    def make(world=None, **kwargs) -> App:
        kwargs = {"scale": 4, "fps_cap": None, "capture_dir": tmp_path} | kwargs
        app = App(world or FakeWorld(), kwargs.pop("prompts", PROMPTS), **kwargs).open()
        apps.append(app)
        until(app, lambda: app.frame is not None)
        return app

    yield make
    for app in apps:
        if app.running:
            app.close()


def until(app: App, condition, timeout: float = 5.0) -> None:
    """Tick the app until `condition()` holds; fail after `timeout` seconds."""
    deadline = time.perf_counter() + timeout
    while not condition():
        assert time.perf_counter() < deadline, "timed out waiting for the play loop"
        app.tick()


def press(key: int, shift: bool = False, release: bool = True) -> None:
    """Post a key press (and release) as the keyboard would."""
    mod = pygame.KMOD_LSHIFT if shift else 0
    pygame.event.post(pygame.event.Event(pygame.KEYDOWN, key=key, mod=mod))
    if release:
        pygame.event.post(pygame.event.Event(pygame.KEYUP, key=key, mod=mod))
