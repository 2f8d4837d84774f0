"""`genie data prepare`: round trip, every container and pixel format, damage, splits, resume."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from genie.cli import main
from genie.data.index import open_dataset
from genie.data.prepare import PrepareSettings, prepare
from genie.data.video import VideoWriter, read_frames
from genie.errors import GenieError

QUIET = {"progress": False, "log": lambda msg: None}


def shard_frames(dataset: Path, episode: dict) -> np.ndarray:
    frames = np.load(dataset / episode["shard"], mmap_mode="r")
    return np.asarray(frames[episode["offset"] : episode["offset"] + episode["length"]])


def shard_actions(dataset: Path, episode: dict) -> np.ndarray:
    actions = np.load(dataset / (episode["shard"][:-4] + ".actions.npy"))
    return actions[episode["offset"] : episode["offset"] + episode["length"]]


def test_round_trip_matches_recording(coinrun_raw, coinrun_dataset):
    info = open_dataset(coinrun_dataset)
    assert info.meta["action_names"][7] == "RIGHT"
    assert info.meta["frames"] == sum(ep["length"] for ep in info.episodes)
    assert {ep["split"] for ep in info.episodes} == {"train", "val"}
    for ep in info.episodes:
        video = coinrun_raw / ep["source"]
        np.testing.assert_array_equal(
            shard_frames(coinrun_dataset, ep), np.stack([f.rgb for f in read_frames(video)])
        )
        sidecar = np.load(video.with_name(video.stem + ".actions.npy"))
        actions = shard_actions(coinrun_dataset, ep)
        np.testing.assert_array_equal(actions[:-1], sidecar)
        assert actions[-1] == -1  # no transition out of an episode's last frame


def test_every_format_and_pixel_layout(tmp_path, video_maker):
    write, square = video_maker
    src = tmp_path / "src"
    src.mkdir()
    frames = square(12, 48, 64)
    odd = square(12, 47, 63)
    write(src / "h264.mp4", frames)
    write(src / "vp9.webm", frames, "libvpx-vp9", "yuv420p")
    write(src / "mpeg4.avi", frames, "mpeg4", "yuv420p")
    write(src / "mjpeg.avi", frames, "mjpeg", "yuvj420p")
    write(src / "odd.mkv", odd, "ffv1", "bgr0")
    write(src / "anim.gif", frames, "gif", "rgb8")
    rgba = np.concatenate([frames, np.full((*frames.shape[:3], 1), 128, np.uint8)], axis=-1)
    write(src / "rgba.mov", rgba, "png", "rgba", in_format="rgba")
    write(src / "gray.mkv", frames[..., :1].repeat(3, -1), "ffv1", "gray")
    out = tmp_path / "ds"
    summary = prepare(src, out, PrepareSettings(size=(32, 40)), workers=2, **QUIET)
    assert summary.skipped == []
    info = open_dataset(out)
    by_source = {ep["source"]: shard_frames(out, ep) for ep in info.episodes}
    assert sorted(by_source) == sorted(p.name for p in src.iterdir())
    for name, clip in by_source.items():
        assert clip.shape == (12, 32, 40, 3), name
    gray = by_source["gray.mkv"].astype(int)
    assert np.abs(gray[..., 0] - gray[..., 1]).max() <= 1  # gray comes out as R = G = B
    # Lossless sources resize to nearly the same picture as the H.264 one.
    assert np.abs(by_source["rgba.mov"].astype(int) - by_source["h264.mp4"]).mean() < 4


def make_damaged_sources(src: Path, square) -> None:
    src.mkdir()
    with VideoWriter(src / "good.mp4") as w:
        for frame in square(60):
            w.write(frame)
    data = (src / "good.mp4").read_bytes()
    (src / "zero.mp4").write_bytes(b"")
    (src / "notes.mkv").write_text("this is not a video\n")
    (src / "truncated.mp4").write_bytes(data[: len(data) * 2 // 3])
    middle = bytearray(data)
    middle[len(data) // 2 : len(data) // 2 + 400] = np.random.default_rng(0).bytes(400)
    (src / "middle.mp4").write_bytes(bytes(middle))
    with VideoWriter(src / "single.mp4") as w:
        w.write(square(1)[0])


def test_bad_inputs_each_named_once(tmp_path, video_maker, capsys):
    make_damaged_sources(tmp_path / "src", video_maker[1])
    code = main(["data", "prepare", str(tmp_path / "src"), "--out", str(tmp_path / "ds"),
                 "--quiet", "--workers", "2"])
    assert code == 0
    err = capsys.readouterr().err
    reasons = {
        "zero.mp4": "empty file",
        "notes.mkv": "not a readable video",
        "single.mp4": "shorter than 2 frames",
    }
    for name, reason in reasons.items():
        lines = [line for line in err.splitlines() if line.startswith(name)]
        assert len(lines) == 1 and reason in lines[0], (name, err)
    assert "Traceback" not in err
    info = open_dataset(tmp_path / "ds")
    sources = {ep["source"] for ep in info.episodes}
    assert {"good.mp4", "truncated.mp4"} <= sources  # damaged files keep what decodes
    assert not sources & set(reasons)
    good = [ep for ep in info.episodes if ep["source"] == "good.mp4"]
    truncated = [ep for ep in info.episodes if ep["source"] == "truncated.mp4"]
    assert sum(ep["length"] for ep in good) == 60
    assert 2 <= sum(ep["length"] for ep in truncated) < 60
    assert sorted(s for s, _ in info.meta["skipped"]) == sorted(
        n for n in reasons if n not in sources
    )
    # The file corrupted in the middle is either kept in pieces that never span the damage or
    # skipped with a reason: never silently glued together.
    middle = [ep for ep in info.episodes if ep["source"] == "middle.mp4"]
    assert middle or any(s == "middle.mp4" for s, _ in info.meta["skipped"])
    assert sum(ep["length"] for ep in middle) < 60


def test_nothing_usable_fails_and_leaves_nothing(tmp_path, capsys):
    src = tmp_path / "src"
    src.mkdir()
    (src / "a.mp4").write_bytes(b"")
    (src / "b.avi").write_text("nope")
    assert main(["data", "prepare", str(src), "--out", str(tmp_path / "ds"), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "no usable video among the 2 files" in err.splitlines()[-1]
    assert not (tmp_path / "ds").exists()


def test_one_of_a_kind_is_counted_as_one(tmp_path, video_maker, capsys):
    write, square = video_maker
    (tmp_path / "src").mkdir()
    write(tmp_path / "src" / "a.mp4", square(6))
    assert main(["data", "prepare", str(tmp_path / "src"), "--out", str(tmp_path / "ds"),
                 "--quiet", "--workers", "1", "--val-fraction", "0"]) == 0
    out = capsys.readouterr().out
    assert ": 1 episode (1 train, 0 val), 6 frames at 64x64 from 1 video; 0 files skipped" in out


def test_existing_dataset_and_foreign_folder(tmp_path, coinrun_raw, capsys):
    out = tmp_path / "ds"
    prepare(coinrun_raw, out, PrepareSettings(), **QUIET)
    with pytest.raises(GenieError, match="already exists: add --overwrite"):
        prepare(coinrun_raw, out, PrepareSettings(), **QUIET)
    prepare(coinrun_raw, out, PrepareSettings(size=(32, 32)), overwrite=True, **QUIET)
    assert open_dataset(out).size == (32, 32)
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "thesis.tex").write_text("precious")
    with pytest.raises(GenieError, match="not a genie dataset"):
        prepare(coinrun_raw, mine, PrepareSettings(), overwrite=True, **QUIET)
    assert (mine / "thesis.tex").read_text() == "precious"
    assert main(["data", "prepare", str(tmp_path / "missing"), "--out", str(out)]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_deterministic_whatever_the_workers(tmp_path, coinrun_raw):
    settings = PrepareSettings(shard_mb=0.3)  # several shards
    prepare(coinrun_raw, tmp_path / "a", settings, workers=1, **QUIET)
    prepare(coinrun_raw, tmp_path / "b", settings, workers=2, **QUIET)
    names = sorted(p.name for p in (tmp_path / "a").iterdir())
    assert names == sorted(p.name for p in (tmp_path / "b").iterdir())
    assert sum(n.endswith(".actions.npy") for n in names) > 1
    for name in names:
        if name != "meta.json":  # holds a timestamp
            assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()


def test_splits(tmp_path, video_maker):
    write, square = video_maker
    src = tmp_path / "src"
    src.mkdir()
    for i in range(2):
        write(src / f"{i}.mp4", square(8, seed=i))
    prepare(src, tmp_path / "two", PrepareSettings(val_fraction=0.0), **QUIET)
    assert open_dataset(tmp_path / "two").meta["splits"] == {"train": 1, "val": 1}

    held = tmp_path / "held"
    for split, n in (("train", 3), ("val", 2)):
        (held / split).mkdir(parents=True)
        for i in range(n):
            write(held / split / f"{i}.mp4", square(8, seed=i))
    prepare(held, tmp_path / "folders", PrepareSettings(val_fraction=0.5), **QUIET)
    for ep in open_dataset(tmp_path / "folders").episodes:
        assert ep["split"] == ep["source"].split("/")[0]


def test_fps_subsampling_keeps_first_action(tmp_path, coinrun_raw):
    prepare(coinrun_raw, tmp_path / "ds", PrepareSettings(fps=5), **QUIET)  # recorded at 15
    for ep in open_dataset(tmp_path / "ds").episodes:
        video = coinrun_raw / ep["source"]
        full = np.stack([f.rgb for f in read_frames(video)])
        sidecar = np.load(video.with_name(video.stem + ".actions.npy"))
        np.testing.assert_array_equal(shard_frames(tmp_path / "ds", ep), full[::3])
        np.testing.assert_array_equal(shard_actions(tmp_path / "ds", ep)[:-1],
                                      sidecar[::3][: ep["length"] - 1])


def test_split_scenes(tmp_path, video_maker):
    write, square = video_maker
    src = tmp_path / "src"
    src.mkdir()
    other = 255 - square(30, seed=1)
    write(src / "cuts.mp4", np.concatenate([square(30), other, square(20, seed=2)]))
    prepare(src, tmp_path / "ds", PrepareSettings(split_scenes=True), **QUIET)
    assert [ep["length"] for ep in open_dataset(tmp_path / "ds").episodes] == [30, 30, 20]
    prepare(src, tmp_path / "whole", PrepareSettings(), **QUIET)
    assert [ep["length"] for ep in open_dataset(tmp_path / "whole").episodes] == [80]


def test_resize_and_center_crop(tmp_path, video_maker):
    write, square = video_maker
    src = tmp_path / "src"
    src.mkdir()
    frames = square(4, 64, 128)
    frames[:, :, :32] = 0  # black side bands that a centre crop to 1:1 removes
    frames[:, :, 96:] = 0
    write(src / "wide.mp4", frames)
    prepare(src, tmp_path / "full", PrepareSettings(size=(90, 160)), **QUIET)
    prepare(src, tmp_path / "crop", PrepareSettings(size=(32, 32), crop="center"), **QUIET)
    full = shard_frames(tmp_path / "full", open_dataset(tmp_path / "full").episodes[0])
    crop = shard_frames(tmp_path / "crop", open_dataset(tmp_path / "crop").episodes[0])
    assert full.shape == (4, 90, 160, 3) and crop.shape == (4, 32, 32, 3)
    assert full[:, :, :20].max() < 30 and crop[:, :, :3].min() > 20


def run_prepare(src: Path, out: Path) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "genie", "data", "prepare", str(src), "--out", str(out),
           "--workers", "1", "--shard-mb", "0.05", "--quiet"]
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_sigkill_then_rerun_completes(tmp_path, video_maker):
    write, square = video_maker
    src = tmp_path / "src"
    src.mkdir()
    write(src / "a.mp4", square(20))
    write(src / "b.mp4", square(3000, seed=1))  # long enough to be killed while decoding it
    write(src / "c.mp4", square(20, seed=2))
    out = tmp_path / "ds"
    proc = run_prepare(src, out)
    deadline = time.monotonic() + 60
    journal = out / "journal.jsonl"
    # the file appears when it is opened, before its first line is written: wait for the line
    while not (journal.exists() and journal.read_text().endswith("\n")):
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline
        time.sleep(0.002)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    with pytest.raises(GenieError, match="incomplete"):
        open_dataset(out)
    proc = run_prepare(src, out)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    assert "finishing the interrupted prepare" in err and "1 of 3 files were done" in err
    info = open_dataset(out)
    assert [(ep["source"], ep["length"]) for ep in info.episodes] == [
        ("a.mp4", 20), ("b.mp4", 3000), ("c.mp4", 20)
    ]
    clean = tmp_path / "clean"
    prepare(src, clean, PrepareSettings(shard_mb=0.05), **QUIET)
    for name in ("index.json", *(ep["shard"] for ep in info.episodes)):
        assert (out / name).read_bytes() == (clean / name).read_bytes()
    assert not (out / "journal.jsonl").exists() and not (out / ".tmp").exists()


def test_memory_stays_bounded_on_a_long_video(tmp_path, video_maker):
    write, square = video_maker
    src = tmp_path / "src"
    src.mkdir()
    frames = square(4000, 120, 160)  # 230 MB of decoded frames
    write(src / "long.mp4", frames, options={"preset": "ultrafast"})
    del frames
    # VmHWM, not ru_maxrss: the latter is inherited across exec from this (large) test process.
    script = (
        "import re, sys; from genie.cli import main; "
        f"code = main(['data', 'prepare', {str(src)!r}, '--out', {str(tmp_path / 'ds')!r}, "
        "'--size', '120x160', '--workers', '1', '--quiet']); "
        "print(re.search(r'VmHWM:\\s+(\\d+)', open('/proc/self/status').read())[1]); "
        "sys.exit(code)"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    peak_mb = int(done.stdout.split()[-1]) / 1024
    assert peak_mb < 200, f"peak RSS {peak_mb:.0f} MB while preparing 230 MB of frames"
    assert json.loads((tmp_path / "ds" / "meta.json").read_text())["frames"] == 4000
    shutil.rmtree(tmp_path / "ds")
