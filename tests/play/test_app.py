"""The play loop on a fake world: keys step it, undo/reset are exact, the UI never waits."""

from __future__ import annotations

import time

import av
import numpy as np
import pygame
from PIL import Image

from genie.play.app import App, Prompt
from genie.play.replay import ReplayWorld


def step_and_wait(app, drive, key, steps: int) -> np.ndarray:
    drive.press(key)
    drive.until(app, lambda: app.status.steps == steps and not app.worker.pending)
    return app.frame.copy()


def test_keys_step_the_world_and_the_panel_follows(make_app, drive):
    app = make_app()
    first = app.frame.copy()
    drive.press(pygame.K_2)  # digit 2: latent action 1
    drive.until(app, lambda: app.status.steps == 1)
    drive.press(pygame.K_SPACE)  # key map: latent action 3
    drive.until(app, lambda: app.status.steps == 2)
    assert app.env.actions == [1, 3] and app.status.action == 3
    assert not np.array_equal(app.frame, first)
    assert app.redraws >= 3 and app.surface.get_size() == app.screen.size


def test_undo_and_reset_return_to_earlier_states_exactly(make_app, drive):
    app = make_app()
    start = app.frame.copy()
    a = step_and_wait(app, drive, pygame.K_1, 1)
    b = step_and_wait(app, drive, pygame.K_3, 2)
    drive.press(pygame.K_BACKSPACE)
    drive.until(app, lambda: app.status.steps == 1)
    assert np.array_equal(app.frame, a)
    assert np.array_equal(step_and_wait(app, drive, pygame.K_3, 2), b)  # the same draw again
    drive.press(pygame.K_r)
    drive.until(app, lambda: app.status.steps == 0 and app.version > 4)
    assert np.array_equal(app.frame, start)
    assert np.array_equal(step_and_wait(app, drive, pygame.K_1, 1), a)  # same seed, same world


def test_a_held_key_keeps_stepping_until_released(make_app, drive):
    app = make_app(fps_cap=30)
    drive.press(pygame.K_RIGHT, release=False)
    drive.until(app, lambda: app.status.steps >= 4)
    pygame.event.post(pygame.event.Event(pygame.KEYUP, key=pygame.K_RIGHT, mod=0))
    app.tick()
    drive.until(app, lambda: not app.worker.stepping and not app.worker.pending)
    held = app.status.steps
    deadline = time.perf_counter() + 0.2
    while time.perf_counter() < deadline:
        app.tick()
    assert app.status.steps == held and set(app.env.actions) == {1}


def test_the_window_keeps_drawing_while_a_slow_world_computes(make_app, drive, fake):
    app = make_app(fake(step_seconds=0.5))
    drive.press(pygame.K_1)
    ticks, redraws = app.ticks, app.redraws
    drive.until(app, lambda: app.worker.stepping)
    drive.press(pygame.K_2)  # pressed while the world computes: queued, not lost
    drive.until(app, lambda: app.status.steps == 1)  # half a second of computing...
    assert app.ticks - ticks >= 10  # ...while the loop kept ticking (about 60 a second)
    assert app.redraws - redraws >= 3  # and redrawing: the 'generating' time counts up
    drive.until(app, lambda: app.status.steps == 2)
    assert app.env.actions == [0, 1]


def test_a_flood_of_keys_is_bounded_and_counted(make_app, drive):
    app = make_app(queue_size=3)
    drive.press(pygame.K_p)
    app.tick()
    for _ in range(7):
        drive.press(pygame.K_1)
    app.tick()
    assert app.worker.pending == 3 and app.status.dropped == 4
    assert "4 key presses dropped" in app.status.message
    drive.press(pygame.K_p)
    drive.until(app, lambda: app.status.steps == 3)


def test_recording_holds_the_start_frame_and_one_frame_per_step(make_app, drive, tmp_path):
    out = tmp_path / "play.mp4"
    app = make_app(record=out)
    for i, key in enumerate((pygame.K_1, pygame.K_2, pygame.K_3, pygame.K_4), start=1):
        step_and_wait(app, drive, key, i)
    drive.press(pygame.K_ESCAPE)
    drive.until(app, lambda: not app.running)
    app.close()
    with av.open(str(out)) as container:
        stream = container.streams.video[0]
        decoded = [f.to_ndarray(format="rgb24") for f in container.decode(stream)]
    assert len(decoded) == 1 + 4 and decoded[0].shape == (12 * 4, 16 * 4, 3)
    assert abs(int(decoded[-1].mean()) - int(app.frame.mean())) <= 2


def test_v_records_and_s_saves_a_screenshot(make_app, drive, tmp_path):
    app = make_app()
    drive.press(pygame.K_v)
    step_and_wait(app, drive, pygame.K_1, 1)
    drive.press(pygame.K_v)
    drive.press(pygame.K_s, shift=True)  # S alone moves down in this world's key map
    drive.press(pygame.K_h)
    app.tick()
    videos, shots = list(tmp_path.glob("*.mp4")), list(tmp_path.glob("*.png"))
    assert len(videos) == 1 and len(shots) == 1 and app.show_help
    assert Image.open(shots[0]).size == app.screen.size
    with av.open(str(videos[0])) as container:
        assert sum(1 for _ in container.decode(video=0)) == 2
    assert app.env.actions == [0]  # shift+S did not step


def test_next_prompt_and_errors_show_in_the_panel(make_app, drive, fake):
    app = make_app(fake(fail_on=2))
    drive.press(pygame.K_n)
    drive.until(app, lambda: "second" in app.status.title and app.version >= 2)
    assert app.frame.mean() == 90
    drive.press(pygame.K_3)
    drive.until(app, lambda: app.failures)
    assert "cannot do that" in app.status.message and app.status.message_bad
    assert step_and_wait(app, drive, pygame.K_1, 1) is not None  # still playing


def test_replay_steps_through_the_recorded_frames(coinrun_dataset, drive):
    from genie.prompts import dataset_episode

    env = ReplayWorld(coinrun_dataset)
    app = App(env, [Prompt("ep 0", lambda: 0)], scale=2, fps_cap=None).open()
    try:
        drive.until(app, lambda: app.frame is not None)
        real = dataset_episode(coinrun_dataset, 0)
        for t, key in enumerate((pygame.K_RIGHT, pygame.K_1, pygame.K_a), start=1):
            assert np.array_equal(step_and_wait(app, drive, key, t), real[t])
        assert "frame 4/" in app.status.caption and env.taken == [0, 0, 0]
        drive.press(pygame.K_BACKSPACE)
        drive.until(app, lambda: app.status.steps == 2)
        assert np.array_equal(app.frame, real[2]) and env.taken == [0, 0]
    finally:
        app.close()
