"""The generation thread: queue bound, undo bound, held keys, previews and failures."""

from __future__ import annotations

import time

import numpy as np
import pytest

from genie.play.worker import Failure, Frame, Notice, Previews, Worker

PROMPT = np.full((2, 12, 16, 3), 40, np.uint8)


@pytest.fixture
def worker(fake):
    workers: list[Worker] = []

    def make(world=None, **kwargs) -> Worker:
        w = Worker(world or fake(), **({"previews": False} | kwargs)).start()
        workers.append(w)
        w.submit("reset", PROMPT)
        collect(w, lambda r: any(isinstance(x, Frame) for x in r))
        return w

    yield make
    for w in workers:
        w.stop()


def collect(worker: Worker, done, timeout: float = 5.0) -> list:
    """Results until `done(results)` holds."""
    out: list = []
    deadline = time.perf_counter() + timeout
    while not done(out):
        assert time.perf_counter() < deadline, f"timed out; got {out}"
        worker.wait(0.01)
        out += worker.results()
    return out


def frames(results: list) -> list[Frame]:
    return [r for r in results if isinstance(r, Frame)]


def test_a_full_queue_drops_and_counts_never_blocks(worker):
    w = worker(queue_size=3)
    w.set_paused(True)
    accepted = [w.submit("step", a) for a in (0, 1, 2, 3, 0)]
    assert accepted == [True, True, True, False, False] and w.dropped == 2 and w.pending == 3
    w.set_paused(False)
    got = frames(collect(w, lambda r: len(frames(r)) == 3))
    assert [f.action for f in got] == [0, 1, 2] and [f.steps for f in got] == [1, 2, 3]


def test_undo_stack_is_bounded_and_says_when_empty(worker):
    w = worker(undo_limit=2)
    for a in (0, 1, 2, 3):
        w.submit("step", a)
    steps = frames(collect(w, lambda r: len(frames(r)) == 4))
    for _ in range(3):
        w.submit("undo")
    out = collect(w, lambda r: any(isinstance(x, Notice) for x in r))
    undone = frames(out)
    assert [f.steps for f in undone] == [3, 2]
    assert np.array_equal(undone[0].frame, steps[2].frame)
    assert [x.message for x in out if isinstance(x, Notice)] == ["nothing to undo"]


def test_undo_stack_is_bounded_by_memory_too(worker):
    w = worker(undo_mb=1200 / 2**20)  # a fake snapshot holds a 576-byte frame: two fit
    for a in (0, 1, 2, 3):
        w.submit("step", a)
    collect(w, lambda r: len(frames(r)) == 4)
    for _ in range(3):
        w.submit("undo")
    out = collect(w, lambda r: any(isinstance(x, Notice) for x in r))
    assert [f.steps for f in frames(out)] == [3, 2]


def test_a_held_key_steps_at_the_fps_cap_and_stops_on_release(worker):
    w = worker(fps_cap=50)
    start = time.perf_counter()
    w.hold(1)
    got = frames(collect(w, lambda r: len(frames(r)) >= 5))
    w.hold(None)
    elapsed = time.perf_counter() - start
    assert all(f.action == 1 for f in got) and elapsed >= 4 / 50  # paced, not as fast as it can
    time.sleep(0.1)
    late = frames(w.results())
    assert len(late) <= 1  # at most the step already under way when the key was released


def test_previews_match_the_step_and_leave_the_world_as_it_was(worker):
    w = worker(previews=True, preview_delay=0.0)
    w.submit("step", 0)  # previews of the reset frame may have come with it: look after a step
    out = collect(w, lambda r: sum(len(p.actions) for p in r
                                   if isinstance(p, Previews) and p.version == 2) == 4)
    previews = {a: f for p in out if isinstance(p, Previews) and p.version == 2
                for a, f in zip(p.actions, p.frames, strict=True)}
    w.submit("step", 2)
    stepped = frames(collect(w, lambda r: bool(frames(r))))[0]
    assert np.array_equal(stepped.frame, previews[2]) and stepped.version == 3


def test_a_failing_step_is_reported_and_the_world_carries_on(worker, fake):
    w = worker(fake(fail_on=3))
    w.submit("step", 3)
    w.submit("step", 1)
    out = collect(w, lambda r: bool(frames(r)))
    failures = [x for x in out if isinstance(x, Failure)]
    assert failures and "cannot do that" in failures[0].message
    assert frames(out)[0].steps == 1  # the failed step left no trace


def test_threads_are_set_on_the_worker_thread_only(worker, fake):
    # Set on the UI thread, torch's thread count made the worker's steps twice as slow.
    import torch

    seen = []
    world = fake()
    step = world.step
    world.step = lambda action: seen.append(torch.get_num_threads()) or step(action)
    before = torch.get_num_threads()
    asked = 2 if before == 1 else 1  # differs from the UI thread's, so the test can fail
    w = worker(world, threads=asked)
    w.submit("step", 0)
    collect(w, lambda r: len(frames(r)) == 1)
    assert seen == [asked] and torch.get_num_threads() == before
