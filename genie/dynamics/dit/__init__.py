"""DiT dynamics: the model (diffusion forcing over continuous latents) and its sampler, apart."""

from genie.dynamics.dit.model import DiTDynamics
from genie.dynamics.dit.sampler import DiTSampler, DiTSettings, DiTState

__all__ = ["DiTDynamics", "DiTSampler", "DiTSettings", "DiTState"]
