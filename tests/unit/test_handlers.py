"""The kopf-facing loop guards: a pass or a loop iteration that raises anything survives, is logged once while it
repeats, is counted, and backs off (issue: a non-API exception used to end the resync loop for every object)."""

import asyncio
import logging

import kopf
import pytest

from llm_operator import _handlers as h
from llm_operator._backoff import Backoff
from llm_operator._settings import Settings
from llm_operator._telemetry import Telemetry


def _controller(reconcile):
    """A Controller whose pass is ``reconcile(namespace, name)`` and whose schedule only records the delay."""
    controller = h.Controller(object(), Telemetry(), backoff=Backoff(base=1.0, cap=300.0, jitter=0.0),
                              loop_backoff=Backoff(base=1.0, cap=300.0, jitter=0.0))  # the pass never reaches the client
    scheduled = []
    controller.reconcile = reconcile
    controller.schedule = lambda ns, name, delay: scheduled.append(round(delay, 3))
    return controller, scheduled


def test_any_exception_in_a_pass_is_survived_logged_once_and_backed_off(caplog):
    def reconcile(namespace, name):
        b"\xff".decode()  # a Secret value that is not UTF-8, say: not a KubeError

    controller, scheduled = _controller(reconcile)
    log = logging.getLogger("test")
    with caplog.at_level(logging.DEBUG, logger="test"):
        for _ in range(4):
            controller.guarded("team-a", "chat", log)  # urgent: a spec edit each time
    assert scheduled == [1.0, 2.0, 4.0, 8.0]
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "UnicodeDecodeError" in warnings[0].getMessage() and warnings[0].exc_info
    assert controller.telemetry.reconcile_errors.labels("team-a", "chat")._value.get() == 4


def test_child_events_wait_for_the_retry_but_a_spec_edit_does_not():
    calls = []

    def reconcile(namespace, name):
        calls.append(name)
        raise RuntimeError("boom")

    controller, scheduled = _controller(reconcile)
    log = logging.getLogger("test")
    controller.guarded("team-a", "chat", log)
    for _ in range(5):  # the Deployment's status moving as its pods start
        controller.guarded("team-a", "chat", log, urgent=False)
    assert len(calls) == 1 and scheduled == [1.0]
    controller.guarded("team-a", "chat", log, urgent=True)  # an edit may fix it: try at once
    assert len(calls) == 2


def test_success_forgets_the_failures():
    outcomes = iter([RuntimeError("once"), None])

    def reconcile(namespace, name):
        error = next(outcomes)
        if error:
            raise error
        return None

    controller, scheduled = _controller(reconcile)
    controller.guarded("team-a", "chat", logging.getLogger("test"))
    controller.retry_at.clear()
    controller.guarded("team-a", "chat", logging.getLogger("test"))
    assert controller.backoff.failures(("team-a", "chat")) == 0 and ("team-a", "chat") not in controller.errors_seen


def test_a_loop_iteration_that_raises_backs_off_and_the_loop_goes_on(monkeypatch, caplog):
    controller, _ = _controller(None)
    slept = []

    async def sleep(seconds):
        slept.append(seconds)

    monkeypatch.setattr(asyncio, "sleep", sleep)

    async def twice():
        await controller.survive("resync", ValueError("bad"))
        await controller.survive("resync", ValueError("bad"))

    with caplog.at_level(logging.WARNING):
        asyncio.run(twice())
    assert slept == [1.0, 2.0]
    assert sum("resync loop: ValueError: bad" in r.getMessage() for r in caplog.records) == 1
    assert controller.telemetry.loop_errors.labels("resync")._value.get() == 2
    controller.recovered("resync")
    assert controller.loop_backoff.failures("resync") == 0


def test_the_resync_loop_survives_an_error_that_is_not_an_api_error_and_goes_on(monkeypatch, caplog):
    """Issue item 8: the loop itself, as the operator runs it (``_forever`` over ``_resync``), with its sleeps recorded
    instead of slept. Two rounds fail with a UnicodeDecodeError (a value that is not UTF-8: not a KubeError); each is
    counted, the first logged (with its traceback), and each backs off (1 s then 2 s, +-20%) before the next round;
    the third round queues the object as usual, and the loop goes on until the operator cancels it."""
    lists = []

    class Kube:
        def list(self, api_version, kind, namespace, label_selector, field_selector=""):
            lists.append(kind)
            if len(lists) <= 2:
                b"\xff".decode()
            return [{"metadata": {"namespace": "team-a", "name": "chat"}}]

    controller = h.Controller(Kube(), Telemetry(), settings=Settings(resync_seconds=60.0))
    slept = []

    async def sleep(seconds):
        slept.append(seconds)
        if len(lists) == 3:
            raise asyncio.CancelledError  # the operator stopping: its cancel() lands on the loop's next await

    monkeypatch.setattr(asyncio, "sleep", sleep)
    with caplog.at_level(logging.WARNING, logger=h.log.name), pytest.raises(asyncio.CancelledError):
        asyncio.run(controller._forever("resync", controller.settings.resync_seconds, controller._resync))
    first, second = slept[1], slept[3]
    assert slept == [60.0, first, 60.0, second, 60.0, 60.0] and len(lists) == 3
    assert 0.8 <= first <= 1.2 and 1.6 <= second <= 2.4 and controller.loop_backoff.jitter == 0.2
    (warning,) = [r for r in caplog.records if r.name == h.log.name]
    assert warning.getMessage().startswith("resync loop: UnicodeDecodeError") and warning.exc_info[0] is UnicodeDecodeError
    assert controller.telemetry.loop_errors.labels("resync")._value.get() == 2
    assert controller.loop_backoff.failures("resync") == 0 and controller.loop_errors == {}  # recovered
    assert controller.queue.take().key == ("team-a", "chat")


def test_the_operator_registers_a_watch_for_each_kind_it_reconciles_from():
    """A handler lost in an edit left kopf watching no LLMDeployment (only the resync noticed changes); the RBAC
    test's unused `watch` grant caught it on the real control plane. kopf watches the LLMDeployments; the informers
    (issue 15) the revision Deployments and the LLMRollouts, whose events start their LLMDeployment's pass."""
    from llm_operator._cache import KINDS

    selectors = {(h.selector.group, h.selector.any_name) for h in kopf.get_default_registry()._watching.get_all_handlers()}
    assert selectors == {("llmops.dev", "llmdeployments")}, selectors
    assert {("apps/v1", "deployments"), ("llmops.dev/v1alpha1", "llmrollouts")} <= {(a, p) for a, _, p in KINDS}


def test_a_pass_over_a_deleted_llmdeployment_removes_its_gauges():
    """The controller forgets a deleted LLMDeployment's gauge series (a leftover: they were never removed)."""
    from prometheus_client import generate_latest

    from llm_operator._telemetry import Telemetry
    from tests.unit.fakes import FakeKube

    telemetry = Telemetry()
    telemetry.observe_pass({"metadata": {"namespace": "ns", "name": "gone"}}, 99.5,
                           [({"metadata": {"name": "gone-abc"}, "status": {}}, {"phase": "Progressing"})], 0.1, writes=0)
    controller = h.Controller(FakeKube(), telemetry)
    assert controller.reconcile("ns", "gone") is None  # the object is absent: nothing planned
    text = generate_latest(telemetry.registry).decode()
    assert 'rollout="gone-abc"' not in text
    assert 'llmops_slo_availability_ratio{llmops_dev_deployment="gone"' not in text


def test_a_uri_model_with_pinned_mlflow_adapters_gets_a_registry_to_write_back_to(monkeypatch):
    """Review finding (issue 19): the outcome of a rollout that changed pinned MLflow adapters of a URI model is written
    back, so the registry is asked for it even when no adapter follows an alias (else history pruning, which waits for
    the write-back, never went on)."""
    from llm_operator._api import LLMDeploymentSpec
    from tests.unit.fakes import FakeRegistry

    controller = h.Controller(object(), Telemetry())
    registry = FakeRegistry()
    monkeypatch.setattr(controller, "_registry_for", lambda namespace, ref: ("key", registry))
    body = {"metadata": {"namespace": "team-a", "name": "chat"}}
    pinned = LLMDeploymentSpec.model_validate({"model": {"uri": "hf://org/base"}, "adapters": [
        {"name": "sql", "mlflow": {"name": "sql-lora", "version": "3", "secretRef": {"name": "mlflow"}}}]})
    resolution, record = controller._resolve(body, pinned, [])
    assert resolution is not None and resolution.problem is None and record is not None
    assert ("team-a", "chat") not in controller.followers  # nothing to follow: the version is pinned
    plain = LLMDeploymentSpec.model_validate({"model": {"uri": "hf://org/base"}, "adapters": [{"name": "sql", "uri": "s3://l/sql"}]})
    assert controller._resolve(body, plain, []) == (None, None)


def test_the_workers_take_no_key_before_the_informers_have_synced():
    """Issue 15 review (client-go's WaitForCacheSync): a pass run before the copies' first LIST reads by request, and
    a change landing between that read and the LIST would start no pass; so the workers wait for the sync."""
    import asyncio

    from llm_operator._telemetry import Telemetry

    synced = [False]
    ran: list[tuple[str, str]] = []

    async def scenario() -> None:
        controller = h.Controller(object(), Telemetry(), synced=lambda: synced[0], sync_timeout=30.0)
        controller.guarded = lambda namespace, name, logger, urgent=True: ran.append((namespace, name))
        controller.start(2, loops=False)
        controller.enqueue("ns", "chat", urgent=True)
        await asyncio.sleep(0.5)
        assert ran == []  # queued, not taken
        synced[0] = True
        for _ in range(50):
            if ran:
                break
            await asyncio.sleep(0.05)
        await controller.stop()
    asyncio.run(scenario())
    assert ran == [("ns", "chat")]
