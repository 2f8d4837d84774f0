"""The CoinRun recorder: files, alignment of actions with frames, determinism, bad options."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from genie.data.record import ACTION_NAMES, RecordSettings, episode_env, record
from genie.data.video import read_frames
from genie.errors import GenieError


def replay(settings: RecordSettings, i: int, actions: np.ndarray) -> np.ndarray:
    """Frames the game shows when episode i's recorded actions are played again."""
    env, _, _ = episode_env(settings, i)
    frames = [env.observe()[1]["rgb"][0]]
    for a in actions:
        for _ in range(settings.repeat):
            env.act(np.array([a]))
        frames.append(env.observe()[1]["rgb"][0])
    return np.stack(frames)


def test_files_and_action_alignment(coinrun_raw, coinrun_settings):
    meta = json.loads((coinrun_raw / "record.json").read_text())
    assert meta["action_names"] == ACTION_NAMES
    assert len(meta["episodes"]) == coinrun_settings.episodes
    for i, episode in enumerate(meta["episodes"]):
        actions = np.load(coinrun_raw / f"{episode['name']}.actions.npy")
        frames = np.stack([f.rgb for f in read_frames(coinrun_raw / f"{episode['name']}.mp4")])
        assert len(actions) == len(frames) - 1 == episode["frames"] - 1
        assert len(actions) <= coinrun_settings.max_steps
        assert actions.min() >= 0 and actions.max() < len(ACTION_NAMES)
        # Lossless video: frame t+1 is exactly what the game shows after action t.
        np.testing.assert_array_equal(frames, replay(coinrun_settings, i, actions))


def test_agent_holds_actions(coinrun_raw):
    actions = np.concatenate([np.load(p) for p in sorted(coinrun_raw.glob("*.actions.npy"))])
    changes = np.count_nonzero(np.diff(actions))
    assert changes < len(actions) / 2  # held for several steps on average
    assert len(np.unique(actions)) >= 5


def test_same_seed_same_files(tmp_path, coinrun_raw, coinrun_settings):
    again = tmp_path / "again"
    record(again, coinrun_settings, workers=1, progress=False)
    for path in coinrun_raw.iterdir():
        assert (again / path.name).read_bytes() == path.read_bytes(), path.name


def test_repeat_holds_each_action_for_several_game_steps(tmp_path):
    settings = RecordSettings(episodes=1, max_steps=30, seed=3, lossless=True, repeat=3)
    meta = record(tmp_path, settings, workers=1, progress=False)
    assert meta["fps"] == 5
    frames = np.stack([f.rgb for f in read_frames(tmp_path / "coinrun_000000.mp4")])
    actions = np.load(tmp_path / "coinrun_000000.actions.npy")
    assert len(actions) == len(frames) - 1
    # One recorded transition is `repeat` game steps under its one action.
    np.testing.assert_array_equal(frames, replay(settings, 0, actions))


def test_lossy_and_resized(tmp_path):
    settings = RecordSettings(episodes=1, max_steps=20, seed=5, size=48)
    record(tmp_path / "r", settings, workers=1, progress=False)
    frames = np.stack([f.rgb for f in read_frames(tmp_path / "r" / "coinrun_000000.mp4")])
    assert frames.shape[1:] == (48, 48, 3)
    assert frames.std() > 10  # a real picture, not a blank frame

    settings = RecordSettings(episodes=1, max_steps=20, seed=5)
    record(tmp_path / "l", settings, workers=1, progress=False)
    frames = np.stack([f.rgb for f in read_frames(tmp_path / "l" / "coinrun_000000.mp4")])
    truth = replay(settings, 0, np.load(tmp_path / "l" / "coinrun_000000.actions.npy"))
    mse = np.mean((frames.astype(float) - truth) ** 2)
    assert 10 * np.log10(255**2 / mse) > 28  # H.264 yuv420p: lossy, but close


@pytest.mark.parametrize(
    "change, message",
    [
        ({"mode": "medium"}, "must be easy or hard"),
        ({"levels": -1}, "levels must lie"),
        ({"size": 4}, "too small"),
        ({"repeat": 0}, "--repeat must be at least 1"),
        ({"seed": -1}, "--seed -1 must lie in 0..4294967295"),
    ],
)
def test_bad_settings(tmp_path, change, message):
    with pytest.raises(GenieError, match=message):
        record(tmp_path / "x", RecordSettings(episodes=1, **change), progress=False)
    assert not (tmp_path / "x").exists()


def test_ctrl_c_is_one_line(tmp_path):
    """Ctrl-C reaches the workers too; they leave it to the parent, which says it once."""
    out = tmp_path / "raw"
    proc = subprocess.Popen(
        [sys.executable, "-m", "genie", "data", "record", "coinrun", "--out", str(out),
         "--episodes", "100", "--workers", "2", "--quiet"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True,
    )
    deadline = time.monotonic() + 60
    while not (out.exists() and any(out.iterdir())):  # a worker has begun an episode
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline
        time.sleep(0.01)
    time.sleep(0.5)  # both workers well into their episodes
    os.killpg(proc.pid, signal.SIGINT)  # as a terminal does: the whole process group
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130 and err == "genie: interrupted\n", err


def test_refuses_non_empty_folder(tmp_path):
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(GenieError, match="not empty"):
        record(tmp_path, RecordSettings(episodes=1), progress=False)
    with pytest.raises(GenieError, match="did not record"):
        record(tmp_path, RecordSettings(episodes=1), overwrite=True, progress=False)
    assert (tmp_path / "notes.txt").read_text() == "mine"
