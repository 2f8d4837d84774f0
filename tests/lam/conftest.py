"""LAM fixtures: one CLI-trained run for the whole session, small datasets of any shape."""

from __future__ import annotations

from pathlib import Path

import pytest

from genie.cli import main


@pytest.fixture(scope="session")
def lam_run(coinrun_dataset, tmp_path_factory) -> Path:
    """`genie train lam --config test` on the CoinRun fixture, trained once."""
    out = tmp_path_factory.mktemp("runs") / "lam"
    code = main(["train", "lam", "--config", "test", "--data", str(coinrun_dataset), "--out",
                 str(out), "--device", "cpu"])
    assert code == 0
    return out


@pytest.fixture
def make_dataset(tmp_path):
    """make_dataset(height, width, videos): a prepared dataset of flat synthetic videos."""
    import numpy as np

    from genie.data.prepare import PrepareSettings, prepare
    from genie.data.video import VideoWriter

    def make(height: int, width: int, videos: int) -> Path:
        root = tmp_path / f"{height}x{width}x{videos}"
        (root / "src").mkdir(parents=True)
        for v in range(videos):
            with VideoWriter(root / "src" / f"{v}.mp4") as writer:
                for t in range(10):
                    writer.write(np.full((height, width, 3), 20 * t + v, dtype=np.uint8))
        prepare(root / "src", root / "ds", PrepareSettings(size=(height, width)), progress=False,
                log=lambda msg: None)
        return root / "ds"

    return make
