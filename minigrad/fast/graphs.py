"""Record a step once as a CUDA graph and replay it: a recorder that knows nothing about training.

``RecordedStep(step, state)`` takes any callable that does its work on the GPU without reading a value on the
host, and a function naming the arrays it changes. It does what ``torch.cuda.graphs`` does, plus a check:

1. a snapshot of ``state()``; ``warmup`` runs of ``step`` on a private stream and memory pool (every kernel
   compiled, the pool filled), then the snapshot restored;
2. ``checks`` eager runs from the snapshot: the reference; the snapshot restored;
3. the capture of one run; ``checks`` replays from the snapshot, compared with the reference bit for bit;
4. the snapshot restored, so recording leaves every array as it was; ``GraphMismatch`` if the replays
   differed (then nothing is recorded and the caller runs ``step`` eagerly instead).

After that ``replay()`` runs the step with one launch. The graph holds the arrays it recorded, not copies: a
replay reads and writes the memory the step used while it was captured.
"""

from __future__ import annotations

import contextlib
import gc
from collections.abc import Callable, Iterator
from typing import Any

from .. import backend
from ..backend import Array

CHECKS = 2  # replays compared with eager runs before a graph is used (two: the step must move its counters on)


class GraphMismatch(RuntimeError):
    """Replaying the recorded graph disagreed with running the same steps eagerly from the same state."""


class RecordedStep:
    """``step()`` recorded as a CUDA graph on its own stream and memory pool, checked, and replayed by ``replay()``.

    Work queued on other streams and the replays are ordered on the GPU by events, without the host waiting:
    ``after_current()`` makes the graph's stream wait for what the current stream has queued, and
    ``before_current()`` makes the current stream wait for the replays launched so far.
    """

    def __init__(
        self, step: Callable[[], Any], state: Callable[[], dict[str, Array]], warmup: int = CHECKS, checks: int = CHECKS
    ) -> None:
        cupy = backend.cupy
        self.step, self.state = step, state
        self.stream = cupy.cuda.Stream(non_blocking=True)
        self.pool = cupy.cuda.MemoryPool()  # private: the graph's arrays live as long as the graph
        cupy.cuda.get_current_stream().synchronize()
        with self.on_stream():
            snapshot = [array.copy() for array in state().values()]
            try:
                mismatch = self._record_and_check(snapshot, warmup, checks)
            finally:  # also when recording fails: the caller goes on, eagerly, from the state it had
                self._restore(snapshot)
                self.stream.synchronize()
        if mismatch:
            raise GraphMismatch(f"after {checks} steps the replayed graph and the eager steps differ in {mismatch}")

    @contextlib.contextmanager
    def on_stream(self) -> Iterator[None]:
        """The graph's stream and memory pool as the current ones: work of the caller's (a smaller last batch,
        a monitor's marks) then queues behind the replays, and its arrays come from the graph's pool."""
        with self.stream, backend.cupy.cuda.using_allocator(self.pool.malloc):
            yield

    def _record_and_check(self, snapshot, warmup, checks):
        """Warm up, run the eager reference, capture, replay; what differs from the reference ('' if nothing)."""
        for _ in range(warmup):
            self.step()
        self._restore(snapshot)
        for _ in range(checks):
            self.step()
        reference = {name: array.copy() for name, array in self.state().items()}
        self._restore(snapshot)
        self.stream.synchronize()
        gc.collect()
        gc.disable()  # an array freed during capture would call CUDA, which capture forbids
        try:
            self.stream.begin_capture()
            try:
                self.step()
            finally:
                self.graph = self.stream.end_capture()
        finally:
            gc.enable()
        self.graph.upload(self.stream)
        for _ in range(checks):
            self.graph.launch(self.stream)
        self.stream.synchronize()
        return ", ".join(name for name, array in self.state().items() if not bool((array == reference[name]).all()))

    def _restore(self, snapshot):
        for array, saved in zip(self.state().values(), snapshot):
            array[...] = saved

    def replay(self) -> None:
        """One run of the step: one launch of the graph on its stream."""
        self.graph.launch(self.stream)

    def after_current(self) -> None:
        """Make the graph's stream wait (on the GPU) for the work queued so far on the current stream."""
        self.stream.wait_event(backend.current_stream().record())

    def before_current(self) -> None:
        """Make the current stream wait (on the GPU) until the replays launched so far have finished."""
        backend.current_stream().wait_event(self.stream.record())
