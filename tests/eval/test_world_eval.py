"""The world evaluator against fake worlds whose scores are known in advance.

Every fake "tokenizes" by quantizing pixels to 8 levels, finds where its prompt came from in the
real episodes (frames are stamped unique) and reads the LAM's actions off the true ones through
a permutation. What it generates is what each test is about.
"""

from __future__ import annotations

import re

import numpy as np
import pytest

from genie.data.dataset import VideoDataset
from genie.errors import GenieError
from genie.eval.metrics import PSNR_CAP, psnr, ssim
from genie.eval.world import EvalSettings, run_eval

LENGTH = 40  # frames per episode of the pan_dataset fixture (conftest.py)
PERM = np.array([2, 0, 1])  # true action -> latent action
QUICK = EvalSettings(context=3, horizon=5, clips=12, drift_steps=12, drift_clips=2, batch=5,
                     videos=2)


def quantize(frames: np.ndarray) -> np.ndarray:
    return (frames // 32 * 32 + 16).astype(np.uint8)


class FakeWorld:
    """The EvalWorld interface over the real episodes; subclasses decide what `step` shows."""

    size, context, num_actions = (64, 64), 4, 3

    def __init__(self, data, key_map: dict | None = None):
        ds = VideoDataset(data, LENGTH, split="val", with_actions=True)
        self.episodes = [(f.numpy(), a.numpy()) for f, a in (ds[i] for i in range(len(ds)))]
        self.key_map = key_map or {}

    def locate(self, clip: np.ndarray) -> tuple[int, int]:
        """(episode, index of the clip's first frame) of a real clip."""
        for e, (frames, _) in enumerate(self.episodes):
            for s in range(len(frames) - len(clip) + 1):
                if np.array_equal(frames[s:s + len(clip)], clip):
                    return e, s
        raise AssertionError("prompt not found in the real episodes")

    def reset(self, prompt, actions=None, seed=None):
        self.rng = np.random.default_rng(seed)
        self.where = [(e, s + prompt.shape[1]) for e, s in map(self.locate, prompt)]
        self.last = quantize(prompt[:, -1])
        return self.last

    def step(self, action):
        self.last = self.next(np.asarray(action))
        self.where = [(e, t + 1) for e, t in self.where]
        return self.last

    def real_next(self) -> np.ndarray:
        return np.stack([self.episodes[e][0][min(t, LENGTH - 1)] for e, t in self.where])

    def true_action(self) -> np.ndarray:
        """The latent action of the real transition into the next frame."""
        return np.array([PERM[self.episodes[e][1][min(t, LENGTH - 1) - 1]]
                         for e, t in self.where])

    def infer_actions(self, video):
        out = []
        for clip in video:
            e, s = self.locate(clip)
            out.append(PERM[self.episodes[e][1][s:s + len(clip) - 1]])
        return np.stack(out)

    def reconstruct(self, video):
        return quantize(video)

    def codes(self, frames):
        return (frames[..., 0] // 32).reshape(len(frames), -1)


class Oracle(FakeWorld):
    def next(self, action):
        return quantize(self.real_next())


class Copier(FakeWorld):
    def next(self, action):
        return self.last


class Deaf(FakeWorld):
    """Random pans that never look at the action."""

    def next(self, action):
        shifts = self.rng.integers(-3, 4, len(action))
        return np.stack([np.roll(f, s, axis=1) for f, s in zip(self.last, shifts, strict=True)])


class Obedient(FakeWorld):
    """The real next frame when given the latent action of the real transition, else noise."""

    def next(self, action):
        noise = quantize(self.rng.integers(0, 256, self.last.shape, dtype=np.uint8))
        right = (action == self.true_action())[:, None, None, None]
        return np.where(right, quantize(self.real_next()), noise)


class Panner(FakeWorld):
    """Pans like the game under the key map's actions (or the other way, `mirror`)."""

    def __init__(self, data, mirror: bool = False):
        super().__init__(data, key_map={"left": int(PERM[0]), "right": int(PERM[2]),
                                        "space": int(PERM[1])})
        self.sign = -1 if mirror else 1

    def next(self, action):
        shift = {int(PERM[0]): 2, int(PERM[2]): -2}
        return np.stack([np.roll(f, self.sign * shift.get(int(a), 0), axis=1)
                         for f, a in zip(self.last, action, strict=True)])


class Fader(FakeWorld):
    """Fades to flat grey: blurred, off-colour, few codes."""

    def next(self, action):
        return (self.last * 0.5 + 64).astype(np.uint8)


@pytest.fixture(scope="module")
def evaluate(pan_dataset):
    def run(world_class, settings=QUICK, **kwargs):
        return run_eval(world_class(pan_dataset, **kwargs), pan_dataset, settings,
                        progress=False).metrics
    return run


def test_identical_frames_score_the_caps():
    x = np.random.default_rng(0).integers(0, 256, (2, 3, 32, 32, 3), dtype=np.uint8)
    import torch

    x = torch.from_numpy(x)
    assert torch.all(psnr(x, x) == PSNR_CAP)
    assert torch.allclose(ssim(x, x), torch.ones(2, 3))


def test_an_oracle_scores_the_ceiling_at_every_horizon(evaluate):
    m = evaluate(Oracle)
    assert m["horizons"] == [1, 2, 3, 4, 5]
    for metric in ("psnr", "ssim"):
        assert np.allclose(m[metric]["inferred"], m[metric]["ceiling"])
        assert np.allclose(m[metric]["random"], m[metric]["ceiling"])
    assert m["psnr"]["ceiling"][0] < PSNR_CAP  # quantizing loses something: a real ceiling
    assert m["psnr"]["copy"][-1] < m["psnr"]["ceiling"][-1] - 3  # the pan moves away
    margin = np.array(m["copy_margin"])
    assert np.allclose(margin, np.array(m["psnr"]["inferred"]) - m["psnr"]["copy"])
    assert np.all(margin > 3 * np.array(m["copy_margin_sem"]))  # far more than the clip draw


def test_a_copying_world_scores_exactly_the_copy_curve(evaluate):
    m = evaluate(Copier)
    for metric in ("psnr", "ssim"):
        assert m[metric]["inferred"] == m[metric]["copy"] == m[metric]["random"]
    assert m["delta_psnr"] == [0.0] * 5
    assert m["copy_margin"] == m["copy_margin_sem"] == [0.0] * 5


def test_a_world_deaf_to_actions_has_no_delta_psnr(evaluate):
    m = evaluate(Deaf)
    assert m["psnr"]["inferred"] != m["psnr"]["copy"]  # it does move...
    assert np.allclose(m["delta_psnr"], 0.0)  # ...but the actions change nothing


@pytest.mark.parametrize("world_class, separated", [(Copier, 0), (Deaf, 0), (Panner, 3)])
def test_previews_separate_only_actions_that_do_different_things(evaluate, world_class,
                                                                  separated):
    v = evaluate(world_class)["previews"]
    assert v["pairs"] == 3 and v["distinguishable_pairs"] == separated
    if separated:  # a 2 px pan of a random texture is far below the ceiling
        assert v["worst_pair_psnr"] < v["threshold_db"] - 10
    else:  # the same seed for every action: a world deaf to actions repeats itself exactly
        assert v["worst_pair_psnr"] == PSNR_CAP


def test_inferred_actions_reach_the_transition_they_belong_to(evaluate):
    """A world that only follows the real action scores the ceiling with inferred actions."""
    m = evaluate(Obedient)
    assert np.allclose(m["psnr"]["inferred"], m["psnr"]["ceiling"])
    assert min(m["delta_psnr"]) > 5


def test_a_permuted_labelling_agrees_perfectly(evaluate, pan_dataset):
    from genie.eval.clips import select_clips

    a = evaluate(Copier)["actions"]
    assert a["has_true_actions"] and a["true_names"] == ["LEFT", "NOOP", "RIGHT"]
    assert a["nmi"] == pytest.approx(1.0) and a["many_to_one_accuracy"] == 1.0
    assert a["mapping"] == {str(PERM[t]): t for t in range(3)}
    clips = select_clips(pan_dataset, "val", 8, 12, seed=0)
    assert len(clips) == 12 and len(set(clips.sources)) == 2  # six clips from each episode
    distinct = {(src, s + t) for src, s in zip(clips.sources, clips.starts, strict=True)
                for t in range(7)}
    assert a["transitions"] == len(distinct) < 12 * 7  # overlapping clips counted once
    # The real picture shifts +2 px under LEFT's latent action and -2 px under RIGHT's.
    assert a["real_shift_by_latent"][PERM[0]] == pytest.approx(2)
    assert a["real_shift_by_latent"][PERM[2]] == pytest.approx(-2)
    assert a["key_check"] == {"skipped": "the world's key map is empty (world.json key_map)"}


@pytest.mark.parametrize("mirror", [False, True])
def test_key_check_compares_the_direction_of_motion(evaluate, mirror):
    check = evaluate(Panner, mirror=mirror)["actions"]["key_check"]
    assert set(check) == {"left", "right"}
    assert check["left"]["real_shift_px"] == pytest.approx(2)
    assert check["left"]["generated_shift_px"] == pytest.approx(-2 if mirror else 2)
    assert check["right"]["agrees"] is check["left"]["agrees"] is (not mirror)


def test_drift_finds_a_fading_world_and_not_the_real_one(evaluate):
    fading, real = evaluate(Fader)["drift"], evaluate(Oracle)["drift"]
    assert fading["steps"] == 12 and fading["rollouts"] == 2
    assert set(fading["real"]) == {"sharpness", "colour_distance", "token_entropy"}
    for name in ("sharpness", "colour_distance", "token_entropy"):
        assert fading["leaves_at"][name] is not None and fading["leaves_at"][name] <= 3, name
        assert fading["in_range"][name] <= 3 / 12, name
    # The oracle's frames are real (quantized) frames: what quantizing changes is the colours
    # and the fine detail, not the codes; it has no drift over time either way.
    assert real["leaves_at"]["token_entropy"] is None and real["in_range"]["token_entropy"] == 1


def test_same_seed_same_numbers_and_batching_does_not_move_actions(evaluate):
    a = evaluate(Deaf)
    b = evaluate(Deaf)
    assert a["psnr"] == b["psnr"] and a["drift"] == b["drift"]


@pytest.mark.parametrize(("change", "message"), [
    ({"horizon": 0}, "--horizon 0: give a whole number of at least 1"),
    ({"context": 5}, "--context 5 is more than this world's context of 4 frames"),
    ({"split": "test"}, "has no test episodes (it has: train, val): pass --split with one "
                        "of those"),
    ({"horizon": 60}, "no val episode of"),
])
def test_bad_settings_are_one_clear_error(pan_dataset, change, message):
    from dataclasses import replace

    with pytest.raises(GenieError, match=re.escape(message)):
        run_eval(Copier(pan_dataset), pan_dataset, replace(QUICK, **change), progress=False)
