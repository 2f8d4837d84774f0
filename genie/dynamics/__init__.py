"""Dynamics models: given the codes of past frames and a latent action, the next frame's codes.

maskgit/ holds the MaskGIT backend, its model and sampler kept apart. `model_class` and
`sampler_for` pick them by the backend name a config or world.json carries.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from genie.errors import GenieError

BACKENDS = ("maskgit",)


def _check(backend: str) -> None:
    if backend not in BACKENDS:
        raise GenieError(f"unknown dynamics backend {backend!r}: choose one of {BACKENDS}")


def model_class(backend: str) -> type:
    """The dynamics model class of `backend` (for from_pretrained)."""
    _check(backend)
    from genie.dynamics.maskgit import MaskGITDynamics

    return MaskGITDynamics


def sampler_for(backend: str, model: Any, settings: dict | None = None) -> Any:
    """A sampler for `model`, with `settings` overriding the backend's defaults by name."""
    _check(backend)
    from genie.dynamics.maskgit import MaskGITSampler, SamplerSettings

    settings = settings or {}
    known = {f.name for f in dataclasses.fields(SamplerSettings)}
    unknown = sorted(set(settings) - known)
    if unknown:
        raise GenieError(f"unknown sampler setting(s) {unknown}: expected some of {sorted(known)}")
    return MaskGITSampler(model, SamplerSettings(**settings))
