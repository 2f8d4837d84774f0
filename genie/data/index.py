"""A prepared dataset's metadata: opening it (refusing partial ones) and describing it.

Kept free of torch so that `genie data info` answers at once.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from genie.data.prepare import FORMAT, FORMAT_VERSION
from genie.errors import GenieError
from genie.plural import plural


@dataclass
class DatasetInfo:
    """A prepared dataset's meta.json and episode index."""

    path: Path
    meta: dict
    episodes: list[dict]

    @property
    def size(self) -> tuple[int, int]:
        return self.meta["height"], self.meta["width"]

    def split(self, name: str) -> list[dict]:
        return [ep for ep in self.episodes if ep["split"] == name]


def open_dataset(path: str | Path) -> DatasetInfo:
    """Load a dataset's metadata, refusing anything that is missing, partial or foreign."""
    path = Path(path).expanduser()
    if not path.is_dir():
        raise GenieError(f"dataset {path} does not exist: make one with `genie data prepare`")
    meta_path = path / "meta.json"
    if not meta_path.exists():
        if (path / "prepare.json").exists():
            raise GenieError(
                f"dataset {path} is incomplete (its prepare was interrupted): run the same "
                "`genie data prepare` command again to finish it"
            )
        raise GenieError(f"{path} is not a prepared dataset (no meta.json): see genie data prepare")
    meta, episodes = _read_json(meta_path), _read_json(path / "index.json")
    if not isinstance(meta, dict) or meta.get("format") != FORMAT or not meta.get("complete"):
        raise GenieError(f"{path} is not a complete genie dataset: prepare it again")
    if meta.get("version", 0) > FORMAT_VERSION:
        raise GenieError(f"dataset {path} was made by a newer genie: upgrade genie to read it")
    damage = _damage(path, meta, episodes)
    if damage:
        raise GenieError(f"dataset {path} is damaged ({damage}): prepare it again, --overwrite")
    return DatasetInfo(path, meta, episodes)


def _read_json(path: Path):
    try:
        return json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise GenieError(f"dataset {path.parent} is damaged ({path.name}: {e}): prepare it "
                         "again, --overwrite") from e


# What readers of a dataset take from meta.json and from each episode of index.json, by type.
_META = {"height": int, "width": int, "frames": int, "episodes": int, "splits": dict,
         "has_actions": bool, "source": str, "settings": dict, "skipped": list}
_EPISODE = {"split": str, "shard": str, "offset": int, "length": int}


def _damage(path: Path, meta: dict, episodes) -> str | None:
    """What is wrong with what meta.json and index.json hold, or None: found here rather than
    as a TypeError in whatever reads them next."""
    for key, kind in _META.items():
        if not isinstance(meta.get(key), kind):
            return f"meta.json has no valid {key!r}"
    names = meta.get("action_names")
    if names is not None and not (isinstance(names, list)
                                  and all(isinstance(n, str) for n in names)):
        return "meta.json has no valid 'action_names'"
    if not isinstance(episodes, list) or not episodes:
        return "index.json holds no list of episodes"
    for i, ep in enumerate(episodes):
        if not isinstance(ep, dict) or not all(isinstance(ep.get(k), kind)
                                               for k, kind in _EPISODE.items()):
            return f"episode {i} of index.json lacks a valid {', '.join(_EPISODE)}"
        if ep["offset"] < 0 or ep["length"] < 1:
            return f"episode {i} of index.json has offset {ep['offset']}, length {ep['length']}"
    missing = sorted(s for s in {ep["shard"] for ep in episodes} if not (path / s).is_file())
    if missing:
        return f"index.json names {missing[0]}, which is missing"
    return None


def describe(path: str | Path) -> str:
    """A short human summary of a dataset, as printed by `genie data info`."""
    info = open_dataset(path)
    m = info.meta
    lengths = [ep["length"] for ep in info.episodes]
    lines = [
        f"dataset      {info.path}",
        f"resolution   {m['height']}x{m['width']} (HxW)",
        f"frames       {m['frames']:,} in {plural(m['episodes'], 'episode')} "
        f"(length min {min(lengths)}, median {int(np.median(lengths))}, max {max(lengths)})",
        "splits       " + ", ".join(
            f"{name} {plural(len(info.split(name)), 'episode')} / "
            f"{sum(ep['length'] for ep in info.split(name)):,} frames"
            for name in m["splits"]
        ),
    ]
    if m["has_actions"]:
        names = m.get("action_names")
        lines.append(
            f"actions      yes: {len(names)} named ({', '.join(names)})" if names
            else "actions      yes (no names)"
        )
    else:
        lines.append("actions      none")
    s = m["settings"]
    lines.append(
        f"prepared     from {m['source']}, crop {s.get('crop') or 'none'}, "
        f"fps {s.get('fps') or 'source'}, {plural(len(m['skipped']), 'file')} skipped"
    )
    return "\n".join(lines)
