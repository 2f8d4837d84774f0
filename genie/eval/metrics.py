"""Frame metrics, the one definition every report uses (README, "Evaluate a world", "Metrics").

PSNR: per frame, on uint8 frames scaled to [0, 1], capped at 60 dB (identical frames).
SSIM: per frame, 11×11 Gaussian window (σ = 1.5), per RGB channel, averaged over channels.
Both take (..., H, W, 3) uint8 tensors and return one value per frame (...).
Action agreement: NMI and many-to-one accuracy between latent and true actions.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

PSNR_CAP = 60.0


def psnr(a_u8: torch.Tensor, b_u8: torch.Tensor) -> torch.Tensor:
    a, b = a_u8.float() / 255, b_u8.float() / 255
    mse = (a - b).pow(2).flatten(-3).mean(-1)
    return (10 * torch.log10(1.0 / mse.clamp_min(1e-12))).clamp(max=PSNR_CAP)


def _gaussian_window(size: int = 11, sigma: float = 1.5) -> torch.Tensor:
    x = torch.arange(size, dtype=torch.float32) - size // 2
    g = torch.exp(-(x**2) / (2 * sigma**2))
    g = g / g.sum()
    return (g[:, None] * g[None, :])[None, None]  # (1, 1, size, size)


def ssim(a_u8: torch.Tensor, b_u8: torch.Tensor) -> torch.Tensor:
    lead = a_u8.shape[:-3]
    h, w = a_u8.shape[-3:-1]
    # (M*3, 1, H, W): every channel of every frame filtered on its own
    a = a_u8.reshape(-1, h, w, 3).permute(0, 3, 1, 2).reshape(-1, 1, h, w).float() / 255
    b = b_u8.reshape(-1, h, w, 3).permute(0, 3, 1, 2).reshape(-1, 1, h, w).float() / 255
    window = _gaussian_window().to(a.device)
    c1, c2 = 0.01**2, 0.03**2

    def blur(x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(x, window)  # valid region only, as in the reference implementation

    mu_a, mu_b = blur(a), blur(b)
    var_a = blur(a * a) - mu_a**2
    var_b = blur(b * b) - mu_b**2
    cov = blur(a * b) - mu_a * mu_b
    s = (2 * mu_a * mu_b + c1) * (2 * cov + c2) / ((mu_a**2 + mu_b**2 + c1) * (var_a + var_b + c2))
    return s.flatten(1).mean(1).view(-1, 3).mean(1).view(lead)


# ------------------------------------------------------------------ action agreement
# Latent actions against true ones (when sidecars exist). Both take two integer sequences of
# the same length, latent codes and true actions, with negative true actions (unknown) left out.


def contingency(latent, true) -> np.ndarray:
    """Counts (L, A): how often latent code l co-occurs with true action a.

    L and A are one more than the largest latent code and true action present.
    """
    latent, true = _known_pairs(latent, true)
    table = np.zeros((latent.max(initial=-1) + 1, true.max(initial=-1) + 1), dtype=np.int64)
    np.add.at(table, (latent, true), 1)
    return table


def nmi(latent, true) -> float:
    """Normalized mutual information I(L; A) / mean(H(L), H(A)), in [0, 1].

    The arithmetic-mean normalization (scikit-learn's default). 1 when each labelling
    determines the other; 0 when they are independent. Two constant labellings count as
    agreeing (1), as in scikit-learn.
    """
    joint = contingency(latent, true).astype(np.float64)
    if joint.sum() == 0:
        raise ValueError("nmi needs at least one transition with a known true action")
    joint /= joint.sum()
    p_l, p_a = joint.sum(1), joint.sum(0)
    h_l, h_a = _entropy(p_l), _entropy(p_a)
    if h_l == 0 and h_a == 0:
        return 1.0
    nz = joint > 0
    mi = float((joint[nz] * np.log(joint[nz] / np.outer(p_l, p_a)[nz])).sum())
    return max(0.0, mi / ((h_l + h_a) / 2))


def many_to_one(latent, true) -> tuple[float, dict[int, int]]:
    """Accuracy of mapping each latent code to the true action it co-occurs with most.

    Returns (accuracy, {latent code: true action}) over the codes that occur; ties go to the
    smaller true action. Accuracy is the share of transitions whose true action equals the
    one their latent code maps to.
    """
    table = contingency(latent, true)
    if table.sum() == 0:
        raise ValueError("many_to_one needs at least one transition with a known true action")
    used = np.flatnonzero(table.sum(1))
    mapping = {int(code): int(table[code].argmax()) for code in used}
    return float(table.max(1).sum() / table.sum()), mapping


def _known_pairs(latent, true) -> tuple[np.ndarray, np.ndarray]:
    latent = np.asarray(latent, dtype=np.int64).reshape(-1)
    true = np.asarray(true, dtype=np.int64).reshape(-1)
    if latent.shape != true.shape:
        raise ValueError(f"{latent.size} latent actions but {true.size} true ones")
    known = true >= 0
    return latent[known], true[known]


def _entropy(p: np.ndarray) -> float:
    p = p[p > 0]
    return float(-(p * np.log(p)).sum())
