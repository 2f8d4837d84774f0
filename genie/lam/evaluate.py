"""`genie eval lam`: how controllable the latent actions are, and what they mean.

On held-out clips: next-frame PSNR with the inferred action vs a random one (the gap is the
control the dynamics model can inherit), code usage and entropy and, where the dataset has
true actions, agreement with them (NMI, many-to-one accuracy and the mapping itself).
"""

from __future__ import annotations

import math
from pathlib import Path

import torch

from genie.errors import GenieError


@torch.no_grad()
def evaluate_lam(model_path: str | Path, data: str | Path, *, split: str = "val",
                 seq_len: int = 8, clips: int | None = None, batch_size: int = 8,
                 device: str = "auto", seed: int = 0, progress: bool = True) -> dict:
    """Controllability, code use and agreement with true actions over clips of `data`."""
    import numpy as np
    from tqdm import tqdm

    from genie.data.dataset import VideoDataset
    from genie.data.index import open_dataset
    from genie.eval.metrics import contingency, many_to_one, nmi, psnr
    from genie.lam.model import LatentActionModel
    from genie.train.compute import pick_device
    from genie.train.stages import load_model

    if seq_len < 2:
        raise GenieError(f"--seq-len {seq_len}: a clip needs at least 2 frames (1 transition)")
    dev = pick_device(device)
    model = load_model(LatentActionModel, model_path, "lam").to(dev).eval()
    info = open_dataset(data)
    if not info.split(split):
        splits = ", ".join(sorted({ep["split"] for ep in info.episodes}))
        raise GenieError(f"dataset {data} has no {split} episodes (it has: {splits}): pass "
                         "--split with one of those, or prepare it with --val-fraction above 0")
    if info.size != (model.config.height, model.config.width):
        raise GenieError(
            f"dataset {data} is {info.size[0]}x{info.size[1]} but the LAM was trained on "
            f"{model.config.height}x{model.config.width}: evaluate on data of that size"
        )
    dataset = VideoDataset(data, seq_len, split=split, stride=seq_len, with_actions=True)
    n = len(dataset) if clips is None else min(clips, len(dataset))
    # Evenly spread clips when only some are asked for, so every episode has its say.
    indices = torch.linspace(0, len(dataset) - 1, n).round().long().unique().tolist()
    loader = torch.utils.data.DataLoader(torch.utils.data.Subset(dataset, indices),
                                         batch_size=batch_size)
    k = model.config.num_actions
    rng = torch.Generator().manual_seed(seed)
    scores: dict[str, list[torch.Tensor]] = {"inferred": [], "random": [], "copy": []}
    latents, trues = [], []
    for frames, true in tqdm(loader, desc="eval lam", unit="batch", disable=not progress):
        frames = frames.to(dev)
        codes = model.infer_actions(frames)  # (B, T-1)
        random = torch.randint(0, k, codes.shape, generator=rng).to(dev)
        target, past = frames[:, 1:], frames[:, :-1]
        scores["inferred"].append(psnr(target, model.predict_next(past, codes)).cpu())
        scores["random"].append(psnr(target, model.predict_next(past, random)).cpu())
        scores["copy"].append(psnr(target, past).cpu())
        latents.append(codes.cpu())
        trues.append(true)
    psnrs = {name: torch.cat(v).mean().item() for name, v in scores.items()}
    latent, true = torch.cat(latents).numpy().ravel(), torch.cat(trues).numpy().ravel()
    counts = np.bincount(latent, minlength=k)
    share = counts / counts.sum()
    entropy = float(-(share[share > 0] * np.log2(share[share > 0])).sum())
    result = {
        "split": split, "clips": len(indices), "frames_per_clip": seq_len,
        "transitions": int(counts.sum()),
        "psnr_inferred": psnrs["inferred"], "psnr_random": psnrs["random"],
        "controllability_gap": psnrs["inferred"] - psnrs["random"], "psnr_copy": psnrs["copy"],
        "num_actions": k, "actions_used": int((counts > 0).sum()),
        "action_share": share.tolist(), "entropy_bits": entropy,
        "entropy_max_bits": math.log2(k), "perplexity": 2**entropy,
        "has_true_actions": bool((true >= 0).any()),
    }
    if result["has_true_actions"]:
        names = info.meta.get("action_names") or []
        accuracy, mapping = many_to_one(latent, true)
        table = contingency(latent, true)
        result |= {
            "nmi": nmi(latent, true), "many_to_one_accuracy": accuracy,
            "majority_accuracy": float(table.sum(0).max() / table.sum()),
            "mapping": {str(code): names[a] if a < len(names) else str(a)
                        for code, a in mapping.items()},
            "purity": {str(code): float(table[code, a] / table[code].sum())
                       for code, a in mapping.items()},
        }
    return result


def format_report(result: dict) -> str:
    """The printed form of `evaluate_lam`'s result: a summary and one row per latent action."""
    r = result
    lines = [
        f"LAM on {r['clips']} {r['split']} clips of {r['frames_per_clip']} frames "
        f"({r['transitions']} transitions)",
        f"next-frame PSNR  inferred action {r['psnr_inferred']:.2f} dB, random action "
        f"{r['psnr_random']:.2f} dB: gap {r['controllability_gap']:+.2f} dB "
        f"(copying the last frame: {r['psnr_copy']:.2f} dB)",
        f"codes            {r['actions_used']}/{r['num_actions']} used, entropy "
        f"{r['entropy_bits']:.2f} of {r['entropy_max_bits']:.2f} bits, perplexity "
        f"{r['perplexity']:.2f}",
    ]
    if r["has_true_actions"]:
        lines.append(
            f"true actions     NMI {r['nmi']:.3f}, many-to-one accuracy "
            f"{r['many_to_one_accuracy']:.3f} (always the most common action: "
            f"{r['majority_accuracy']:.3f})"
        )
    lines.append("")
    lines.append("code  share   maps to      purity" if r["has_true_actions"] else "code  share")
    for code, share in enumerate(r["action_share"]):
        row = f"{code:>4}  {100 * share:5.1f}%"
        if r["has_true_actions"] and str(code) in r["mapping"]:
            row += f"  {r['mapping'][str(code)]:<11}  {100 * r['purity'][str(code)]:5.1f}%"
        lines.append(row)
    return "\n".join(lines)
