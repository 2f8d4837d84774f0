"""The CoinRun world shipped inside the package: a new user's first minute runs on it."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

import genie
from genie.cli import main
from genie.errors import GenieError
from genie.eval.metrics import psnr
from genie.worlds import DEFAULT_WORLD, default_world


@pytest.fixture(scope="module")
def shipped():
    return genie.load(default_world(), device="cpu")


def test_the_shipped_world_is_whole_small_and_agrees_with_itself(shipped):
    files = [f for f in DEFAULT_WORLD.rglob("*") if f.is_file()]
    assert sum(f.stat().st_size for f in files) < 30 * 2**20
    assert {f.suffix for f in files} <= {".json", ".safetensors", ".npy"}  # no pickles
    meta = json.loads((DEFAULT_WORLD / "world.json").read_text())
    assert meta["backend"] == "maskgit" and tuple(meta["resolution"]) == shipped.size == (64, 64)
    # load() already refused any mismatch of codebook, grid, actions or resolution; the key
    # map and prompts are only read later, so they are checked here.
    assert {"left", "right", "up", "space"} <= set(shipped.key_map)
    assert all(0 <= a < shipped.num_actions for a in shipped.key_map.values())
    prompts = shipped.prompt_files()
    assert len(prompts) >= 4
    for path in prompts:
        clip = np.load(path)
        assert clip.dtype == np.uint8 and clip.shape[1:] == (64, 64, 3)


def test_its_actions_lead_to_different_next_frames(shipped):
    shipped.reset(np.load(shipped.prompt_files()[0]), seed=0)
    nexts = shipped.preview()  # (A, H, W, 3), one batched step from the same state
    frames = torch.from_numpy(nexts)
    mutual = psnr(frames[:, None], frames[None])  # (A, A)
    distinct_pairs = (mutual < 60).sum() // 2  # 60 dB is the cap of identical frames
    assert distinct_pairs >= shipped.num_actions  # not one action copying all the others


def test_headless_play_runs_on_the_default_world(capsys, tmp_path):
    out = tmp_path / "play.mp4"
    assert main(["play", "--headless", "--steps", "20", "--record", str(out),
                 "--device", "cpu"]) == 0
    assert capsys.readouterr().out.startswith("20 frames in ")
    assert out.stat().st_size > 0


def test_generate_from_a_shipped_prompt(tmp_path):
    out = tmp_path / "clip.npy"
    prompt = default_world() / "prompts" / "prompt_01.npy"
    assert main(["generate", "--prompt", str(prompt), "--actions", "0,3x3", "-o", str(out),
                 "--scale", "1", "--device", "cpu"]) == 0
    frames = np.load(out)
    assert frames.shape == (len(np.load(prompt)) + 4, 64, 64, 3)
    assert json.loads(out.with_suffix(".json").read_text())["world"] == str(DEFAULT_WORLD)


def test_a_bf16_world_runs_under_autocast_and_stays_near_fp32(tmp_path):
    # Greedy codes, so that only the precision differs between the two.
    fp32, bf16 = (genie.load(default_world(), device="cpu", precision=p,
                             sampler={"temperature": 0.0}) for p in ("fp32", "bf16"))
    prompt = np.load(fp32.prompt_files()[0])
    first = [w.reset(prompt, seed=0) for w in (fp32, bf16)]
    nexts = [w.step(2) for w in (fp32, bf16)]
    # Its caches hold bf16 keys: the passes ran under autocast, not in fp32 by accident.
    assert bf16._decoder.keys[0].dtype == torch.bfloat16
    assert fp32._decoder.keys[0].dtype == torch.float32
    for a, b in (first, nexts):
        assert a.dtype == b.dtype == np.uint8 and a.shape == b.shape == (64, 64, 3)
    # Close calls may pick other tokens, so not equal, but the same picture (29.5 dB here).
    assert psnr(torch.from_numpy(nexts[0]), torch.from_numpy(nexts[1])) > 20
    out = tmp_path / "clip.npy"
    assert main(["generate", "--actions", "1x3", "-o", str(out), "--scale", "1",
                 "--device", "cpu", "--precision", "bf16"]) == 0
    assert json.loads(out.with_suffix(".json").read_text())["precision"] == "bf16"
    with pytest.raises(GenieError, match="precision 'fp16' is not one of"):
        genie.load(default_world(), device="cpu", precision="fp16")
