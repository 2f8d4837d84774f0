"""Do the latent actions mean what the game's own actions mean?

On the evaluation clips, where the dataset has true actions: normalized mutual information and
many-to-one accuracy between the LAM's latent actions and the true ones, with the table behind
the confusion plot. Always: the mean horizontal shift of the real picture under each latent
action. With the world's key map: does holding the latent action of the 'left' / 'right' key
move the generated picture the same way (same sign) as the game's LEFT / RIGHT moves the real
one? Shifts are whole pixels from the best-matching horizontal roll; a sign check, no more.
"""

from __future__ import annotations

import numpy as np
import torch

from genie.eval.clips import Clips

KEYS = {"left": "LEFT", "right": "RIGHT"}  # pygame key name -> the true action's name part


def horizontal_shift(a: np.ndarray, b: np.ndarray, max_shift: int | None = None) -> np.ndarray:
    """How far the picture moved right from frames a to b, (M, H, W, 3) each -> (M,) pixels.

    The whole-pixel shift s in [-max_shift, max_shift] (default W/8) that best matches the
    central columns of a to those of b moved by s; a tiny preference for 0 breaks ties on
    featureless frames.
    """
    weights = torch.tensor([0.299, 0.587, 0.114])
    x, y = (torch.from_numpy(f).float() @ weights for f in (a, b))  # (M, H, W)
    w = x.shape[-1]
    m = max_shift or max(1, w // 8)
    core = x[..., m:w - m]
    errors = torch.stack([(core - y[..., m + s:w - m + s]).abs().mean((1, 2)) + 1e-6 * abs(s)
                          for s in range(-m, m + 1)], dim=1)  # (M, 2m+1)
    return (errors.argmin(1) - m).numpy().astype(np.float64)


def _transitions(clips: Clips, latent: np.ndarray) -> dict[tuple[str, int], tuple[int, int, int]]:
    """Each distinct real transition once (clips may overlap): key -> (clip, t, latent)."""
    seen: dict[tuple[str, int], tuple[int, int, int]] = {}
    for i, (source, start) in enumerate(zip(clips.sources, clips.starts, strict=True)):
        for t in range(latent.shape[1]):
            seen.setdefault((source, start + t), (i, t, int(latent[i, t])))
    return seen


def evaluate_actions(world, clips: Clips, latent: np.ndarray, context: int, seed: int,
                     batch: int, progress: bool = True) -> dict:
    """The `actions` section of metrics.json."""
    from genie.eval.metrics import contingency, many_to_one, nmi

    pairs = list(_transitions(clips, latent).values())
    idx_clip, idx_t, lat = (np.array(v) for v in zip(*pairs, strict=True))
    true = clips.actions[idx_clip, idx_t]
    shift = horizontal_shift(clips.frames[idx_clip, idx_t], clips.frames[idx_clip, idx_t + 1])
    result: dict = {
        "num_latent_actions": world.num_actions, "transitions": len(pairs),
        "latent_share": (np.bincount(lat, minlength=world.num_actions) / len(lat)).tolist(),
        "real_shift_by_latent": [float(shift[lat == a].mean()) if (lat == a).any() else None
                                 for a in range(world.num_actions)],
        "has_true_actions": clips.has_true_actions,
    }
    names = clips.action_names
    if clips.has_true_actions:
        accuracy, mapping = many_to_one(lat, true)
        counts = contingency(lat, true)
        # Every latent and every named true action gets its row and column, used or not.
        table = np.zeros((max(world.num_actions, counts.shape[0]),
                          max(len(names), counts.shape[1])), np.int64)
        table[:counts.shape[0], :counts.shape[1]] = counts
        known = true[true >= 0]
        result |= {
            "nmi": nmi(lat, true), "many_to_one_accuracy": accuracy,
            "majority_accuracy": float(np.bincount(known).max() / len(known)),
            "true_names": [names[a] if a < len(names) else str(a)
                           for a in range(table.shape[1])],
            "contingency": table.tolist(),  # rows latent actions, columns true actions
            "mapping": {str(k): v for k, v in mapping.items()},
        }
    else:
        result["note"] = "the dataset has no true actions: agreement not measured"
    result["key_check"] = key_check(world, clips, true, shift, context, seed, batch, progress)
    return result


def key_check(world, clips: Clips, true: np.ndarray, real_shift: np.ndarray, context: int,
              seed: int, batch: int, progress: bool = True, steps: int = 8,
              prompts: int = 16) -> dict:
    """Sign agreement of generated vs real horizontal motion for the left/right keys."""
    from tqdm import tqdm

    if not world.key_map:
        return {"skipped": "the world's key map is empty (world.json key_map)"}
    keys = {k: a for k, a in world.key_map.items() if k in KEYS}
    if not keys:
        return {"skipped": "the world's key map has no left or right key"}
    if not clips.has_true_actions or not clips.action_names:
        return {"skipped": "the dataset has no named true actions to compare with"}
    starts = clips.frames[:prompts, :context]
    out = {}
    with tqdm(total=len(keys) * len(starts) * steps, desc="key check", unit="frame",
              disable=not progress) as bar:
        for key, action in keys.items():
            ids = [i for i, n in enumerate(clips.action_names) if KEYS[key] in n.split("+")]
            real = real_shift[np.isin(true, ids)]
            shifts = []
            for lo in range(0, len(starts), batch):
                frame = world.reset(starts[lo:lo + batch], seed=seed)
                for _ in range(steps):
                    nxt = world.step(np.full(len(frame), action))
                    shifts.append(horizontal_shift(frame, nxt))
                    frame = nxt
                    bar.update(len(frame))
            generated = float(np.concatenate(shifts).mean())
            real_mean = float(real.mean()) if len(real) else None
            out[key] = {"latent_action": int(action), "true_actions": [clips.action_names[i]
                                                                       for i in ids],
                        "real_shift_px": real_mean, "real_transitions": int(len(real)),
                        "generated_shift_px": generated,
                        "agrees": None if not real_mean else
                        bool(np.sign(generated) == np.sign(real_mean))}
    return out
