"""Windows of frames from a prepared dataset: alignment, skipping, seeding, worker safety."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from genie.cli import main
from genie.data.dataset import VideoDataset
from genie.data.index import open_dataset
from genie.data.prepare import PrepareSettings, prepare
from genie.data.video import VideoWriter
from genie.errors import GenieError

QUIET = {"progress": False, "log": lambda msg: None}
STEP = {0: -2, 1: 2, 2: 0}  # action -> horizontal motion of the square, in pixels


def square_x(frame: np.ndarray) -> int:
    return int(np.flatnonzero(((frame[..., 0] > 200) & (frame[..., 2] < 80)).any(0))[0])


@pytest.fixture(scope="module")
def moving_world(tmp_path_factory):
    """Videos where action t moves the square between frame t and t+1, with sidecars."""
    root = tmp_path_factory.mktemp("world")
    rng = np.random.default_rng(0)
    for v in range(3):
        n = 40 + 10 * v
        actions = rng.integers(0, 3, n - 1).astype(np.int16)
        x = 20
        (root / "src").mkdir(exist_ok=True)
        with VideoWriter(root / "src" / f"ep{v}.mp4", lossless=True) as w:
            for t in range(n):
                frame = np.full((32, 48, 3), 60, np.uint8)
                frame[10:16, x : x + 6] = (250, 220, 20)
                w.write(frame)
                if t < n - 1:
                    x = int(np.clip(x + STEP[int(actions[t])], 0, 42))
        np.save(root / "src" / f"ep{v}.actions.npy", actions)
    prepare(root / "src", root / "ds", PrepareSettings(size=(32, 48), val_fraction=0.3), **QUIET)
    return root / "ds"


def test_action_t_moves_frame_t_to_t_plus_1(moving_world):
    ds = VideoDataset(moving_world, seq_len=8, with_actions=True)
    checked = 0
    for i in range(len(ds)):
        frames, actions = ds[i]
        assert frames.shape == (8, 32, 48, 3) and frames.dtype == torch.uint8
        assert actions.shape == (7,)
        for t in range(7):
            x0, x1 = square_x(frames[t].numpy()), square_x(frames[t + 1].numpy())
            if 2 <= x0 <= 40:  # away from the walls the motion is exactly the action's
                assert x1 - x0 == STEP[int(actions[t])]
                checked += 1
    assert checked > 100


def test_windows_cover_each_episode(moving_world):
    info = open_dataset(moving_world)
    for split in ("train", "val"):
        ds = VideoDataset(moving_world, seq_len=5, split=split, stride=2)
        assert len(ds) == sum((ep["length"] - 5) // 2 + 1 for ep in info.split(split))
        episode, start = ds.locate(len(ds) - 1)
        assert start + 5 <= episode["length"]


def test_frame_skip_keeps_first_action(moving_world):
    plain = VideoDataset(moving_world, seq_len=7, with_actions=True)
    skip = VideoDataset(moving_world, seq_len=4, frame_skip=2, with_actions=True)
    frames, actions = plain[0]
    skipped, skipped_actions = skip[0]
    assert torch.equal(skipped, frames[::2])
    assert torch.equal(skipped_actions, actions[::2])


def test_short_episodes_skipped_and_too_long_refused(moving_world, caplog):
    ds = VideoDataset(moving_world, seq_len=45)  # episodes are 40, 50 and 60 frames long
    train = open_dataset(moving_world).split("train")
    assert [ep["length"] for ep in ds.episodes] == [ep["length"] for ep in train
                                                     if ep["length"] >= 45]
    assert f"{len(train) - len(ds.episodes)} of {len(train)} train episodes are shorter" in (
        caplog.text
    )
    with pytest.raises(GenieError, match="lower seq_len"):
        VideoDataset(moving_world, seq_len=500)


def test_seeded_loader_is_reproducible_with_workers(moving_world):
    ds = VideoDataset(moving_world, seq_len=4)

    def batches(workers: int) -> list[torch.Tensor]:
        loader = torch.utils.data.DataLoader(
            ds, batch_size=8, shuffle=True, num_workers=workers,
            generator=torch.Generator().manual_seed(7),
        )
        return [b for _, b in zip(range(4), loader, strict=False)]

    two = batches(2)
    assert all(torch.equal(a, b) for a, b in zip(two, batches(0), strict=True))
    assert not torch.equal(two[0], two[1])


def test_incomplete_or_missing_dataset(tmp_path, capsys):
    with pytest.raises(GenieError, match="does not exist"):
        VideoDataset(tmp_path / "nope", seq_len=4)
    (tmp_path / "half").mkdir()
    (tmp_path / "half" / "prepare.json").write_text("{}")
    with pytest.raises(GenieError, match="incomplete"):
        open_dataset(tmp_path / "half")
    assert main(["data", "info", str(tmp_path / "half")]) == 2
    assert "run the same `genie data prepare` command again" in capsys.readouterr().err


def test_info(moving_world, capsys):
    assert main(["data", "info", str(moving_world)]) == 0
    out = capsys.readouterr().out
    assert "32x48 (HxW)" in out and "150 in 3 episodes" in out and "actions      yes" in out


@pytest.mark.parametrize(("index", "message"), [
    ("{}", "index.json holds no list of episodes"),
    ("[]", "index.json holds no list of episodes"),
    ('[{"split": "train"}]', "episode 0 of index.json lacks a valid split, shard, offset"),
    ('[{"split": "train", "shard": "x.npy", "offset": 0, "length": 5}]',
     "index.json names x.npy, which is missing"),
    ("not json", "index.json"),
])
def test_a_damaged_index_is_one_clear_line(moving_world, tmp_path, capsys, index, message):
    import shutil

    data = tmp_path / "ds"
    shutil.copytree(moving_world, data)
    (data / "index.json").write_text(index)
    assert main(["data", "info", str(data)]) == 2
    err = capsys.readouterr().err
    assert f"dataset {data} is damaged (" in err and message in err and err.count("\n") == 1, err
    assert "prepare it again, --overwrite" in err
    with pytest.raises(GenieError, match="is damaged"):
        VideoDataset(data, seq_len=4)


def test_info_counts_one_episode_as_one(moving_world, tmp_path, capsys):
    import json
    import shutil

    data = tmp_path / "ds"
    shutil.copytree(moving_world, data)
    episodes = json.loads((data / "index.json").read_text())
    (data / "index.json").write_text(json.dumps([ep for ep in episodes if ep["split"] == "train"]
                                                + [next(ep for ep in episodes
                                                        if ep["split"] == "val")]))
    assert main(["data", "info", str(data)]) == 0
    out = capsys.readouterr().out
    assert "val 1 episode /" in out and "0 files skipped" in out
