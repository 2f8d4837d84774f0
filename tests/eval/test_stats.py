"""Drift statistics and the horizontal shift estimate on frames with known answers."""

from __future__ import annotations

import numpy as np
import pytest

from genie.eval.actions import horizontal_shift
from genie.eval.drift import colour_distance, leave_step, sharpness, token_entropy

rng = np.random.default_rng(0)
NOISE = rng.integers(0, 256, (3, 32, 48, 3), dtype=np.uint8)


def test_sharpness_is_zero_on_flat_frames_and_falls_with_blur():
    flat = np.full((2, 16, 16, 3), 90, np.uint8)
    assert np.all(sharpness(flat) == 0)
    blurred = ((NOISE.astype(int) + np.roll(NOISE, 1, 1) + np.roll(NOISE, 1, 2)) // 3)
    assert np.all(sharpness(blurred.astype(np.uint8)) < sharpness(NOISE) / 2)


def test_colour_distance_is_zero_to_itself_and_one_to_another_colour():
    red = np.zeros((1, 8, 8, 3), np.uint8)
    red[..., 0] = 255
    blue = np.zeros_like(red)
    blue[..., 2] = 255
    assert colour_distance(NOISE[:1], NOISE[:1])[0] == pytest.approx(0, abs=1e-6)
    assert colour_distance(red, red)[0] == 0
    assert colour_distance(red, blue)[0] == pytest.approx(1.0)
    half = red.copy()
    half[:, :4] = blue[:, :4]
    assert colour_distance(half, red)[0] == pytest.approx(0.5)


def test_token_entropy_counts_bits():
    codes = np.array([[3] * 16, list(range(16)), [0, 1] * 8])
    assert token_entropy(codes) == pytest.approx([0.0, 4.0, 1.0])


def test_leave_step_is_the_first_step_outside_the_range():
    assert leave_step(np.array([1.0, 1.5, 3.0, 1.0]), 0.5, 2.0) == 3
    assert leave_step(np.array([0.4, 1.0]), 0.5, 2.0) == 1
    assert leave_step(np.array([1.0, 2.0]), 0.5, 2.0) is None


@pytest.mark.parametrize("shift", [-4, -1, 0, 2, 5])
def test_horizontal_shift_finds_a_roll(shift):
    moved = np.roll(NOISE, shift, axis=2)
    assert np.all(horizontal_shift(NOISE, moved) == shift)


def test_horizontal_shift_of_featureless_frames_is_zero():
    flat = np.full((2, 16, 16, 3), 128, np.uint8)
    assert np.all(horizontal_shift(flat, flat) == 0)
