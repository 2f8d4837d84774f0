"""`genie play` and `genie calibrate` from the command line: end to end, and every user error."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import av
import numpy as np
import pytest

import genie
import genie.play.launch
import genie.worlds
from genie.cli import main
from genie.play.calibrate import default_key_map, format_calibration, match_actions
from genie.play.launch import busy_cores, idle_cores


def one_line_error(capsys, message: str) -> None:
    err = capsys.readouterr().err.strip()
    assert err.startswith("genie: error:") and message in err and "\n" not in err, err


def test_headless_play_records_and_reports(tiny_world, tmp_path, capsys):
    out = tmp_path / "play.mp4"
    assert main(["play", "--world", str(tiny_world), "--headless", "--steps", "5", "--actions",
                 "0,3", "--record", str(out), "--device", "cpu"]) == 0
    printed = capsys.readouterr().out
    assert printed.startswith("5 frames in ") and "ms/frame" in printed and "fps" in printed
    assert re.search(r", \d+ threads?$", printed, re.M)  # chosen from the idle cores
    with av.open(str(out)) as container:
        assert sum(1 for _ in container.decode(video=0)) == 1 + 5  # the start frame + 5 steps


def test_threads_default_to_the_cores_other_work_leaves_idle(tiny_world, capsys):
    assert idle_cores(busy=0.0, cores=2) == 2
    assert idle_cores(busy=0.9, cores=2) == 1  # one core busy: two threads would wait on it
    assert idle_cores(busy=0.6, cores=2) == 2  # a core only partly used
    assert idle_cores(busy=6.0, cores=2) == 1  # never fewer than one
    assert idle_cores(busy=1.2, cores=8) == 7
    assert main(["play", "--world", str(tiny_world), "--headless", "--steps", "2",
                 "--threads", "1", "--device", "cpu"]) == 0
    assert capsys.readouterr().out.strip().endswith(", 1 thread")


def test_busy_cores_reads_the_kernels_counters(monkeypatch):
    monkeypatch.setattr(genie.play.launch, "_own_seconds", lambda: 0.0)  # this process idle
    header = "cpu  0 0 0 0 0 0 0 0 0 0\n"
    before = header + "cpu0 100 0 50 850 0 0 0 0 0 0\ncpu1 10 0 10 980 0 0 0 0 0 0\nintr 5\n"
    # Over the interval cpu0 ran 90 of 100 ticks (user + system), cpu1 waited on disk.
    after = header + "cpu0 170 0 70 860 0 0 0 0 0 0\ncpu1 12 0 10 1058 20 0 0 0 0 0\nintr 9\n"
    texts = iter([before, after])
    busy = busy_cores(interval=0.0, read=lambda: next(texts))
    mine = os.sched_getaffinity(0) & {0, 1}
    assert busy == pytest.approx(0.9 * (0 in mine) + 0.02 * (1 in mine))
    assert busy_cores(interval=0.0, read=lambda: (_ for _ in ()).throw(OSError("no /proc"))) is None


@pytest.mark.skipif(not Path("/proc/stat").exists(), reason="needs Linux's /proc/stat")
def test_busy_cores_sees_a_busy_process():
    spinner = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        time.sleep(0.3)  # started and spinning
        assert busy_cores(interval=0.5) >= 0.75
    finally:
        spinner.kill()
        spinner.wait()


def _recorded(world, tmp_path, name: str, *options: str) -> np.ndarray:
    out = tmp_path / f"{name}.mp4"
    assert main(["play", "--world", str(world), "--headless", "--steps", "4", "--actions", "1,2",
                 "--record", str(out), "--device", "cpu", "--precision", "fp32", *options]) == 0
    with av.open(str(out)) as container:
        return np.stack([f.to_ndarray(format="rgb24") for f in container.decode(video=0)])


def test_sampling_options_reach_the_world(tiny_world, tmp_path):
    greedy = _recorded(tiny_world, tmp_path, "greedy", "--temperature", "0")
    sampled = _recorded(tiny_world, tmp_path, "sampled", "--temperature", "1", "--top-p", "0.9")
    again = _recorded(tiny_world, tmp_path, "again", "--temperature", "1", "--top-p", "0.9")
    assert np.array_equal(sampled, again)  # seeded: the same session twice
    assert not np.array_equal(greedy, sampled)


def test_headless_replay_plays_a_dataset(coinrun_dataset, capsys):
    assert main(["play", "--replay", f"{coinrun_dataset}:0", "--headless", "--steps", "3"]) == 0
    assert capsys.readouterr().out.startswith("3 frames in ")


@pytest.mark.parametrize(("args", "message"), [
    (["--world", "{tmp}/nowhere"], "world {tmp}/nowhere does not exist: give the folder"),
    (["--world", "{tmp}"], "is not a world (no world.json)"),
    (["--world", "{world}", "--prompt", "{tmp}/missing.png"], "does not exist"),
    (["--world", "{world}", "--steps", "3"], "--steps counts frames of a --headless run"),
    (["--world", "{world}", "--headless", "--actions", "0,9"], "--actions '0,9'"),
    (["--replay", "{tmp}/nowhere"], "does not exist"),
    (["--replay", "{tmp}/nowhere", "--temperature", "1"], "needs no --world, --prompt or sampl"),
    (["--replay", "{data}:x"], "--replay {data}:x: the episode after the colon must be a number"),
    (["--world", "{world}", "--prompt", "{data}:x"], "the episode after the colon must be a"),
])
def test_bad_input_is_one_clear_line(tiny_world, coinrun_dataset, tmp_path, capsys, args,
                                     message):
    args = [a.format(tmp=tmp_path, world=tiny_world, data=coinrun_dataset) for a in args]
    message = message.format(tmp=tmp_path, data=coinrun_dataset)
    assert main(["play", *args, "--device", "cpu"]) == 2
    one_line_error(capsys, message)


@pytest.mark.parametrize(("option", "value"), [
    ("--fps-cap", "0"), ("--fps-cap", "-1"), ("--fps-cap", "nan"), ("--seed", "-1"),
    ("--temperature", "-1"), ("--top-p", "1.5"), ("--top-p", "0"), ("--confidence-noise", "-1"),
])
def test_bad_numbers_are_refused_before_the_world_loads(tmp_path, capsys, option, value):
    with pytest.raises(SystemExit) as exit:
        main(["play", "--headless", option, value, "--record", str(tmp_path / "x.mp4")])
    assert exit.value.code == 2
    err = capsys.readouterr().err.strip()
    assert f"argument {option}: {value!r} is not a" in err and "\n" not in err, err
    assert not any(tmp_path.iterdir())


@pytest.mark.parametrize("name", ["x.gif", "x.npy", "x"])
def test_recordings_are_mp4_by_name(tmp_path, capsys, name):
    with pytest.raises(SystemExit) as exit:
        main(["play", "--headless", "--record", str(tmp_path / name)])
    assert exit.value.code == 2
    err = capsys.readouterr().err.strip()
    assert "is not an mp4 name" in err and "\n" not in err, err
    assert not any(tmp_path.iterdir())


def test_no_world_says_how_to_train_one(monkeypatch, tmp_path, capsys):
    monkeypatch.setattr(genie.worlds, "DEFAULT_WORLD", tmp_path / "coinrun-tiny")
    assert main(["play", "--headless"]) == 2
    one_line_error(capsys, "genie train world --config tiny --data DATASET --out W")


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="display check is Linux-only")
def test_no_display_points_to_headless(monkeypatch, tiny_world, capsys):
    for name in ("DISPLAY", "WAYLAND_DISPLAY", "SDL_VIDEODRIVER"):
        monkeypatch.delenv(name, raising=False)
    assert main(["play", "--world", str(tiny_world)]) == 2
    one_line_error(capsys, "genie play --headless")


def test_lift_matches_actions_a_busy_latent_does_not_take_them_all():
    names = ["LEFT", "NOOP", "RIGHT", "RIGHT+UP"]
    counts = np.array([  # latent 0 is everywhere; 1 and 2 are rarer but specific
        [40, 50, 40, 30],
        [30, 2, 1, 1],
        [1, 2, 30, 3],
        [0, 0, 0, 0],  # never used
    ])
    latent_names, best = match_actions(counts, names)
    assert best == {"LEFT": 1, "NOOP": 0, "RIGHT": 2, "RIGHT+UP": 0}  # argmax count: all 0
    assert latent_names == ["NOOP", "LEFT", "RIGHT", "action 4"]
    assert default_key_map(best) == {"left": 1, "a": 1, "right": 2, "d": 2, "space": 0}


def test_keys_that_press_one_latent_action_are_warned_about():
    best = {"LEFT": 0, "RIGHT": 0, "UP": 1, "RIGHT+UP": 1, "DOWN": 2}
    result = {"method": "true actions", "transitions": 10, "dataset": "d", "world": "w",
              "names": ["LEFT", "UP", "DOWN"], "share": [0.5, 0.3, 0.2], "lift": [2, 2, 1],
              "best_latent": best, "key_map": default_key_map(best)}
    printed = format_calibration(result)
    assert [line for line in printed.splitlines() if line.startswith("warning:")] == [
        "warning: left and right press the same latent action 0: the world's LAM does not tell "
        "LEFT and RIGHT apart (train it longer); the key map is written anyway",
        "warning: up and space press the same latent action 1: the world's LAM does not tell "
        "UP and RIGHT+UP apart (train it longer); the key map is written anyway",
    ]
    # Space falls back to UP where the data has no jump forward: the same key by design.
    best = {"LEFT": 0, "RIGHT": 1, "UP": 2}
    result |= {"best_latent": best, "key_map": default_key_map(best)}
    assert "warning" not in format_calibration(result)


def test_calibrate_writes_names_and_keys_and_keeps_the_rest(tiny_world, coinrun_dataset,
                                                            tmp_path, capsys):
    world = tmp_path / "w"
    shutil.copytree(tiny_world, world, ignore=shutil.ignore_patterns("runs"))
    before = json.loads((world / "world.json").read_text())
    assert main(["calibrate", "--world", str(world), "--data", str(coinrun_dataset),
                 "--device", "cpu"]) == 0
    printed = capsys.readouterr().out
    assert "log lift" in printed and "key map:" in printed
    after = json.loads((world / "world.json").read_text())
    written = ("action_names", "key_map", "calibration")
    assert {k: v for k, v in after.items() if k not in written} == \
        {k: v for k, v in before.items() if k not in written}
    assert after["calibration"]["method"] == "true actions"
    assert set(after["key_map"]) == {"left", "a", "right", "d", "up", "w", "down", "s", "space"}
    assert all(0 <= a < 8 for a in after["key_map"].values())
    known = {"LEFT+DOWN", "LEFT", "LEFT+UP", "DOWN", "NOOP", "UP", "RIGHT+DOWN", "RIGHT",
             "RIGHT+UP"}
    assert all(n.split(" (")[0] in known or n.startswith("action ") for n in after["action_names"])
    loaded = genie.load(world, device="cpu")
    assert loaded.key_map == after["key_map"] and loaded.action_names == after["action_names"]
    assert not (world / "world.json.tmp").exists()


def test_calibrate_without_true_actions_orders_by_motion(tiny_world, coinrun_dataset, tmp_path,
                                                         capsys):
    world, data = tmp_path / "w", tmp_path / "ds"
    shutil.copytree(tiny_world, world, ignore=shutil.ignore_patterns("runs"))
    shutil.copytree(coinrun_dataset, data, ignore=shutil.ignore_patterns("*.actions.npy"))
    meta = json.loads((data / "meta.json").read_text())
    (data / "meta.json").write_text(json.dumps(meta | {"has_actions": False}))
    assert main(["calibrate", "--world", str(world), "--data", str(data), "--device",
                 "cpu"]) == 0
    assert "ordered by the pixel change" in capsys.readouterr().out
    after = json.loads((world / "world.json").read_text())
    assert sorted(after["action_names"]) == sorted(f"action {i}" for i in range(1, 9))
    assert after["key_map"] == {} and after["calibration"]["method"] == "motion"
