"""`genie eval world` and `genie eval compare` on a tiny trained world, and their refusals."""

from __future__ import annotations

import json
import re

import pytest

from genie.cli import main

QUICK = ["--clips", "4", "--horizon", "6", "--drift-steps", "8", "--drift-clips", "2",
         "--batch", "3", "--device", "cpu", "--quiet"]


def eval_world(world, data, out, *args) -> int:
    return main(["eval", "world", "--world", str(world), "--data", str(data), "--out", str(out),
                 *QUICK, *map(str, args)])


@pytest.fixture(scope="module")
def evaluated(tiny_world, coinrun_dataset, tmp_path_factory):
    """Two runs with the same seed, past the world's 4-frame context."""
    outs = [tmp_path_factory.mktemp("eval") / name for name in ("a", "b")]
    for out in outs:
        assert eval_world(tiny_world, coinrun_dataset, out) == 0
    return outs


def test_eval_world_writes_every_report(evaluated):
    out = evaluated[0]
    m = json.loads((out / "metrics.json").read_text())
    assert m["horizons"] == [1, 2, 3, 4, 5, 6] and m["clips"] == 4
    for metric in ("psnr", "ssim"):
        assert set(m[metric]) == {"inferred", "random", "copy", "ceiling"}
        assert all(len(v) == 6 for v in m[metric].values())
    assert len(m["delta_psnr"]) == 6
    assert m["drift"]["steps"] == 8 and set(m["drift"]["leaves_at"]) == {
        "sharpness", "colour_distance", "token_entropy"}
    assert m["actions"]["has_true_actions"] and 0 <= m["actions"]["nmi"] <= 1
    assert m["actions"]["key_check"]["skipped"]  # the test world's key map is empty
    s = m["settings"]
    assert s["context"] == 4 and s["seed"] == 0 and s["sampler"]["steps"] == 2
    assert s["precision"] == "fp32"  # the default: the figures of record are fp32's
    report = (out / "report.md").read_text()
    assert "| 4 |" in report and "ΔtPSNR" in report and "leaves at step" in report
    assert "steps in range" in report
    assert set(m["drift"]["in_range"]) == set(m["drift"]["leaves_at"])
    assert "; precision fp32" in report
    assert "vs copy" in report and m["copy_margin_sem"][0] is not None
    for png in ("horizons.png", "drift.png", "actions.png"):
        assert (out / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    videos = sorted(p.name for p in (out / "clips").glob("*.mp4"))
    assert videos == ["clip_00.mp4", "clip_01.mp4", "clip_02.mp4", "clip_03.mp4", "drift_00.mp4"]


def test_the_same_seed_gives_the_same_numbers(evaluated):
    a, b = (json.loads((out / "metrics.json").read_text()) for out in evaluated)
    for key in ("psnr", "ssim", "delta_psnr", "drift", "actions"):
        assert a[key] == b[key], key


def test_compare_prints_one_column_per_evaluation(evaluated, capsys):
    assert main(["eval", "compare", *map(str, evaluated)]) == 0
    table = capsys.readouterr().out.splitlines()
    assert table[0].split() == ["a", "b"]
    rows = {label: cells for label, *cells in (re.split(r"\s{2,}", line) for line in table[1:])}
    assert rows["ΔtPSNR(4)"][0] == rows["ΔtPSNR(4)"][1]
    assert len(rows["PSNR ceiling h=6"]) == 2 and "NMI" in rows
    assert rows["drift token entropy in range"][0].endswith("%")


@pytest.mark.parametrize(("args", "message"), [
    (["--world", "{tmp}/nowhere"], "nowhere does not exist: give the folder of a trained world"),
    (["--data", "{train_only}"], "has no val episodes (it has: train): pass --split with one "
                                 "of those (--split train), or prepare it again with "
                                 "--val-fraction above 0"),
    (["--horizon", "0"], "--horizon 0: give a whole number of at least 1"),
    (["--context", "9"], "--context 9 is more than this world's context of 4 frames: give "
                         "--context 4 or less"),
])
def test_bad_input_is_one_clear_line(tiny_world, coinrun_dataset, train_only_dataset, tmp_path,
                                     capsys, args, message):
    args = [a.format(tmp=tmp_path, train_only=train_only_dataset) for a in args]
    out = tmp_path / "out"
    assert eval_world(tiny_world, coinrun_dataset, out, *args) == 2  # the last --x wins
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1
    assert not out.exists()


def test_compare_refuses_a_folder_without_metrics(tmp_path, capsys):
    assert main(["eval", "compare", str(tmp_path)]) == 2
    assert "holds no metrics.json" in capsys.readouterr().err
