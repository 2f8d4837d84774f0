"""A whole world trained in seconds (test preset), driven through genie.load and the CLI."""

from __future__ import annotations

import json
import re
import shutil

import numpy as np
import pytest

import genie
from genie.cli import main
from genie.errors import GenieError


@pytest.fixture
def world(tiny_world):
    return genie.load(tiny_world, device="cpu")


def test_world_folder_holds_everything(tiny_world):
    meta = json.loads((tiny_world / "world.json").read_text())
    assert meta["schema"] == 1 and meta["backend"] == "maskgit"
    assert meta["resolution"] == [64, 64] and len(meta["action_names"]) == meta["num_actions"]
    provenance = meta["provenance"]
    assert len(provenance["dataset"]["hash"]) == 16
    for part in ("tokenizer", "lam", "dynamics"):
        assert (tiny_world / part / "config.json").exists()
        assert (tiny_world / "runs" / part / "run.json").exists()
        trained = provenance["parts"][part]
        assert trained["steps"] == provenance["config"][part]["train"]["steps"]
        assert trained["seconds"] > 0 and trained["parameters"] > 0
    assert provenance["training_seconds"] == pytest.approx(
        sum(p["seconds"] for p in provenance["parts"].values())
        + provenance["token_coding_seconds"], abs=0.1)
    prompts = sorted((tiny_world / "prompts").glob("*.npy"))
    assert prompts and np.load(prompts[0]).shape[1:] == (64, 64, 3)


def test_step_and_rollout_shapes(world):
    prompt = np.load(world.prompt_files()[0])
    first = world.reset(prompt, seed=0)
    assert first.shape == (64, 64, 3) and first.dtype == np.uint8
    assert world.step(1).shape == (64, 64, 3)
    frames = world.rollout([0, 1, 2])
    assert frames.shape == (3, 64, 64, 3) and world.steps == 4
    batched = world.reset(np.stack([prompt, prompt]), seed=0)
    assert batched.shape == (2, 64, 64, 3) and world.step([0, 1]).shape == (2, 64, 64, 3)


def test_same_seed_same_frames_and_the_cache_changes_nothing(tiny_world, world):
    prompt = np.load(world.prompt_files()[0])
    actions = [i % world.num_actions for i in range(world.context + 8)]  # the window slides
    world.reset(prompt, seed=3)
    a = world.rollout(actions)
    world.reset(prompt, seed=3)
    assert np.array_equal(world.rollout(actions), a)
    uncached = genie.load(tiny_world, device="cpu", sampler={"use_cache": False})
    uncached.reset(prompt, seed=3)
    assert np.array_equal(uncached.rollout(actions), a)


def test_restore_undoes_exactly_and_previews_leave_no_trace(world):
    world.reset(np.load(world.prompt_files()[0]), seed=0)
    world.step(0)
    state = world.snapshot()
    after = world.rollout([1, 2])
    world.restore(state)
    assert world.steps == 1 and np.array_equal(world.rollout([1, 2]), after)
    world.restore(state)
    previews = world.preview()
    assert previews.shape == (world.num_actions, 64, 64, 3)
    assert np.array_equal(world.rollout([1, 2]), after)  # the generator was rewound too
    for action, preview in enumerate(previews):  # sampled codes, and still what a key does
        world.restore(state)
        assert np.array_equal(world.step(action), preview), action


def test_parts_that_do_not_fit_fail_at_load(tiny_world, tmp_path):
    from genie.tokenizer.model import VideoTokenizer

    broken = tmp_path / "broken"
    shutil.copytree(tiny_world, broken, ignore=shutil.ignore_patterns("runs"))
    config = json.loads((broken / "tokenizer" / "config.json").read_text())
    other = {k: v for k, v in config.items() if not k.startswith("_")} | {"codebook_size": 32}
    shutil.rmtree(broken / "tokenizer")
    VideoTokenizer(**other).save_pretrained(broken / "tokenizer")  # a tokenizer of another world
    with pytest.raises(GenieError, match="does not fit together: the tokenizer has 32 codes but "
                                         "the dynamics predicts 64"):
        genie.load(broken, device="cpu")
    with pytest.raises(GenieError, match="is not a world"):
        genie.load(tmp_path, device="cpu")


def test_wrong_prompt_size_is_refused(world):
    with pytest.raises(GenieError, match="frames are 32x32 but this world is 64x64"):
        world.reset(np.zeros((2, 32, 32, 3), np.uint8))
    with pytest.raises(ValueError, match="latent actions are 0.."):
        world.reset(np.zeros((64, 64, 3), np.uint8))
        world.step(world.num_actions)


def test_a_finished_world_is_not_overwritten(coinrun_dataset, tiny_world, capsys):
    before = (tiny_world / "world.json").read_bytes()
    assert main(["train", "world", "--config", "test", "--data", str(coinrun_dataset), "--out",
                 str(tiny_world)]) == 2
    assert "already holds a finished world" in capsys.readouterr().err
    assert (tiny_world / "world.json").read_bytes() == before


def test_train_world_init_from_starts_each_trained_stage_from_that_world(coinrun_dataset,
                                                                         tiny_world, tmp_path,
                                                                         capsys):
    from safetensors.torch import load_file

    out = tmp_path / "tuned"
    # A learning rate so small that the weights cannot move: what comes out is where it started.
    assert main(["train", "world", "--config", "test", "--data", str(coinrun_dataset), "--out",
                 str(out), "--tokenizer", str(tiny_world), "--init-from", str(tiny_world),
                 "--device", "cpu", "lam.train.steps=2", "dynamics.train.steps=2",
                 "lam.train.lr=1e-12", "dynamics.train.lr=1e-12"]) == 0
    for part in ("lam", "dynamics"):
        before = load_file(next((tiny_world / part).glob("*.safetensors")))
        after = load_file(next((out / part).glob("*.safetensors")))
        weights = [k for k in before if before[k].is_floating_point()]  # not step counters
        assert all(np.allclose(before[k].numpy(), after[k].numpy(), atol=1e-6) for k in weights)
    meta = json.loads((out / "world.json").read_text())
    assert meta["provenance"]["init_from"] == str(tiny_world.resolve())
    said = capsys.readouterr().out  # what each part took, then where the world is
    for part in ("lam", "dynamics"):
        assert re.search(rf"^{part}: \S+ \(2 steps in [\d.]+ min, [\d,]+ frames/s, [\d.]+% of "
                         r"it waiting for data\)$", said, re.MULTILINE), said
    assert re.search(r"^tokenizer: \S+ \([\d,]+ steps", said, re.MULTILINE), said
    assert said.rstrip().splitlines()[-1].startswith("world ready:")


def test_train_world_init_from_with_its_parts_reuses_its_token_cache(coinrun_dataset,
                                                                      tiny_world, tmp_path):
    out = tmp_path / "tuned"
    assert main(["train", "world", "--config", "test", "--data", str(coinrun_dataset), "--out",
                 str(out), "--tokenizer", str(tiny_world), "--lam", str(tiny_world),
                 "--init-from", str(tiny_world), "--device", "cpu",
                 "dynamics.train.steps=2"]) == 0
    source = tiny_world / "runs" / "dynamics" / "tokens" / "index.json"
    copied = out / "runs" / "dynamics" / "tokens" / "index.json"
    # Copied with its timestamps and not rewritten: coding again would have made a new index.
    assert copied.read_bytes() == source.read_bytes()
    assert copied.stat().st_mtime_ns == source.stat().st_mtime_ns


def test_train_world_refuses_an_init_from_that_is_not_a_world(coinrun_dataset, tmp_path, capsys):
    out = tmp_path / "w"
    assert main(["train", "world", "--config", "test", "--data", str(coinrun_dataset), "--out",
                 str(out), "--init-from", str(tmp_path / "nowhere")]) == 2
    assert "--init-from" in capsys.readouterr().err and not out.exists()
