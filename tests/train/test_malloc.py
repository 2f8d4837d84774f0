"""The allocator setting the genie command applies: freed blocks are reused, not re-faulted."""

import subprocess
import sys

import pytest

# A "step" holds blocks of 3-11 MiB together and frees them, as a training step does its
# activations (bytearray zero-fills, touching every page); prints the minor page faults of 10
# steps after the first.
PROGRAM = """
import resource, sys
from genie.malloc import keep_freed_memory
applied = keep_freed_memory() if sys.argv[1] == "keep" else None
def step():
    held = [bytearray(mib << 20) for mib in (3, 5, 7, 9, 11)]
    del held
step()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(10):
    step()
print(applied, resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


def faults(mode: str) -> tuple[str, int]:
    out = subprocess.run([sys.executable, "-c", PROGRAM, mode], check=True, capture_output=True,
                         text=True).stdout.split()
    return out[0], int(out[1])


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's malloc only")
def test_freed_blocks_are_reused_instead_of_faulted_in_again():
    applied, kept = faults("keep")
    _, default = faults("default")
    assert applied == "True"
    # By default glibc trims the freed 35 MiB off the heap, so each step faults it in again
    # (8,960 pages a step); kept, the pages are reused.
    assert default > 20_000
    assert kept < 1_000
