"""Frame metrics, exactly as shared/DESIGN.md defines them.

PSNR: per frame, on uint8 frames scaled to [0, 1], capped at 60 dB (identical frames).
SSIM: per frame, 11×11 Gaussian window (σ = 1.5), per RGB channel, averaged over channels.
Both take (..., H, W, 3) uint8 tensors and return one value per frame (...).
"""

from __future__ import annotations

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
