"""One world trained in seconds with the test preset, shared by the world-level tests."""

from __future__ import annotations

from pathlib import Path

import pytest

from genie.cli import main


@pytest.fixture(scope="session")
def tiny_world(coinrun_dataset, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("worlds") / "w"
    code = main(["train", "world", "--config", "test", "--data", str(coinrun_dataset), "--out",
                 str(out), "--device", "cpu"])
    assert code == 0
    return out
