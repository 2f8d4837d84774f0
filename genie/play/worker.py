"""The generation thread: it alone touches the world, so the window never waits on a frame.

The UI thread submits requests (step, undo, reset) into a bounded queue and reads results
(frames, previews, failures) back; torch releases the GIL while it computes, so the window keeps
drawing and reading keys meanwhile. Stepping has priority over previews:

- previews start only when nothing is queued, no key is held and the player has paused: the
  last frame must be older than 1.5 times the player's recent gap between key presses (at least
  `preview_delay`, at most 1 s). A player pressing keys in a rhythm would never see previews
  for frames that last one beat, so none are computed then;
- they are computed in chunks of actions, and a request that arrives between chunks goes first,
  abandoning the rest (stale once the world moves). The chunk grows while a chunk costs little
  more than a step and shrinks when it costs two, so a key pressed meanwhile waits about one
  step at most;
- every result carries the state version it belongs to, so stale previews are never shown.

The undo stack holds world snapshots with the frame each one showed. A world's snapshot holds
its caches (about 17 MB for the `tiny` preset), so the stack keeps at most `undo_limit` steps
and at most `undo_mb` of them, whichever is fewer.
"""

from __future__ import annotations

import threading
import time
import traceback
from collections import deque
from dataclasses import dataclass
from typing import Any

import numpy as np


@dataclass
class Frame:
    """A frame to show: after a reset, a step or an undo."""

    frame: np.ndarray  # (H, W, 3) uint8
    kind: str  # 'reset', 'step' or 'undo'
    action: int | None
    steps: int  # the world's step count after it
    version: int  # state version; previews of this version belong to this frame
    compute_ms: float  # time the world took
    latency_ms: float  # from the request to the frame, queueing and pacing included
    caption: str = ""  # the env's own line for the panel, if it has one (replay position)


@dataclass
class Previews:
    """Next frames of some actions from the state of `version`."""

    version: int
    actions: list[int]
    frames: np.ndarray  # (len(actions), H, W, 3)
    compute_ms: float


@dataclass
class Failure:
    """A request failed; the world stays as it was before it."""

    message: str
    error: BaseException


@dataclass
class Notice:
    """Something worth telling the player that is not an error ('nothing to undo')."""

    message: str


@dataclass
class _Request:
    kind: str  # 'step', 'undo' or 'reset'
    arg: Any
    submitted: float


class Worker:
    """Owns `env` (anything with reset/step/snapshot/restore, optionally preview) on a thread."""

    def __init__(self, env, *, seed: int | None = 0, previews: bool = True, queue_size: int = 8,
                 undo_limit: int = 64, undo_mb: float = 512, fps_cap: float | None = None,
                 preview_delay: float = 0.1, threads: int | None = None):
        self.env = env
        self.threads = threads  # torch's CPU threads, set on the worker thread (see _run)
        self.seed = seed
        self.previews = previews and callable(getattr(env, "preview", None))
        self.queue_size, self.preview_delay = queue_size, preview_delay
        self.interval = 1.0 / fps_cap if fps_cap else 0.0
        self.dropped = 0
        self.preview_count = 0  # preview chunks computed, for the headless summary
        self._queue: deque[_Request] = deque()
        self._undo: deque[tuple[Any, np.ndarray]] = deque(maxlen=undo_limit)
        self.undo_mb = undo_mb
        self._results: deque = deque()
        self._cond = threading.Condition()
        self._hold: int | None = None
        self._paused = self._stopping = self._busy = False
        self._busy_stepping = False  # computing a frame (not a preview)
        self._version = 0
        self._frame: np.ndarray | None = None
        self._frame_time = 0.0
        self._last_step = -1e9
        self._last_submit = -1e9
        self._gap = 0.0  # recent time between step requests, smoothed (0: none yet)
        self._step_ms = 0.0
        self._chunk = 0  # actions per preview chunk; 0 until the first step is timed
        self._preview_todo: list[int] = []
        self._thread = threading.Thread(target=self._run, name="genie-world", daemon=True)

    # ------------------------------------------------------------------ UI thread side

    def start(self) -> Worker:
        self._thread.start()
        return self

    def submit(self, kind: str, arg: Any = None) -> bool:
        """Queue a request; False (and counted in `dropped`) when the queue is full."""
        with self._cond:
            if len(self._queue) >= self.queue_size:
                self.dropped += 1
                return False
            now = time.perf_counter()
            if kind == "step":
                gap, self._last_submit = now - self._last_submit, now
                if gap < 1.0:  # longer is a pause, not the player's rhythm
                    self._gap = gap if not self._gap else 0.7 * self._gap + 0.3 * gap
            self._queue.append(_Request(kind, arg, now))
            self._cond.notify()
            return True

    def hold(self, action: int | None) -> None:
        """Keep stepping `action` at the fps cap whenever nothing is queued (None: stop)."""
        with self._cond:
            self._hold = action
            self._cond.notify()

    def set_paused(self, paused: bool) -> None:
        """While paused requests wait in the queue and held keys do nothing."""
        with self._cond:
            self._paused = paused
            self._cond.notify()

    def results(self) -> list:
        """Everything produced since the last call, oldest first."""
        out = []
        while self._results:
            out.append(self._results.popleft())
        return out

    def wait(self, timeout: float) -> None:
        """Sleep up to `timeout` s, waking early when a result arrives."""
        with self._cond:
            if not self._results:
                self._cond.wait(timeout)

    @property
    def pending(self) -> int:
        return len(self._queue)

    @property
    def busy(self) -> bool:
        """Computing a frame or a preview chunk right now."""
        return self._busy

    @property
    def stepping(self) -> bool:
        """Computing a frame (a step, undo or reset), not a preview."""
        return self._busy_stepping

    @property
    def paused(self) -> bool:
        return self._paused

    def stop(self, timeout: float = 5.0) -> None:
        """Finish the request in progress (if any) and end the thread."""
        with self._cond:
            self._stopping = True
            self._cond.notify()
        if self._thread.is_alive():
            self._thread.join(timeout)

    # ------------------------------------------------------------------ worker thread

    def _run(self) -> None:
        if self.threads is not None:
            # Set here, on the thread that computes: set on the UI thread instead, the same
            # count made every world step on this one about twice as slow (2 cores, libgomp).
            from genie.train.compute import set_threads

            set_threads(self.threads)
        while True:
            with self._cond:
                job = self._next_job()
                while job is None:
                    if self._stopping:
                        return
                    self._cond.wait(self._wake_in())
                    job = self._next_job()
                self._busy = True
                self._busy_stepping = job != "preview"
            try:
                if job == "preview":
                    self._preview_chunk()
                else:
                    self._handle(job)
            finally:
                with self._cond:
                    self._busy = self._busy_stepping = False
                    self._cond.notify_all()

    def _next_job(self) -> _Request | str | None:
        """Called with the lock held: the next thing to do now, or None to wait."""
        if self._stopping:
            return None
        now = time.perf_counter()
        paced = now >= self._last_step + self.interval
        if self._queue and not self._paused:
            if self._queue[0].kind != "step" or paced:
                return self._queue.popleft()
            return None
        if self._hold is not None and not self._paused and not self._queue:
            return _Request("step", self._hold, now) if paced else None
        if (self._preview_todo and self._hold is None and not self._queue
                and now >= self._frame_time + self._quiet()):
            return "preview"
        return None

    def _wake_in(self) -> float:
        """How long to sleep before a paced step or a preview may be due."""
        now = time.perf_counter()
        times = [now + 0.25]
        if (self._queue or self._hold is not None) and not self._paused:
            times.append(self._last_step + self.interval)
        if self._preview_todo:
            times.append(self._frame_time + self._quiet())
        return max(0.001, min(times) - now)

    def _quiet(self) -> float:
        """How long after a frame previews may start: longer than the player's usual gap."""
        return min(1.0, max(self.preview_delay, 1.5 * self._gap))

    def _handle(self, request: _Request) -> None:
        start = time.perf_counter()
        try:
            if request.kind == "step":
                self._last_step = start
                before = self.env.snapshot(), self._frame
                frame = self.env.step(request.arg)
                if not self._undo:  # size the stack by what one snapshot holds
                    fit = int(self.undo_mb * 2**20 // max(1, nbytes(before)))
                    self._undo = deque(maxlen=max(1, min(self._undo.maxlen, fit)))
                self._undo.append(before)
                action = request.arg
            elif request.kind == "undo":
                if not self._undo:
                    self._post(Notice("nothing to undo"))
                    return
                state, frame = self._undo.pop()
                self.env.restore(state)
                action = None
            elif request.kind == "reset":
                prompt = request.arg() if callable(request.arg) else request.arg
                frame = self.env.reset(prompt, seed=self.seed)
                self._undo.clear()
                action = None
            else:
                raise ValueError(f"unknown request {request.kind!r}")
        except Exception as e:  # shown in the window; the loop and the thread carry on
            from genie.errors import GenieError

            if not isinstance(e, GenieError):
                traceback.print_exc()
            self._post(Failure(str(e) or type(e).__name__, e))
            return
        end = time.perf_counter()
        ms = 1e3 * (end - start)
        if request.kind == "step":
            self._step_ms = ms if not self._step_ms else 0.8 * self._step_ms + 0.2 * ms
        with self._cond:
            self._version += 1
            self._frame, self._frame_time = frame, end
            self._preview_todo = list(range(self.env.num_actions)) if self.previews else []
        self._post(Frame(frame, request.kind, action, int(self.env.steps), self._version, ms,
                         1e3 * (end - request.submitted), getattr(self.env, "caption", "")))

    def _preview_chunk(self) -> None:
        if not self._chunk:  # the first chunk: one action, to learn what a preview costs
            self._chunk = 1
        actions = self._preview_todo[: self._chunk]
        version = self._version
        start = time.perf_counter()
        try:
            frames = self.env.preview(actions)
        except Exception as e:
            self.previews, self._preview_todo = False, []
            traceback.print_exc()
            self._post(Failure(f"previews turned off: {e}", e))
            return
        ms = 1e3 * (time.perf_counter() - start)
        with self._cond:
            if version != self._version:
                return
            self._preview_todo = self._preview_todo[len(actions):]
            self.preview_count += 1
            self._adapt_chunk(ms, len(actions))
        self._post(Previews(version, actions, np.asarray(frames), ms))

    def _adapt_chunk(self, ms: float, size: int) -> None:
        """Batch as many actions as cost about one step, so a waiting key waits that long.

        Where batching is nearly free (a GPU) the chunk grows to every action; on a CPU, where
        a batch of 2 costs well over one step, previews go one action at a time.
        """
        if not self._step_ms:  # no step timed yet (previews of the prompt): nothing to go by
            return
        step = self._step_ms
        if ms < 1.25 * step and size == self._chunk:
            self._chunk = min(self._chunk * 2, self.env.num_actions)
        elif ms > 2 * step and self._chunk > 1:
            self._chunk //= 2

    def _post(self, result) -> None:
        with self._cond:
            self._results.append(result)
            self._cond.notify_all()


def nbytes(obj, seen: set | None = None) -> int:
    """Bytes of the arrays and tensors reachable from `obj` (shared ones counted once)."""
    seen = set() if seen is None else seen
    if ("obj", id(obj)) in seen:  # a container met twice (or a cycle)
        return 0
    seen.add(("obj", id(obj)))
    if isinstance(obj, np.ndarray):
        key = obj.__array_interface__["data"][0]
        size = obj.nbytes
    elif hasattr(obj, "untyped_storage"):  # a torch tensor: its storage may be shared
        key, size = obj.untyped_storage().data_ptr(), obj.untyped_storage().nbytes()
    elif isinstance(obj, dict):
        return sum(nbytes(v, seen) for v in obj.values())
    elif isinstance(obj, (list, tuple)):
        return sum(nbytes(v, seen) for v in obj)
    elif hasattr(obj, "__dict__") or hasattr(obj, "__dataclass_fields__"):
        fields = getattr(obj, "__dataclass_fields__", None) or vars(obj)
        return sum(nbytes(getattr(obj, f), seen) for f in fields)
    else:
        return 0
    if key in seen:
        return 0
    seen.add(key)
    return size
