"""Worker pools that leave Ctrl-C to the parent process.

Ctrl-C signals every process in the terminal's foreground group, so a pool worker would take it
too and print its own traceback ("Process ForkPoolWorker-1: ...") above the parent's one line.
Workers ignore it; the interrupted parent stops them (Pool.terminate) and says so once.
"""

from __future__ import annotations

import multiprocessing
import signal


def worker_pool(start_method: str, workers: int):
    """`workers` processes started by `start_method` ("fork", "spawn") that ignore SIGINT."""
    return multiprocessing.get_context(start_method).Pool(workers, initializer=_ignore_interrupts)


def _ignore_interrupts() -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)
