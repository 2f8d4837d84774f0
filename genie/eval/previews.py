"""Can a player tell the actions apart? The next frame under each latent action, compared.

From each of P real prompts, the world generates the next frame once per latent action, all
from the same state and sampling seed (what the play window's previews show). For every pair
of actions (i, j), the PSNR between their two next frames, averaged over prompts: 60 dB (the
cap) means the actions do the same thing; the lower, the more they differ. A pair counts as
distinguishable when its frames differ from each other by more than the tokenizer's own
reconstruction error differs from reality, by a margin (default 2 dB): mutual PSNR at most the
tokenizer ceiling minus the margin. A difference smaller than that is within what the picture
could change by re-encoding alone.
"""

from __future__ import annotations

import numpy as np
import torch

from genie.eval.metrics import psnr


def preview_separation(world, prompts: np.ndarray, ceiling: float, seed: int,
                       margin: float = 2.0) -> dict:
    """The `previews` section of metrics.json, from prompts (P, C, H, W, 3)."""
    p, a = len(prompts), world.num_actions
    nexts = []
    for action in range(a):
        world.reset(prompts, seed=seed)  # the same state and random stream for every action
        nexts.append(torch.from_numpy(world.step(np.full(p, action))))  # (P, H, W, 3)
    mutual = np.full((a, a), 60.0)  # PSNR cap on the diagonal: a frame equals itself
    for i in range(a):
        for j in range(i + 1, a):
            mutual[i, j] = mutual[j, i] = float(psnr(nexts[i], nexts[j]).mean())
    pairs = mutual[np.triu_indices(a, 1)]
    threshold = ceiling - margin
    return {
        "prompts": p, "margin_db": margin, "threshold_db": threshold,
        "mutual_psnr": mutual.tolist(),
        "worst_pair_psnr": float(pairs.max()), "mean_pair_psnr": float(pairs.mean()),
        "distinguishable_pairs": int((pairs <= threshold).sum()), "pairs": len(pairs),
    }
