"""Worlds shipped inside the package; `coinrun-tiny` is the default of play, generate and eval."""

from __future__ import annotations

from pathlib import Path

from genie.errors import GenieError

DEFAULT_WORLD = Path(__file__).resolve().parent / "coinrun-tiny"


def default_world() -> Path:
    """The world shipped with genie, or an error that says how to make one."""
    if not (DEFAULT_WORLD / "world.json").exists():
        raise GenieError("no --world given and no default world is installed (genie/worlds/"
                         "coinrun-tiny): train one with `genie train world --config tiny --data "
                         "DATASET --out W`, then pass --world W")
    return DEFAULT_WORLD
