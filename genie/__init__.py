"""genie: Genie-style generative interactive video world models.

Importing the package is cheap on purpose: heavy dependencies (torch, PyAV, pygame) are imported
by the modules that need them, so `genie --help` answers at once.
"""

from genie.errors import GenieError

__version__ = "0.1.0"
__all__ = ["GenieError", "__version__", "load"]


def load(path, *, device: str = "auto", sampler: dict | None = None, precision: str = "fp32"):
    """Load a world folder: `world = genie.load("worlds/coinrun"); world.reset(frames)`.

    See `genie.world.load` for `sampler` and `precision`."""
    from genie.world import load as load_world

    return load_world(path, device=device, sampler=sampler, precision=precision)
