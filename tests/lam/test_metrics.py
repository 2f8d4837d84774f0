"""Action agreement metrics against values worked out by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from genie.eval.metrics import contingency, many_to_one, nmi


def test_contingency_counts_pairs_and_skips_unknown_true_actions():
    table = contingency([0, 0, 1, 2, 2], [1, 1, 0, 1, -1])
    assert table.tolist() == [[0, 2], [1, 0], [0, 1]]


def test_nmi_of_identical_renamed_and_independent_labellings():
    assert nmi([0, 0, 1, 1, 2, 2], [5, 5, 3, 3, 4, 4]) == pytest.approx(1.0)  # renamed
    assert nmi([0, 0, 1, 1], [0, 1, 0, 1]) == pytest.approx(0.0)  # independent
    assert nmi([3, 3, 3], [1, 1, 1]) == 1.0  # both constant: scikit-learn's convention


def test_nmi_by_hand():
    # latent [0,0,0,1], true [0,0,1,1]: p(0,0)=1/2, p(0,1)=1/4, p(1,1)=1/4,
    # p_latent = (3/4, 1/4), p_true = (1/2, 1/2).
    mi = 0.5 * math.log(0.5 / (0.75 * 0.5)) + 0.25 * math.log(0.25 / (0.75 * 0.5)) \
        + 0.25 * math.log(0.25 / (0.25 * 0.5))
    h_latent = -(0.75 * math.log(0.75) + 0.25 * math.log(0.25))
    h_true = math.log(2)
    expected = mi / ((h_latent + h_true) / 2)
    assert expected == pytest.approx(0.3437, abs=1e-4)
    assert nmi([0, 0, 0, 1], [0, 0, 1, 1]) == pytest.approx(expected)
    # Tensors and arrays of any shape are read the same way.
    assert nmi(torch.tensor([[0, 0], [0, 1]]), np.array([0, 0, 1, 1])) == pytest.approx(expected)


def test_many_to_one_by_hand():
    # Code 0 meets true 3 twice and 1 once -> 3; code 1 meets 1 twice -> 1; code 2 meets 0.
    accuracy, mapping = many_to_one([0, 0, 0, 1, 1, 2, 2], [3, 3, 1, 1, 1, 0, -1])
    assert mapping == {0: 3, 1: 1, 2: 0}
    assert accuracy == pytest.approx(5 / 6)  # the unknown (-1) transition does not count


def test_many_to_one_breaks_ties_to_the_smaller_action_and_lumps_codes():
    accuracy, mapping = many_to_one([4, 4, 7, 7, 7], [2, 1, 1, 1, 1])
    assert mapping == {4: 1, 7: 1}  # two codes may map to the same true action
    assert accuracy == pytest.approx(4 / 5)


def test_metrics_refuse_mismatched_or_empty_input():
    with pytest.raises(ValueError, match="3 latent actions but 2"):
        nmi([0, 1, 2], [0, 1])
    with pytest.raises(ValueError, match="at least one transition"):
        many_to_one([0, 1], [-1, -1])
