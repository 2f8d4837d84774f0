"""Suite-wide settings, the shared CoinRun fixtures and one tiny trained world.

One compute thread per test process: the suite runs as two pytest-xdist workers on two
cores, and letting each start several torch/OpenMP threads oversubscribes the cores and makes
small ops many times slower.
"""

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("PYGAME_HIDE_SUPPORT_PROMPT", "1")

from pathlib import Path  # noqa: E402

import pytest  # noqa: E402

from genie.cli import main  # noqa: E402
from genie.data.prepare import PrepareSettings, prepare  # noqa: E402
from genie.data.record import RecordSettings, record  # noqa: E402


@pytest.fixture(scope="session")
def coinrun_settings() -> RecordSettings:
    return RecordSettings(episodes=4, max_steps=48, seed=3, lossless=True)


@pytest.fixture(scope="session")
def coinrun_raw(tmp_path_factory, coinrun_settings) -> Path:
    """Four short lossless CoinRun episodes, recorded once for the whole session."""
    out = tmp_path_factory.mktemp("coinrun") / "raw"
    record(out, coinrun_settings, workers=2, progress=False)
    return out


@pytest.fixture(scope="session")
def coinrun_dataset(tmp_path_factory, coinrun_raw) -> Path:
    out = tmp_path_factory.mktemp("coinrun") / "dataset"
    prepare(coinrun_raw, out, PrepareSettings(val_fraction=0.25), workers=1, progress=False,
            log=lambda msg: None)
    return out


@pytest.fixture(scope="session")
def tiny_world(coinrun_dataset, tmp_path_factory) -> Path:
    """One world trained in seconds with the test preset, shared by world and play tests."""
    out = tmp_path_factory.mktemp("worlds") / "w"
    code = main(["train", "world", "--config", "test", "--data", str(coinrun_dataset), "--out",
                 str(out), "--device", "cpu"])
    assert code == 0
    return out
