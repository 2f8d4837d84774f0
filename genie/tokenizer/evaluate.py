"""`genie eval tokenizer`: reconstruction quality and codebook use on held-out clips."""

from __future__ import annotations

from pathlib import Path

import torch

from genie.errors import GenieError

USED_SHARE = 1e-4  # a code counts as used if it covers at least 0.01% of the tokens


@torch.no_grad()
def evaluate_tokenizer(model_path: str | Path, data: str | Path, *, split: str = "val",
                       seq_len: int = 16, clips: int | None = None, batch_size: int = 8,
                       device: str = "auto", progress: bool = True) -> dict:
    """PSNR and SSIM (genie/eval/metrics.py), codebook usage and perplexity over clips of `data`."""
    from tqdm import tqdm

    from genie.data.dataset import VideoDataset
    from genie.eval.metrics import psnr, ssim
    from genie.tokenizer.model import VideoTokenizer
    from genie.train.compute import pick_device
    from genie.train.stages import load_model

    dev = pick_device(device)
    model = load_model(VideoTokenizer, model_path, "tokenizer").to(dev).eval()
    dataset = VideoDataset(data, seq_len, split=split, stride=seq_len)  # disjoint clips
    size = dataset.info.size
    if size != (model.config.height, model.config.width):
        raise GenieError(
            f"dataset {data} is {size[0]}x{size[1]} but the tokenizer was trained on "
            f"{model.config.height}x{model.config.width}: evaluate on data of that size"
        )
    n = len(dataset) if clips is None else min(clips, len(dataset))
    # Evenly spread clips when only some are asked for, so every episode has its say.
    indices = torch.linspace(0, len(dataset) - 1, n).round().long().unique().tolist()
    subset = torch.utils.data.Subset(dataset, indices)
    loader = torch.utils.data.DataLoader(subset, batch_size=batch_size)
    counts = torch.zeros(model.config.codebook_size, dtype=torch.long)
    psnrs, ssims = [], []
    for frames in tqdm(loader, desc="eval tokenizer", unit="batch", disable=not progress):
        frames = frames.to(dev)
        codes = model.encode(frames)
        recon = model.decode(codes)
        psnrs.append(psnr(frames, recon).cpu())  # (B, T)
        ssims.append(ssim(frames, recon).cpu())
        counts += torch.bincount(codes.flatten().cpu(), minlength=len(counts))
    psnr_bt, ssim_bt = torch.cat(psnrs), torch.cat(ssims)
    share = counts.float() / counts.sum()
    entropy = -(share[share > 0] * share[share > 0].log()).sum()
    return {
        "split": split, "clips": len(indices), "frames_per_clip": seq_len,
        "psnr": psnr_bt.mean().item(), "ssim": ssim_bt.mean().item(),
        "psnr_by_frame": psnr_bt.mean(0).tolist(),
        "codebook_size": len(counts), "codes_used": int((share >= USED_SHARE).sum()),
        "codebook_usage": (share >= USED_SHARE).float().mean().item(),
        "perplexity": entropy.exp().item(),
    }
