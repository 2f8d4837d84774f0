"""The PNG plots of `genie eval world`, drawn with matplotlib's file-only Agg backend."""

from __future__ import annotations

from pathlib import Path

COLOURS = {"inferred": "tab:blue", "random": "tab:orange", "copy": "tab:grey",
           "ceiling": "black"}
LABELS = {"sharpness": "sharpness (Laplacian variance)",
          "colour_distance": "colour distance to prompt", "token_entropy": "token entropy (bits)"}


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")  # files only: no display needed, none opened
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    _pyplot().close(fig)
    return path


def plot_horizons(metrics: dict, path: Path) -> Path:
    """PSNR and SSIM against horizon for the three ways, with the tokenizer's ceiling."""
    plt = _pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    h = metrics["horizons"]
    for ax, name, unit in ((axes[0], "psnr", "PSNR (dB)"), (axes[1], "ssim", "SSIM")):
        for way, values in metrics[name].items():
            ax.plot(h, values, label=way, color=COLOURS.get(way),
                    linestyle="--" if way == "ceiling" else "-", marker="." if len(h) < 40 else "")
        ax.set_xlabel("horizon (frames after the prompt)")
        ax.set_ylabel(unit)
        ax.grid(alpha=0.3)
    axes[0].legend()
    fig.suptitle(f"{metrics['clips']} clips, context {metrics['settings']['context']}")
    return _save(fig, path)


def plot_drift(drift: dict, path: Path) -> Path:
    """Each drift statistic per step (mean over rollouts) against the real range."""
    plt = _pyplot()
    names = list(drift["curves"])
    fig, axes = plt.subplots(1, len(names), figsize=(4 * len(names), 3.5))
    for ax, name in zip(axes, names, strict=True):
        curve = drift["curves"][name]
        steps = range(1, len(curve) + 1)
        ax.plot(steps, curve, color="tab:blue", label="generated")
        real = drift["real"].get(name)
        if real:
            ax.axhspan(real["low"], real["high"], color="tab:green", alpha=0.15,
                       label="real p{:g}-p{:g}".format(*drift["range_percentiles"]))
            ax.axhline(real["median"], color="tab:green", linewidth=0.8)
        left = drift["leaves_at"].get(name)
        if left:
            ax.axvline(left, color="tab:red", linestyle=":", label=f"leaves at {left}")
        ax.set_title(LABELS.get(name, name))
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    return _save(fig, path)


def plot_confusion(actions: dict, path: Path) -> Path:
    """Share of each latent action's transitions that carry each true action."""
    import numpy as np

    plt = _pyplot()
    table = np.array(actions["contingency"], dtype=float)  # (latent, true)
    share = table / np.maximum(table.sum(1, keepdims=True), 1)
    fig, ax = plt.subplots(figsize=(1 + 0.7 * table.shape[1], 1 + 0.5 * table.shape[0]))
    ax.imshow(share, cmap="Blues", vmin=0, vmax=1, aspect="auto")
    for (i, j), v in np.ndenumerate(share):
        if table[i, j]:
            ax.text(j, i, f"{v:.2f}", ha="center", va="center", fontsize=7,
                    color="white" if v > 0.6 else "black")
    ax.set_xticks(range(table.shape[1]), actions["true_names"], rotation=45, ha="right",
                  fontsize=8)
    ax.set_yticks(range(table.shape[0]), [f"latent {i}" for i in range(table.shape[0])],
                  fontsize=8)
    ax.set_xlabel("true action")
    ax.set_title(f"NMI {actions['nmi']:.3f}, many-to-one {actions['many_to_one_accuracy']:.3f}",
                 fontsize=9)
    return _save(fig, path)
