"""Suite-wide settings: one compute thread per test process.

The suite runs as two pytest-xdist workers on two cores; letting each also start several
torch/OpenMP threads oversubscribes the cores and makes small ops many times slower.
"""

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("PYGAME_HIDE_SUPPORT_PROMPT", "1")
