"""Faults only a real control plane can stage: kube-apiserver and etcd killed (SIGKILL) in the middle of a rollout
and started again on the same data. The operator must recover on its own (its watches and client reconnect, failed
passes back off), lose nothing (state lives in status) and repeat no step (each StepCompleted Event posted once)."""

import time

import pytest

from llm_sandbox.cluster import wait_for
from llm_sandbox.metrics import FakeVllm
from tests.e2e.test_rollout import Scenario

pytestmark = pytest.mark.e2e

STEPS = [{"setWeight": 25}, {"analysis": {"duration": "8s"}}, {"setWeight": 50}, {"analysis": {"duration": "4s"}}]


@pytest.fixture
def scenario(api, operator, prometheus, namespace):
    made = []
    yield lambda **kw: made.append(Scenario(api, prometheus, namespace, **kw)) or made[-1]
    for s in made:
        s.close()


def _outage(api, component: str, seconds: float) -> None:
    """Kill ``component`` (SIGKILL), leave it down for ``seconds``, start it again and wait until the API serves."""
    proc = api.plane.processes[component]
    proc.kill()
    time.sleep(seconds)
    proc.start()
    api.plane.wait_ready(120)


def _step_events(s):
    return sorted((e["message"], e.get("count", 1)) for e in s.events("StepCompleted") if e["involvedObject"]["name"] == "to-v2")


@pytest.mark.parametrize("component", ["kube-apiserver", "etcd"])
def test_a_control_plane_crash_mid_rollout_loses_nothing_and_repeats_no_step(scenario, api, operator, component):
    s = scenario(steps=STEPS)
    target = s.start_rollout()
    s.serve(target, FakeVllm(rate=40, error_ratio=0.0, latency=0.4, seed=7))
    wait_for(lambda: s.rollout_status().get("currentStepIndex") == 1, 30, "the first analysis step")
    before = s.rollout_status()
    _outage(api, component, 6)
    assert operator.process is not None and operator.process.poll() is None  # the operator rode it out
    status = s.finished(timeout=120)
    assert status["phase"] == "Succeeded", status.get("message")
    assert status["startedAt"] == before["startedAt"]  # the same rollout carried on, not a new one
    assert s.status()["stableRevision"] == target and s.routes()[0] == [100, 0]
    # Nothing repeated: no step's Event counted twice. (Events are best-effort, as client-go's: one whose POST met the
    # outage, right after its pass's status write, is not re-sent; the rollout's state in status is what carries on.)
    events = _step_events(s)
    assert all(count == 1 for _, count in events) and ("step 2: weight 50", 1) in events, events
    assert {m for m, _ in events} <= {"step 0: weight 25", "step 2: weight 50"}
    assert len(api.list("apps/v1", "Deployment", s.namespace, f"llmops.dev/revision={target}")) == 1
