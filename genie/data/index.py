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
    try:
        meta = json.loads(meta_path.read_text())
        episodes = json.loads((path / "index.json").read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise GenieError(f"dataset {path} is damaged ({e}): prepare it again, --overwrite") from e
    if meta.get("format") != FORMAT or not meta.get("complete"):
        raise GenieError(f"{path} is not a complete genie dataset: prepare it again")
    if meta.get("version", 0) > FORMAT_VERSION:
        raise GenieError(f"dataset {path} was made by a newer genie: upgrade genie to read it")
    return DatasetInfo(path, meta, episodes)


def describe(path: str | Path) -> str:
    """A short human summary of a dataset, as printed by `genie data info`."""
    info = open_dataset(path)
    m = info.meta
    lengths = [ep["length"] for ep in info.episodes]
    lines = [
        f"dataset      {info.path}",
        f"resolution   {m['height']}x{m['width']} (HxW)",
        f"frames       {m['frames']:,} in {m['episodes']:,} episodes "
        f"(length min {min(lengths)}, median {int(np.median(lengths))}, max {max(lengths)})",
        "splits       " + ", ".join(
            f"{name} {n} episodes / {sum(ep['length'] for ep in info.split(name)):,} frames"
            for name, n in m["splits"].items()
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
        f"prepared     from {m['source']}, crop {s['crop'] or 'none'}, "
        f"fps {s['fps'] or 'source'}, {len(m['skipped'])} files skipped"
    )
    return "\n".join(lines)
