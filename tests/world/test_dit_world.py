"""A DiT world trained in seconds on the test world's tokenizer and LAM, through the CLI."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch

import genie
from genie.cli import main
from genie.errors import GenieError


@pytest.fixture(scope="module")
def dit_world(tiny_world, coinrun_dataset, tmp_path_factory):
    """Only the dynamics is trained (test preset, --backend dit); tokenizer and LAM are reused.

    100 steps rather than the preset's 20: the action embeddings start small beside the
    noise-level embedding, and after 20 steps no action changes a sampled code yet (measured:
    1 distinct next frame of 8 at 20 steps, 4 at 100, predicting v; ~12 s).
    """
    out = tmp_path_factory.mktemp("worlds") / "dit"
    code = main(["train", "world", "--config", "test", "--backend", "dit", "--data",
                 str(coinrun_dataset), "--out", str(out), "--tokenizer",
                 str(tiny_world / "tokenizer"), "--lam", str(tiny_world / "lam"),
                 "--device", "cpu", "dynamics.train.steps=100"])
    assert code == 0
    return out


@pytest.fixture
def world(dit_world):
    return genie.load(dit_world, device="cpu")


def test_world_json_names_the_backend_and_its_sampler(dit_world, world):
    meta = json.loads((dit_world / "world.json").read_text())
    assert meta["backend"] == "dit"
    assert meta["sampler"] == {"steps": 2, "context_noise": 0.1, "shift": 1.0}
    assert type(world.dynamics).__name__ == "DiTDynamics"
    assert world.sampler.settings.steps == 2 and world.sampler.settings.context_noise == 0.1


def test_different_actions_lead_to_different_frames(world):
    prompt = np.load(world.prompt_files()[0])
    frames = []
    for action in range(world.num_actions):
        world.reset(prompt, seed=0)
        frames.append(world.step(action))
    assert len({frame.tobytes() for frame in frames}) >= 3
    world.reset(prompt, seed=0)
    assert np.array_equal(world.step(0), frames[0])  # the same seed and action: the same frame


def test_cached_and_uncached_worlds_agree_and_undo_is_exact(dit_world, world):
    prompt = np.load(world.prompt_files()[0])
    actions = [i % world.num_actions for i in range(world.context + 8)]  # the window slides
    world.reset(prompt, seed=3)
    a = world.rollout(actions)
    uncached = genie.load(dit_world, device="cpu", sampler={"use_cache": False})
    uncached.reset(prompt, seed=3)
    assert np.array_equal(uncached.rollout(actions), a)
    state = world.snapshot()
    after = world.rollout([1, 2])
    world.restore(state)
    previews = world.preview()
    assert previews.shape == (world.num_actions, 64, 64, 3)
    assert np.array_equal(world.rollout([1, 2]), after)  # the preview left no trace
    for action, preview in enumerate(previews):  # the same noise as the step itself draws
        world.restore(state)
        assert np.array_equal(world.step(action), preview), action


def test_a_bf16_dit_world_repeats_itself_and_undoes_exactly(dit_world):
    world = genie.load(dit_world, device="cpu", precision="bf16")
    prompt = np.load(world.prompt_files()[0])
    world.reset(prompt, seed=3)
    a = world.rollout([0, 1, 2])
    state = world.snapshot()
    after = world.rollout([3, 4])
    world.restore(state)
    assert np.array_equal(world.rollout([3, 4]), after)
    world.reset(prompt, seed=3)
    assert np.array_equal(world.rollout([0, 1, 2]), a)
    assert a.shape == (3, 64, 64, 3) and a.dtype == np.uint8


def test_generate_and_eval_run_unchanged(dit_world, coinrun_dataset, tmp_path):
    assert main(["generate", "--world", str(dit_world), "--device", "cpu", "--actions", "0,1x3",
                 "--out", str(tmp_path / "clip.npy"), "--scale", "1"]) == 0
    assert np.load(tmp_path / "clip.npy").shape[1:] == (64, 64, 3)
    assert main(["eval", "world", "--world", str(dit_world), "--data", str(coinrun_dataset),
                 "--out", str(tmp_path / "eval"), "--clips", "2", "--horizon", "3",
                 "--drift-steps", "4", "--drift-clips", "1", "--batch", "2",
                 "--device", "cpu", "--quiet"]) == 0
    metrics = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert metrics["settings"]["backend"] == "dit"
    assert set(metrics["settings"]["sampler"]) >= {"steps", "context_noise"}


@pytest.mark.parametrize(("command", "options", "message"), [
    (["generate", "-o", "{tmp}/x.mp4"], ["--temperature", "0.5", "--top-p", "0.9"],
     "--temperature and --top-p apply only to MaskGIT worlds and {world} is a DiT world: leave "
     "them out (of the sampling options a DiT world takes --sampling-steps)"),
    (["play", "--headless"], ["--top-p", "0.9"], "--top-p applies only to MaskGIT worlds"),
    (["eval", "world", "--data", "{tmp}"], ["--confidence-noise", "0"],
     "--confidence-noise applies only to MaskGIT worlds"),
])
def test_maskgit_options_on_a_dit_world_are_one_clear_line(dit_world, tmp_path, capsys, command,
                                                           options, message):
    command = [a.format(tmp=tmp_path) for a in command]
    assert main([*command, "--world", str(dit_world), *options, "--device", "cpu"]) == 2
    err = capsys.readouterr().err
    assert message.format(world=dit_world) in err and err.count("\n") == 1, err
    assert not any(tmp_path.iterdir())


def test_a_dit_of_another_tokenizer_is_refused(dit_world, tmp_path):
    from genie.tokenizer.model import VideoTokenizer

    broken = tmp_path / "broken"
    shutil.copytree(dit_world, broken, ignore=shutil.ignore_patterns("runs"))
    tokenizer = VideoTokenizer.from_pretrained(broken / "tokenizer")
    with torch.no_grad():
        tokenizer.quantizer.codebook.add_(1.0)  # the same shapes, other codes
    tokenizer.save_pretrained(broken / "tokenizer")
    with pytest.raises(GenieError, match="trained on another tokenizer"):
        genie.load(broken, device="cpu")


def test_a_dit_on_encoder_latents_trains_caches_them_and_plays(tiny_world, coinrun_dataset,
                                                               tmp_path):
    out = tmp_path / "encoder"
    assert main(["train", "world", "--config", "test", "--backend", "dit", "--data",
                 str(coinrun_dataset), "--out", str(out), "--tokenizer",
                 str(tiny_world / "tokenizer"), "--lam", str(tiny_world / "lam"),
                 "--device", "cpu", "dynamics.latent=encoder", "dynamics.train.steps=5"]) == 0
    cache = out / "runs" / "dynamics" / "tokens"
    codes, units = np.load(cache / "codes.npy"), np.load(cache / "latents.npy")
    world = genie.load(out, device="cpu")
    assert world.sampler.model.config.latent == "encoder"
    # The cached latents are the ones the codes were chosen from (fp16 may flip a near tie).
    nearest = world.tokenizer.quantizer.nearest(torch.from_numpy(units[:50]).float())
    assert (nearest.numpy().reshape(codes[:50].shape) == codes[:50]).mean() > 0.99
    prompt = np.load(world.prompt_files()[0])
    actions = [i % world.num_actions for i in range(world.context + 2)]
    world.reset(prompt, seed=1)
    frames = world.rollout(actions)
    uncached = genie.load(out, device="cpu", sampler={"use_cache": False})
    uncached.reset(prompt, seed=1)
    assert np.array_equal(uncached.rollout(actions), frames)
