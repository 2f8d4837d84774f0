"""DiT dynamics: the model (diffusion forcing over continuous latents) and its sampler, apart."""

from genie.dynamics.context import SamplerState
from genie.dynamics.dit.model import DiTDynamics
from genie.dynamics.dit.sampler import DiTSampler, DiTSettings

DiTState = SamplerState  # both backends snapshot the same way; .frames holds the noised latents

__all__ = ["DiTDynamics", "DiTSampler", "DiTSettings", "DiTState"]
