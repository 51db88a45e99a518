"""The work queue (client-go's semantics) and the workers that drain it (issue: the resync ran one object after
another, so at 1,000 objects one cycle outlasted its interval and a spec edit waited behind it)."""

import asyncio
import threading
import time

import pytest

from llm_operator import _handlers as h
from llm_operator._backoff import Backoff
from llm_operator._telemetry import Telemetry
from llm_operator._workqueue import WorkQueue


class Clock:
    def __init__(self):
        self.now = 100.0

    def __call__(self):
        return self.now


def drain(q):
    out = []
    while (t := q.take()) is not None:
        out.append(t.key)
        q.done(t.key)
    return out


def test_a_key_is_queued_once_however_often_it_is_added():
    q = WorkQueue(clock=Clock())
    for key in ("a", "b", "a", "c", "b"):
        q.add(key)
    assert len(q) == 3 and drain(q) == ["a", "b", "c"]


def test_a_key_held_by_a_worker_is_not_handed_to_another_and_goes_to_the_back_when_done():
    """One pass per object at a time; fairness: an object that asks again while it runs waits behind the others."""
    q = WorkQueue(clock=Clock())
    for key in ("busy", "x", "y"):
        q.add(key)
    held = q.take()
    q.add("busy")  # its own pass asked for another, or its child moved
    assert [q.take().key, q.take().key, q.take()] == ["x", "y", None]
    q.done("x"), q.done("y")
    q.done(held.key)
    assert q.take().key == "busy"


def test_add_after_waits_and_the_earliest_due_time_wins():
    clock = Clock()
    q = WorkQueue(clock=clock)
    q.add_after("a", 10.0)
    q.add_after("a", 3.0)  # earlier: replaces
    q.add_after("a", 30.0)  # later: ignored
    q.add_after("b", 5.0)
    assert q.take() is None and q.next_due() == 3.0 and q.delayed() == 2
    clock.now += 3.0
    assert drain(q) == ["a"] and q.next_due() == 2.0
    clock.now += 2.0
    assert drain(q) == ["b"] and q.next_due() is None


def test_a_delayed_add_stands_whatever_the_key_does_meanwhile():
    """As client-go's AddAfter: neither an add now nor the key being queued or held drops it (a pass that ran
    meanwhile may have been one that did nothing: a retry still pending, say)."""
    clock = Clock()
    q = WorkQueue(clock=clock)
    q.add("a")
    q.add_after("a", 5.0)  # while queued
    assert drain(q) == ["a"]
    clock.now += 5.0
    assert drain(q) == ["a"] and q.delayed() == 0


def test_waited_is_the_time_since_the_key_became_ready():
    clock = Clock()
    q = WorkQueue(clock=clock)
    q.add_after("a", 2.0)
    clock.now += 7.0  # due at +2, taken at +7
    assert q.take().waited == pytest.approx(5.0)


def test_forget_drops_a_delayed_add_of_a_deleted_object():
    clock = Clock()
    q = WorkQueue(clock=clock)
    q.add_after("gone", 1.0)
    q.forget("gone")
    clock.now += 2.0
    assert q.take() is None and q.delayed() == 0


def test_on_ready_is_called_outside_the_lock():
    calls = []
    q = WorkQueue(on_ready=lambda: calls.append(len(q)))  # len() takes the lock: a deadlock if called inside
    q.add("a")
    q.add_after("b", 1.0)
    held = q.take()
    q.add("a")
    q.done(held.key)
    assert calls == [1, 1, 0, 1]  # the add while held queues nothing yet; done does


def _workers(reconcile, workers, backoff=None):
    """A Controller whose pass is ``reconcile(controller, namespace, name)``, its ``workers`` started (no loops)."""
    controller = h.Controller(object(), Telemetry(), backoff=backoff or Backoff(base=1.0, cap=300.0, jitter=0.0))
    controller.reconcile = lambda namespace, name: reconcile(controller, namespace, name)
    controller.start(workers, loops=False)
    return controller


async def _until(controller, done, timeout=5.0):
    """Let the workers run until ``done()`` (a condition awaited, at most ``timeout`` seconds), then stop them."""
    deadline = time.monotonic() + timeout
    while not done() and time.monotonic() < deadline:
        await asyncio.sleep(0.01)
    await controller.stop()


def test_workers_run_passes_concurrently_never_two_of_one_object():
    running, overlap, seen, lock = set(), [], [], threading.Lock()
    peak = [0]

    def reconcile(controller, namespace, name):
        with lock:
            if name in running:
                overlap.append(name)
            running.add(name)
            peak[0] = max(peak[0], len(running))
            seen.append(name)
        time.sleep(0.05)
        with lock:
            running.discard(name)
        return None

    async def main():
        controller = _workers(reconcile, 3)
        for i in range(9):
            controller.enqueue("ns", f"m{i}", urgent=True)
        controller.enqueue("ns", "m0", urgent=False)  # asked again while queued or held
        await _until(controller, lambda: not (len(controller.queue) or controller.queue.oldest_processing() or len(seen) < 9), timeout=10)

    asyncio.run(main())
    assert not overlap and peak[0] == 3
    assert sorted(set(seen)) == [f"m{i}" for i in range(9)] and 9 <= len(seen) <= 10


def test_a_child_event_during_a_failing_pass_does_not_lose_its_retry():
    """Review of the work queue: a child's event while the pass runs queues the key again; the pass fails and
    schedules its retry; the re-queued pass finds the retry pending and does nothing. The retry must still come."""
    calls = []

    def reconcile(controller, namespace, name):
        calls.append(time.monotonic())
        if len(calls) == 1:
            controller.enqueue(namespace, name, urgent=False)  # the Deployment it just applied moved
            raise RuntimeError("a 503, say")
        return None

    async def main():
        controller = _workers(reconcile, 2, Backoff(base=0.3, cap=1.0, jitter=0.0))
        controller.enqueue("ns", "m", urgent=True)
        await _until(controller, lambda: len(calls) >= 2)

    asyncio.run(main())
    assert len(calls) == 2 and calls[1] - calls[0] >= 0.3


def test_a_failed_pass_is_retried_by_the_queue_after_its_back_off():
    calls = []

    def reconcile(controller, namespace, name):
        calls.append(time.monotonic())
        if len(calls) == 1:
            raise RuntimeError("a 503, say")
        return None

    async def main():
        controller = _workers(reconcile, 2, Backoff(base=0.2, cap=1.0, jitter=0.0))
        controller.enqueue("ns", "m", urgent=True)
        for _ in range(3):  # a child's events during the back-off: served by the retry, not run now
            await asyncio.sleep(0.02)
            controller.enqueue("ns", "m", urgent=False)
        await _until(controller, lambda: len(calls) >= 2)

    asyncio.run(main())
    assert len(calls) == 2 and calls[1] - calls[0] >= 0.2


def test_workers_below_one_is_refused_naming_the_setting():
    from llm_operator._settings import Settings

    with pytest.raises(ValueError, match="LLMOPS_WORKERS"):
        Settings(workers=0)
    assert Settings().workers == 8


def test_the_resync_round_waits_behind_edits_and_events():
    """controller-runtime's priority queue: a thousand resync keys queued low do not delay a spec edit."""
    q = WorkQueue(clock=Clock())
    for i in range(1000):
        q.add(f"m{i}", low=True)
    q.add("edited")
    q.add("m500")  # a child's event for an object the resync also queued: served at the higher level, once
    assert [q.take().key, q.take().key, q.take().key] == ["edited", "m500", "m0"]
    assert len(q) == 998 and "m500" not in drain(q)


def test_a_key_added_low_while_held_and_then_normally_is_requeued_at_the_normal_level():
    q = WorkQueue(clock=Clock())
    q.add("a")
    held = q.take()
    q.add("b", low=True)
    q.add("a", low=True)
    q.add("a")
    q.done(held.key)
    assert drain(q) == ["a", "b"]
