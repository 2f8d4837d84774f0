"""`genie calibrate`: readable names and a default key map for a world's latent actions.

With true actions (per-transition sidecars, as recorded games have): the LAM infers the latent
action of every transition of the dataset, and latent and true actions are matched by lift,
P(latent | true) / P(latent) -- how much more often a latent action occurs with a true action
than on average. Lift, not the raw co-occurrence count, because a latent action the LAM uses a
lot co-occurs most with every true action. Lift alone is noisy for rare pairs, though (a latent
seen twice, once with LEFT, has a huge lift), so each pair is scored by count * log(lift), its
share of the mutual information between the two: strong association that is also seen often.
Each true action gets the latent action of highest score (what its key should press); each
latent action is named after the true action of highest score ("RIGHT+UP"). Arrows, WASD and
space are bound to the latent actions of LEFT, RIGHT, UP, DOWN and a jump.

Without true actions: latent actions are ordered by how much they change the picture (mean
absolute pixel change of the world's previews from a few prompts) and named `action 1..A` in
that order; the key map is left as it is (a direction cannot be guessed from motion alone).

Names and key map go into world.json (written to a temporary file and renamed, every other key
kept), where `genie play` reads them.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from genie.errors import GenieError

# key -> the true actions it should press, first found wins. CoinRun's jump is UP; space jumps
# forward (RIGHT+UP) so it does something the up arrow does not.
KEY_TARGETS: dict[str, tuple[str, ...]] = {
    "left": ("LEFT",), "a": ("LEFT",), "right": ("RIGHT",), "d": ("RIGHT",),
    "up": ("UP",), "w": ("UP",), "down": ("DOWN",), "s": ("DOWN",),
    "space": ("JUMP", "RIGHT+UP", "UP"),
}
# Keys that should each do something of their own (a/d/w/s only repeat the arrows).
DISTINCT_KEYS = ("left", "right", "up", "down", "space")
SMOOTHING = 1.0  # pseudo-count per cell: a pair seen twice does not get an extreme lift


def lift_table(counts: np.ndarray) -> np.ndarray:
    """(L, A) co-occurrence counts -> lift P(l | a) / P(l), smoothed; 0 for unseen true actions."""
    counts = counts.astype(np.float64)
    n_latent = counts.shape[0]
    p_l_given_a = (counts + SMOOTHING) / (counts.sum(0, keepdims=True) + SMOOTHING * n_latent)
    p_l = (counts.sum(1, keepdims=True) + SMOOTHING) / (counts.sum() + SMOOTHING * n_latent)
    lift = p_l_given_a / p_l
    lift[:, counts.sum(0) == 0] = 0.0
    return lift


def association(counts: np.ndarray) -> np.ndarray:
    """(L, A) counts -> count * log(lift): each pair's share of the mutual information."""
    with np.errstate(divide="ignore"):
        score = counts * np.log(lift_table(counts))
    return np.where(counts > 0, score, 0.0)


def match_actions(counts: np.ndarray, true_names: list[str]) -> tuple[list[str], dict[str, int]]:
    """Names for the L latent actions and {true action name: latent action} from counts (L, A)."""
    score = association(counts)
    best_latent = {}
    for a in np.flatnonzero(counts.sum(0)):
        # No latent positively associated (a true action that changes nothing the LAM sees):
        # the latent it co-occurs with most.
        column = score[:, a] if score[:, a].max() > 0 else counts[:, a]
        best_latent[true_names[a]] = int(np.argmax(column))
    names: list[str | None] = [None] * counts.shape[0]
    # Strongest matches name first, so a name shared by two latents goes plain to the stronger.
    used = np.flatnonzero(counts.sum(1))
    order = sorted(used, key=lambda latent: -score[latent].max())
    taken: dict[str, int] = {}
    for latent in order:
        row = score[latent] if score[latent].max() > 0 else counts[latent]
        base = true_names[int(np.argmax(row))]
        taken[base] = taken.get(base, 0) + 1
        names[latent] = base if taken[base] == 1 else f"{base} ({taken[base]})"
    return [n or f"action {i + 1}" for i, n in enumerate(names)], best_latent


def default_key_map(best_latent: dict[str, int]) -> dict[str, int]:
    """Arrows, WASD and space -> the latent action of the true action each should press."""
    key_map = {}
    for key in KEY_TARGETS:
        target = _key_target(key, best_latent)
        if target is not None:
            key_map[key] = best_latent[target]
    return key_map


def key_warnings(best_latent: dict[str, int]) -> list[str]:
    """A warning for each latent action that keys of different true actions press: the LAM
    does not tell those actions apart (a barely trained world), so the keys do one thing."""
    keys: dict[int, dict[str, str]] = {}  # latent -> {true action: its first key}
    for key in DISTINCT_KEYS:
        target = _key_target(key, best_latent)
        if target is not None:
            keys.setdefault(best_latent[target], {}).setdefault(target, key)
    return [f"warning: {_listed(by_true.values())} press the same latent action {latent}: the "
            f"world's LAM does not tell {_listed(by_true)} apart (train it longer); the key map "
            "is written anyway" for latent, by_true in keys.items() if len(by_true) > 1]


def _listed(words) -> str:
    """'a, b and c'."""
    *rest, last = words
    return f"{', '.join(rest)} and {last}" if rest else last


def _key_target(key: str, best_latent: dict[str, int]) -> str | None:
    """The true action `key` presses: the first of its KEY_TARGETS the data has."""
    return next((t for t in KEY_TARGETS[key] if t in best_latent), None)


def calibrate(world_path: str | Path, data: str | Path, *, clips: int | None = None,
              device: str = "auto", progress: bool = True) -> dict:
    """Name the world's latent actions from `data` and write them into its world.json."""
    import genie
    from genie.data.files import write_json_atomic
    from genie.data.index import open_dataset

    world = genie.load(world_path, device=device)
    info = open_dataset(data)
    if info.size != world.size:
        raise GenieError(f"dataset {data} is {info.size[0]}x{info.size[1]} but the world is "
                         f"{world.size[0]}x{world.size[1]}: calibrate on data of the world's size")
    if info.meta.get("has_actions"):
        result = _from_true_actions(world, info, clips, progress)
    else:
        result = _from_motion(world, info)
    meta_path = Path(world_path) / "world.json"
    meta = json.loads(meta_path.read_text())
    meta["action_names"] = result["names"]
    if result["key_map"] is not None:
        meta["key_map"] = result["key_map"]
    meta["calibration"] = {k: result[k] for k in ("method", "dataset", "transitions")}
    write_json_atomic(meta_path, meta)
    return result | {"world": str(meta_path)}


def _seq_len(world) -> int:
    """The clip length the LAM was trained on: its inferred actions mean most there."""
    config = world.meta.get("provenance", {}).get("config", {})
    lam_len = config.get("lam", {}).get("train", {}).get("seq_len")
    return int(lam_len or config.get("data", {}).get("seq_len") or 8)


def _from_true_actions(world, info, clips: int | None, progress: bool) -> dict:
    import torch
    from tqdm import tqdm

    from genie.data.dataset import VideoDataset
    from genie.eval.metrics import contingency

    seq_len = max(2, _seq_len(world))
    splits = sorted({ep["split"] for ep in info.episodes})
    sets = [VideoDataset(info.path, seq_len, split=s, stride=seq_len - 1, with_actions=True)
            for s in splits]  # stride T-1: windows share a frame, so every transition counts once
    dataset = torch.utils.data.ConcatDataset(sets)
    n = len(dataset) if clips is None else min(clips, len(dataset))
    indices = torch.linspace(0, len(dataset) - 1, n).round().long().unique().tolist()
    loader = torch.utils.data.DataLoader(torch.utils.data.Subset(dataset, indices), batch_size=16)
    latents, trues = [], []
    with torch.no_grad():
        for frames, true in tqdm(loader, desc="calibrate", unit="batch", disable=not progress):
            latents.append(world.lam.infer_actions(frames.to(world.device)).cpu().numpy())
            trues.append(true.numpy())
    latent, true = np.concatenate(latents).ravel(), np.concatenate(trues).ravel()
    known = true >= 0
    if not known.any():
        return _from_motion(world, info)
    true_names = list(info.meta.get("action_names") or [])
    counts = np.zeros((world.num_actions, max(len(true_names), int(true.max()) + 1)), np.int64)
    table = contingency(latent[known], true[known])
    counts[: table.shape[0], : table.shape[1]] = table
    true_names += [str(a) for a in range(len(true_names), counts.shape[1])]
    names, best = match_actions(counts, true_names)
    lift = lift_table(counts)
    best_true = association(counts).argmax(1)
    return {
        "method": "true actions", "dataset": str(info.path), "transitions": int(known.sum()),
        "names": names, "key_map": default_key_map(best), "best_latent": best,
        "share": (counts.sum(1) / counts.sum()).tolist(),
        # the lift of each latent with the true action it is named after
        "lift": [float(lift[a, best_true[a]]) if counts[a].sum() else 0.0
                 for a in range(len(names))],
    }


def _from_motion(world, info, count: int = 8) -> dict:
    """Order latent actions by the pixel change their previews make from real prompts."""
    from genie.prompts import dataset_episode

    clips = [np.load(p) for p in world.prompt_files()[:count]]
    if not clips:
        episodes = info.split("val") or info.split("train")
        clips = [dataset_episode(info.path, e, world.context)
                 for e in range(min(count, len(episodes)))]
    motion = np.zeros(world.num_actions)
    for clip in clips:
        frame = world.reset(clip, seed=0).astype(np.float32)
        motion += np.abs(world.preview().astype(np.float32) - frame).mean(axis=(1, 2, 3))
    motion /= len(clips)
    rank = np.empty(world.num_actions, dtype=int)
    rank[np.argsort(-motion, kind="stable")] = np.arange(world.num_actions)
    return {
        "method": "motion", "dataset": str(info.path), "transitions": 0,
        "names": [f"action {r + 1}" for r in rank], "key_map": None,
        "motion": motion.tolist(), "prompts": len(clips),
    }


def format_calibration(result: dict) -> str:
    """The printed mapping: one row per latent action, then the key map."""
    lines = []
    if result["method"] == "true actions":
        lines.append(f"latent actions matched to true actions on {result['transitions']} "
                     f"transitions of {result['dataset']} (by count x log lift, lift = "
                     "P(latent|true)/P(latent))")
        lines.append("latent  key  share   lift  name")
        for a, name in enumerate(result["names"]):
            lines.append(f"{a:>6}  {a + 1:>3}  {100 * result['share'][a]:4.1f}%  "
                         f"{result['lift'][a]:5.2f}  {name}")
        lines.append("true action -> latent: " + ", ".join(
            f"{t} {a}" for t, a in result["best_latent"].items()))
        keys: dict[int, list[str]] = {}
        for key, a in result["key_map"].items():
            keys.setdefault(a, []).append(key)
        lines.append("key map: " + "; ".join(f"{'/'.join(k)} -> {a} ({result['names'][a]})"
                                             for a, k in keys.items()))
        lines += key_warnings(result["best_latent"])
    else:
        lines.append(f"no true actions in {result['dataset']}: latent actions ordered by the "
                     f"pixel change of their previews from {result['prompts']} prompts")
        lines.append("latent  key  motion  name")
        for a, name in enumerate(result["names"]):
            lines.append(f"{a:>6}  {a + 1:>3}  {result['motion'][a]:6.2f}  {name}")
        lines.append("key map unchanged (directions cannot be told from motion alone)")
    lines.append(f"wrote {result['world']}")
    return "\n".join(lines)
