"""MaskGIT dynamics: the model (masked-token prediction) and its sampler, kept apart."""

from genie.dynamics.maskgit.model import MaskGITDynamics
from genie.dynamics.maskgit.sampler import MaskGITSampler, SamplerSettings, SamplerState

__all__ = ["MaskGITDynamics", "MaskGITSampler", "SamplerSettings", "SamplerState"]
