"""MaskGIT dynamics: the model (masked-token prediction) and its sampler, kept apart."""

from genie.dynamics.context import SamplerState
from genie.dynamics.maskgit.model import MaskGITDynamics
from genie.dynamics.maskgit.sampler import MaskGITSampler, SamplerSettings

__all__ = ["MaskGITDynamics", "MaskGITSampler", "SamplerSettings", "SamplerState"]
