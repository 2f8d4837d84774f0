"""--resume goes on with the settings a run was started with, overrides on top where safe."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from genie.cli import main

# The first session stops after its first step (the time budget), as if interrupted.
STOPPED = ["tokenizer.train.steps=6", "tokenizer.train.max_minutes=1e-9",
           "tokenizer.train.checkpoint_every=0", "tokenizer.train.sample_every=0"]


def train(*argv: str) -> int:
    return main(["train", "tokenizer", *argv, "--device", "cpu"])


def steps_done(run: Path) -> int:
    return json.loads((run / "model" / "training.json").read_text())["steps"]


def test_resume_goes_on_with_the_runs_own_settings(coinrun_dataset, tmp_path, capsys):
    run, data = tmp_path / "run", ["--data", str(coinrun_dataset)]
    assert train("--config", "test", *data, "--out", str(run), *STOPPED) == 0
    assert steps_done(run) == 1
    # No --config, no overrides but the lifted time limit: the test preset and 6 steps, not
    # the tiny preset's model and steps.
    assert train(*data, "--out", str(run), "--resume", "tokenizer.train.max_minutes=0") == 0
    assert steps_done(run) == 6
    # Steps extended on resume stay extended for the next one.
    assert train(*data, "--out", str(run), "--resume", "tokenizer.train.steps=7") == 0
    assert json.loads((run / "run.json").read_text())["config"]["tokenizer"]["train"][
        "steps"] == 7
    assert train(*data, "--out", str(run), "--resume") == 0
    assert steps_done(run) == 7
    # The first command again, --config included, gives the same settings; another preset not.
    assert train("--config", "test", *data, "--out", str(run), *STOPPED, "--resume") == 0
    capsys.readouterr()
    assert train("--config", "tiny", *data, "--out", str(run), "--resume") == 2
    err = capsys.readouterr().err
    assert f"{run} was started with other settings than --config tiny gives (" in err
    assert "drop --config to resume with its own" in err


def test_what_a_resume_cannot_change_is_named(coinrun_dataset, small_dataset, tmp_path, capsys):
    run, data = tmp_path / "run", ["--data", str(coinrun_dataset)]
    assert train("--config", "test", *data, "--out", str(run), *STOPPED) == 0
    shutil.rmtree(run / "model")
    before = sorted(p.name for p in run.rglob("*"))
    capsys.readouterr()
    assert train(*data, "--out", str(run), "--resume", "tokenizer.dim=48") == 2
    assert capsys.readouterr().err == (
        f"genie: error: cannot resume {run}: the model changed (dim 32 -> 48), which comes from "
        "tokenizer.dim: resume without changing tokenizer.dim, or train into a new --out\n")
    other = small_dataset(tmp_path, 32, 32)
    assert train("--data", str(other), "--out", str(run), "--resume") == 2
    assert capsys.readouterr().err == (
        f"genie: error: cannot resume {run}: the model changed (height 64 -> 32, width 64 -> 32),"
        f" which comes from --data ({other.resolve()}): resume with --data "
        f"{coinrun_dataset.resolve()}, which it was trained with, or train into a new --out\n")
    assert train(*data, "--out", str(run), "--resume", "tokenizer.train.ema_decay=0.9") == 2
    assert "it was trained without EMA weights" in capsys.readouterr().err
    assert sorted(p.name for p in run.rglob("*")) == before


def test_a_world_resumes_with_its_own_settings(coinrun_dataset, tmp_path, capsys):
    out = tmp_path / "w"
    world = ["train", "world", "--data", str(coinrun_dataset), "--out", str(out), "--device",
             "cpu"]
    # A first stage refused at once leaves only the settings: the next start needs no --resume.
    for _ in range(2):
        assert main([*world, "--config", "test", "tokenizer.patch=7"]) == 2
        assert "does not split into 7px patches" in capsys.readouterr().err
    short = ["tokenizer.train.steps=2", "lam.train.steps=2", "dynamics.train.steps=2"]
    assert main([*world, "--config", "test", *short]) == 0
    # As if stopped before the dynamics finished.
    (out / "world.json").unlink()
    shutil.rmtree(out / "dynamics")
    settings = (out / "runs" / "config.json").read_text()
    capsys.readouterr()
    assert main([*world, "--resume", "tokenizer.dim=48"]) == 2
    assert capsys.readouterr().err == (
        f"genie: error: the tokenizer of {out} is trained already and would not take a change to "
        "its settings (tokenizer.dim 48, not 32): leave the change out, or train the world into a "
        "new --out\n")
    assert (out / "runs" / "config.json").read_text() == settings
    assert main([*world, "--resume"]) == 0
    assert json.loads((out / "dynamics" / "training.json").read_text())["steps"] == 2
    assert json.loads((out / "world.json").read_text())["provenance"]["preset"] == "test"
