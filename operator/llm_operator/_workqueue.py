"""The operator's work queue: which object's pass runs next, as client-go's work queue decides it.

client-go's ``util/workqueue`` (``queue.go``, ``delaying_queue.go``), under every controller-runtime controller,
keeps three sets: the FIFO ``queue`` of keys waiting for a worker, ``dirty`` (keys that need a pass) and
``processing`` (keys a worker holds). A key is queued at most once however often it is added; a key added while a
worker holds it is not handed to a second worker but queued again when the first is done. So one pass per object
at a time, any number of objects at once (the workers), and fairness: a key re-added goes to the back, so an
object that wants passes often cannot starve the others. ``add_after`` is the delaying queue (a requeue, a retry
after back-off): the key is added when due, the earliest due time of a key winning.

Two priorities, as controller-runtime's priority queue (``pkg/controller/priorityqueue``, v0.20) has them: a key
added ``low`` (the periodic resync: every object at once) waits behind every key added normally (a spec edit, a
child's event, a requeue), FIFO within each; a key added at both is served at the higher. Without it, a spec edit
at 1,000 objects waited behind the whole resync round (benchmarks/README.md).

Thread-safe (kopf's handlers and the pass threads add keys; the workers take them); ``on_ready`` is called,
outside the lock, whenever a key may have become ready, so an asyncio driver can wake its workers
(``loop.call_soon_threadsafe``). Times are seconds of ``clock`` (monotonic).
"""

from __future__ import annotations

import heapq
import itertools
import threading
import time
from collections import deque
from collections.abc import Callable, Hashable
from dataclasses import dataclass


@dataclass(frozen=True)
class Taken:
    """A key handed to a worker: ``waited`` seconds in the queue since it was (last) made ready."""

    key: Hashable
    waited: float


class WorkQueue:
    """Keys waiting for a pass, deduplicated, one worker per key at a time, FIFO.

    >>> q = WorkQueue(clock=lambda: 0.0)
    >>> for key in ("a", "b", "a"): q.add(key)
    >>> len(q), q.take().key, q.take().key, q.take()
    (2, 'a', 'b', None)
    >>> q.add("a"); q.take() is None   # "a" is being processed: queued again once done
    True
    >>> q.done("a"); q.take().key
    'a'
    >>> q.add("resync", low=True); q.add("edit"); q.take().key
    'edit'
    """

    def __init__(self, clock: Callable[[], float] = time.monotonic, on_ready: Callable[[], object] = lambda: None):
        self._clock, self.on_ready = clock, on_ready
        self._lock = threading.Lock()
        self._queues: tuple[deque[Hashable], deque[Hashable]] = (deque(), deque())  # normal, low; stale entries skipped
        self._level: dict[Hashable, int] = {}  # queued key -> the level it is served at (0 normal, 1 low)
        self._held_level: dict[Hashable, int] = {}  # a key added while held -> the level to queue it at when done
        self._dirty: dict[Hashable, float] = {}  # key -> when it was made ready (for ``Taken.waited``)
        self._processing: dict[Hashable, float] = {}  # key -> when a worker took it
        self._waiting: list[tuple[float, int, Hashable]] = []  # heap of (due, seq, key); stale entries skipped
        self._due: dict[Hashable, float] = {}
        self._seq = itertools.count()
        self.adds = 0

    def add(self, key: Hashable, *, low: bool = False) -> None:
        """Mark ``key`` as needing a pass now; ``low``: after every key added without it."""
        with self._lock:
            self._add(key, self._clock(), 1 if low else 0)
        self.on_ready()

    def _add(self, key: Hashable, now: float, level: int = 0) -> None:
        if key in self._processing:
            self._held_level[key] = min(level, self._held_level.get(key, level))
        elif key in self._dirty and level < self._level.get(key, level):  # queued low, now wanted sooner
            self._level[key] = level
            self._queues[level].append(key)
        if key in self._dirty:
            return
        self.adds += 1
        self._dirty[key] = now
        if key not in self._processing:
            self._level[key] = level
            self._queues[level].append(key)

    def add_after(self, key: Hashable, delay: float) -> None:
        """Add ``key`` in ``delay`` seconds (at once when ``delay <= 0``); of several pending, the earliest wins."""
        if delay <= 0:
            self.add(key)
            return
        with self._lock:
            due = self._clock() + delay
            if self._due.get(key, float("inf")) <= due:  # as client-go: whatever the key's state now, it is added then
                return
            self._due[key] = due
            heapq.heappush(self._waiting, (due, next(self._seq), key))
        self.on_ready()  # a worker waiting for the next due time may now wait less

    def _promote(self, now: float) -> None:
        while self._waiting and self._waiting[0][0] <= now:
            due, _, key = heapq.heappop(self._waiting)
            if self._due.get(key) == due:
                del self._due[key]
                self._add(key, due)

    def take(self) -> Taken | None:
        """The next key for a worker (it must call :meth:`done` with it), or None when none is ready."""
        with self._lock:
            now = self._clock()
            self._promote(now)
            key = self._pop()
            if key is None:
                return None
            ready = self._dirty.pop(key)
            self._processing[key] = now
            return Taken(key, max(0.0, now - ready))

    def _pop(self) -> Hashable | None:
        for level, queue in enumerate(self._queues):
            while queue:
                key = queue.popleft()
                if self._level.get(key) == level:  # else stale: raised to the normal level, or taken already
                    del self._level[key]
                    return key
        return None

    def done(self, key: Hashable) -> None:
        """The worker holding ``key`` finished its pass; a key added meanwhile is queued again (at the back of its
        level)."""
        with self._lock:
            self._processing.pop(key, None)
            level = self._held_level.pop(key, 0)
            requeued = key in self._dirty
            if requeued:
                self._level[key] = level
                self._queues[level].append(key)
        if requeued:
            self.on_ready()

    def next_due(self) -> float | None:
        """Seconds until the earliest delayed key is due (0 when a key is ready now), None when nothing waits."""
        with self._lock:
            if self._level:
                return 0.0
            while self._waiting and self._due.get(self._waiting[0][2]) != self._waiting[0][0]:
                heapq.heappop(self._waiting)  # stale: superseded by an earlier due time or by an add
            return max(0.0, self._waiting[0][0] - self._clock()) if self._waiting else None

    def forget(self, key: Hashable) -> None:
        """Drop a pending delayed add of ``key`` (its object is gone); a key queued or held is left alone."""
        with self._lock:
            self._due.pop(key, None)

    def __len__(self) -> int:
        """Keys waiting for a worker (client-go's ``workqueue_depth``)."""
        with self._lock:
            return len(self._level)

    def delayed(self) -> int:
        """Keys waiting for their due time."""
        with self._lock:
            return len(self._due)

    def in_flight(self) -> int:
        """Keys a worker holds now."""
        with self._lock:
            return len(self._processing)

    def oldest_processing(self) -> float:
        """Seconds the longest-running pass has run so far (client-go's ``longest_running_processor_seconds``)."""
        with self._lock:
            now = self._clock()
            return max((now - t for t in self._processing.values()), default=0.0)
