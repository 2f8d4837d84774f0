"""The training engine through `genie train tokenizer`: outputs, resume, stops, bad input."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from genie.cli import main
from genie.config import load_config
from genie.errors import GenieError
from genie.train.engine import Trainer, _Progress, lr_lambda

SHORT = ["tokenizer.train.steps=10", "tokenizer.train.checkpoint_every=5",
         "tokenizer.train.sample_every=5"]


def train(data, out, *extra, check=True) -> int:
    code = main(["train", "tokenizer", "--config", "test", "--data", str(data), "--out", str(out),
                 "--device", "cpu", *extra])
    assert code == 0 or not check
    return code


@pytest.fixture(scope="module")
def finished_run(coinrun_dataset, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("runs") / "tok"
    train(coinrun_dataset, out)
    return out


def test_a_run_leaves_everything_a_user_needs(finished_run):
    run = json.loads((finished_run / "run.json").read_text())
    assert run["stage"] == "tokenizer" and run["precision"] == "fp32" and run["processes"] == 1
    assert run["model"]["dim"] == 32 and run["dataset"]["frames"] > 0
    assert [p.name for p in sorted((finished_run / "checkpoints").iterdir())] == [
        "step_0000010", "step_0000020"]  # rotated: keep_checkpoints = 2
    assert (finished_run / "samples" / "step_0000020.png").exists()
    assert any((finished_run / "logs").rglob("events.out.tfevents*"))
    assert (finished_run / "model" / "config.json").exists()


def test_loss_falls_in_the_logs(finished_run):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    logs = EventAccumulator(str(next((finished_run / "logs").rglob("events.out.tfevents*"))))
    losses = [e.value for e in logs.Reload().Scalars("train/loss")]
    assert len(losses) == 4 and losses[-1] < losses[0]
    lrs = [e.value for e in logs.Scalars("train/lr")]
    assert lrs[-1] < max(lrs)  # cosine decay
    assert all(0 <= e.value < 1 for e in logs.Scalars("train/data_wait"))


def test_the_command_says_what_the_run_took(coinrun_dataset, tmp_path, capsys):
    train(coinrun_dataset, tmp_path / "run", "tokenizer.train.steps=2",
          "tokenizer.train.checkpoint_every=0", "tokenizer.train.sample_every=0")
    said = capsys.readouterr().out
    assert re.search(r"tokenizer trained: \S+model \(2 steps in \d+\.\d min, [\d,]+ "
                     r"frames/s, \d+\.\d% of it waiting for data\)", said), said
    trained = json.loads((tmp_path / "run" / "model" / "training.json").read_text())
    assert trained["frames"] == 2 * 4 * 4  # steps x batch x clip frames of the test preset


def test_resume_continues_exactly(coinrun_dataset, tmp_path):
    straight, halves = tmp_path / "straight", tmp_path / "halves"
    train(coinrun_dataset, straight, "tokenizer.train.steps=10", "tokenizer.train.log_every=1")
    train(coinrun_dataset, halves, "tokenizer.train.steps=10", "tokenizer.train.max_minutes=1e-9")
    assert [p.name for p in (halves / "checkpoints").iterdir()] == ["step_0000001"]
    config = load_config("test", ["tokenizer.train.steps=10"])
    from genie.data.dataset import VideoDataset
    from genie.tokenizer.model import VideoTokenizer

    model = VideoTokenizer(height=64, width=64, window=4, **config.tokenizer.model_kwargs())
    trainer = Trainer(model, VideoDataset(coinrun_dataset, 4), train=config.tokenizer.train,
                      run=config.run, data=config.data, out=halves, device="cpu", resume=True)
    assert trainer.progress.step == 1
    saved = torch.load(halves / "checkpoints" / "step_0000001" / "optimizer.bin",
                       weights_only=True)
    now = trainer.optimizer.state_dict()
    assert now["state"][0]["step"] == saved["state"][0]["step"] == 1
    assert torch.equal(now["state"][0]["exp_avg"], saved["state"][0]["exp_avg"])
    trainer.fit()
    a = load_file(straight / "model" / "diffusion_pytorch_model.safetensors")
    b = load_file(halves / "model" / "diffusion_pytorch_model.safetensors")
    for name in a:
        torch.testing.assert_close(a[name], b[name], msg=name)


def test_refusals_lose_nothing(coinrun_dataset, finished_run, tmp_path, capsys):
    before = sorted(p.name for p in (finished_run / "checkpoints").iterdir())
    assert train(coinrun_dataset, finished_run, check=False) == 2
    assert "already holds a training run: add --resume" in capsys.readouterr().err
    assert train(coinrun_dataset, finished_run, "--resume", "tokenizer.dim=48", check=False) == 2
    assert "the model changed (dim 32 -> 48)" in capsys.readouterr().err
    assert sorted(p.name for p in (finished_run / "checkpoints").iterdir()) == before
    assert train(coinrun_dataset, tmp_path / "fresh", "--resume", check=False) == 2
    assert "nothing to resume" in capsys.readouterr().err


def test_xformers_attention_is_checked_before_training(coinrun_dataset, tmp_path, capsys):
    assert train(coinrun_dataset, tmp_path / "x", "run.attention=xformers", check=False) == 2
    assert "run.attention=xformers needs a CUDA GPU" in capsys.readouterr().err
    assert not (tmp_path / "x").exists() or not any((tmp_path / "x").iterdir())
    assert train(coinrun_dataset, tmp_path / "y", "run.attention=flash", check=False) == 2
    assert "run.attention must be one of sdpa, xformers" in capsys.readouterr().err


def test_damaged_checkpoint_is_named(coinrun_dataset, tmp_path, capsys):
    out = tmp_path / "run"
    train(coinrun_dataset, out, *SHORT)
    latest = out / "checkpoints" / "step_0000010" / "model.safetensors"
    latest.write_bytes(latest.read_bytes()[:100])
    assert train(coinrun_dataset, out, "--resume", *SHORT, check=False) == 2
    err = capsys.readouterr().err
    assert "step_0000010 could not be loaded" in err and "delete it" in err


def test_init_from_checks_the_shape(coinrun_dataset, finished_run, tmp_path, capsys):
    train(coinrun_dataset, tmp_path / "tuned", "--init-from", str(finished_run), *SHORT)
    code = train(coinrun_dataset, tmp_path / "other", "--init-from", str(finished_run),
                 "tokenizer.codebook_size=32", check=False)
    assert code == 2 and "codebook_size 64 vs 32" in capsys.readouterr().err
    assert train(coinrun_dataset, tmp_path / "x", "--init-from", str(tmp_path), check=False) == 2
    assert "no tokenizer model in" in capsys.readouterr().err


def test_resolution_must_fit_the_patch(small_dataset, tmp_path, capsys):
    data = small_dataset(tmp_path, 30, 30)
    assert train(data, tmp_path / "run", check=False) == 2
    assert "30x30, which does not split into 4px patches" in capsys.readouterr().err


class _Exploding(torch.nn.Module):
    """Loss turns to NaN from the fourth step on."""

    def __init__(self):
        super().__init__()
        self.w = torch.nn.Parameter(torch.ones(3))
        self.calls = 0

    def forward(self, batch):
        self.calls += 1
        loss = self.w.sum() * batch.float().mean() * (float("nan") if self.calls > 3 else 1.0)
        return loss, {"loss": loss.detach()}


class _TenSecondSteps(torch.nn.Module):
    """Each step takes ten seconds on a fake clock."""

    clock = 0.0

    def __init__(self):
        super().__init__()
        self.w = torch.nn.Parameter(torch.ones(3))

    def forward(self, batch):
        _TenSecondSteps.clock += 10.0
        loss = self.w.sum() * batch.float().mean()
        return loss, {"loss": loss.detach()}

    def save_pretrained(self, folder: str) -> None:
        Path(folder).mkdir(parents=True)


def test_time_budget_counts_every_session_once(coinrun_dataset, tmp_path, monkeypatch):
    from genie.data.dataset import VideoDataset

    monkeypatch.setattr("genie.train.engine.time.perf_counter", lambda: _TenSecondSteps.clock)
    config = load_config("test", ["tokenizer.train.steps=100", "tokenizer.train.max_minutes=1",
                                  "tokenizer.train.checkpoint_every=4"])

    def session(resume: bool) -> Trainer:
        trainer = Trainer(_TenSecondSteps(), VideoDataset(coinrun_dataset, 2),
                          train=config.tokenizer.train, run=config.run, data=config.data,
                          out=tmp_path / "run", device="cpu", resume=resume)
        trainer.fit()
        return trainer

    first = session(False)
    assert first.progress.step == 6  # 60 s of 10 s steps
    # The cosine decay ends with the budget, not at step 100.
    train = config.tokenizer.train
    assert first.scheduler.get_last_lr()[0] == pytest.approx(train.lr * train.min_lr_ratio)
    shutil.rmtree(tmp_path / "run" / "checkpoints" / "step_0000006")
    shutil.rmtree(tmp_path / "run" / "model")
    assert session(True).progress.step == 6  # resumed at step 4 with 40 s spent: 2 more


class _OneSecondItems(torch.utils.data.Dataset):
    """Each item takes a second to load on _TenSecondSteps' fake clock."""

    def __init__(self, inner):
        self.inner = inner

    def __len__(self) -> int:
        return len(self.inner)

    def __getitem__(self, index: int):
        _TenSecondSteps.clock += 1.0
        return self.inner[index]


def test_time_waiting_for_data_is_counted_apart(coinrun_dataset, tmp_path, monkeypatch):
    from genie.data.dataset import VideoDataset

    monkeypatch.setattr("genie.train.engine.time.perf_counter", lambda: _TenSecondSteps.clock)
    config = load_config("test", ["tokenizer.train.steps=5", "tokenizer.train.checkpoint_every=0",
                                  "tokenizer.train.sample_every=0"])
    trainer = Trainer(_TenSecondSteps(), _OneSecondItems(VideoDataset(coinrun_dataset, 2)),
                      train=config.tokenizer.train, run=config.run, data=config.data,
                      out=tmp_path / "run", device="cpu")
    trainer.fit()
    trained = json.loads((tmp_path / "run" / "model" / "training.json").read_text())
    # Batches of 4 items loaded in the main process: 4 s of data a step, 10 s of step, and
    # accelerate's loader may read one batch ahead.
    assert trained["steps"] == 5
    assert 20.0 <= trained["data_seconds"] <= 24.0
    assert trained["seconds"] == 50.0 + trained["data_seconds"]


def test_decay_follows_steps_or_time_whichever_ends_first():
    train = load_config("test", ["tokenizer.train.steps=1000", "tokenizer.train.warmup_steps=0",
                                 "tokenizer.train.max_minutes=1"]).tokenizer.train
    progress = _Progress()
    factor = lr_lambda(train, progress)
    assert factor(10) > 0.99
    assert factor(999) == pytest.approx(train.min_lr_ratio, abs=1e-5)  # steps end first
    progress.seconds = 30.0  # half the budget gone at step 10: halfway down the cosine
    assert factor(10) == pytest.approx((1 + train.min_lr_ratio) / 2)
    progress.seconds = 90.0
    assert factor(10) == pytest.approx(train.min_lr_ratio)
    train.max_minutes = 0  # no budget: time does not count
    assert factor(10) > 0.99


def test_nan_stops_and_names_the_last_good_checkpoint(coinrun_dataset, tmp_path):
    from genie.data.dataset import VideoDataset

    config = load_config("test", ["tokenizer.train.checkpoint_every=2"])
    trainer = Trainer(_Exploding(), VideoDataset(coinrun_dataset, 2),
                      train=config.tokenizer.train, run=config.run, data=config.data,
                      out=tmp_path / "run", device="cpu")
    with pytest.raises(GenieError, match="loss became nan at step 4.*step_0000002"):
        trainer.fit()


def test_sigterm_saves_and_exits_cleanly(coinrun_dataset, tmp_path):
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "genie", "train", "tokenizer", "--config", "test", "--data",
           str(coinrun_dataset), "--out", str(out), "--device", "cpu",
           "tokenizer.train.steps=100000", "tokenizer.train.checkpoint_every=0",
           "data.num_workers=1"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    deadline = time.monotonic() + 60
    while not (out / "run.json").exists():
        assert proc.poll() is None and time.monotonic() < deadline
        time.sleep(0.05)
    time.sleep(3.0)  # into the loop
    os.killpg(proc.pid, signal.SIGTERM)  # as `kill` of a job or a scheduler does: loader too
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 2, err
    assert "stopped by SIGTERM at step" in err and "continue with --resume" in err
    assert "Traceback" not in err
    [checkpoint] = (out / "checkpoints").iterdir()
    # A run stopped before its export can still be evaluated: from its latest checkpoint.
    from genie.tokenizer.model import VideoTokenizer
    from genie.train.stages import load_model

    model = load_model(VideoTokenizer, out, "tokenizer")
    saved = load_file(checkpoint / "model.safetensors")
    assert all(torch.equal(saved[k], v) for k, v in model.state_dict().items())


_CRASH = """
import sys, torch
from genie.config import load_config
from genie.data.dataset import VideoDataset
from genie.train.engine import Trainer

class Model(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.w = torch.nn.Parameter(torch.ones(3))

    def forward(self, batch):
        raise RuntimeError("a bug in the model")

class Data(torch.utils.data.Dataset):
    def __len__(self):
        return 8

    def __getitem__(self, index):
        raise FileNotFoundError("a shard went missing")

data, out, where = sys.argv[1:]
config = load_config("test", ["data.num_workers=1"])
dataset = Data() if where == "loader" else VideoDataset(data, 2)
Trainer(Model(), dataset, train=config.tokenizer.train, run=config.run, data=config.data,
        out=out, device="cpu").fit()
"""


@pytest.mark.parametrize("where", ["model", "loader"])
def test_a_crash_with_loader_workers_exits(coinrun_dataset, tmp_path, where):
    # Uncaught, the error's traceback keeps the loader alive until the interpreter exits, where
    # its workers (which ignore SIGTERM) used to be waited for forever.
    proc = subprocess.Popen([sys.executable, "-c", _CRASH, str(coinrun_dataset),
                             str(tmp_path / "run"), where], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        _, err = proc.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        pytest.fail("the crashed training did not exit")
    assert proc.returncode == 1
    assert ("a bug in the model" if where == "model" else "a shard went missing") in err


def test_two_processes_with_accelerate_launch(coinrun_dataset, tmp_path, capsys):
    out = tmp_path / "run"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(
        # --multi_gpu picks accelerate's torchrun launcher; --device cpu makes it gloo on CPU.
        [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
         "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
         "-m", "genie", "train", "tokenizer", "--config", "test", "--data", str(coinrun_dataset),
         "--out", str(out), "--device", "cpu", "tokenizer.train.steps=6"],
        capture_output=True, text=True, env=env, timeout=300,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert json.loads((out / "run.json").read_text())["processes"] == 2
    assert done.stdout.count("tokenizer trained") == 1
    json_out = tmp_path / "eval.json"
    assert main(["eval", "tokenizer", "--model", str(out), "--data", str(coinrun_dataset),
                 "--seq-len", "4", "--json", str(json_out), "--device", "cpu"]) == 0
    assert json.loads(json_out.read_text())["psnr"] > 5
