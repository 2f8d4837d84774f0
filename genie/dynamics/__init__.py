"""Dynamics models: given the codes of past frames and a latent action, the next frame's codes.

maskgit/ (masked-token prediction) and dit/ (diffusion forcing over continuous latents) each
hold a model and a sampler kept apart. `model_class`, `new_model` and `sampler_for` pick them
by the backend name a config or world.json carries.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from genie.errors import GenieError

BACKENDS = ("maskgit", "dit")


def _check(backend: str) -> None:
    if backend not in BACKENDS:
        raise GenieError(f"unknown dynamics backend {backend!r}: choose one of {BACKENDS}")


def model_class(backend: str) -> type:
    """The dynamics model class of `backend` (for from_pretrained)."""
    _check(backend)
    if backend == "dit":
        from genie.dynamics.dit import DiTDynamics

        return DiTDynamics
    from genie.dynamics.maskgit import MaskGITDynamics

    return MaskGITDynamics


def new_model(backend: str, tokenizer: Any, num_actions: int, **kwargs) -> Any:
    """A fresh (untrained) dynamics model of `backend` for `tokenizer`'s token grid and codes."""
    tok = tokenizer.config
    sizes = dict(vocab_size=tok.codebook_size, grid_h=tok.height // tok.patch,
                 grid_w=tok.width // tok.patch, num_actions=num_actions)
    if backend != "dit":
        return model_class(backend)(**sizes, **kwargs)
    # A DiT denoises this tokenizer's code vectors, so it carries its codebook.
    model = model_class(backend)(**sizes, code_dim=tok.code_dim, **kwargs)
    model.set_codebook(tokenizer.quantizer.codebook)
    return model


def setting_names(backend: str) -> set[str]:
    """The sampler settings `backend` takes (what world.json's "sampler" and overrides may set)."""
    return {f.name for f in dataclasses.fields(_sampler_classes(backend)[1])}


def _sampler_classes(backend: str) -> tuple[type, type]:
    _check(backend)
    if backend == "dit":
        from genie.dynamics.dit import DiTSampler, DiTSettings

        return DiTSampler, DiTSettings
    from genie.dynamics.maskgit import MaskGITSampler, SamplerSettings

    return MaskGITSampler, SamplerSettings


def sampler_for(backend: str, model: Any, settings: dict | None = None) -> Any:
    """A sampler for `model`, with `settings` overriding the backend's defaults by name."""
    sampler, settings_class = _sampler_classes(backend)
    settings = settings or {}
    known = setting_names(backend)
    unknown = sorted(set(settings) - known)
    if unknown:
        raise GenieError(f"unknown {backend} sampler setting(s) {unknown}: expected some of "
                         f"{sorted(known)}")
    return sampler(model, settings_class(**settings))
