"""The fail-fast guard against an engine that stopped answering, end to end: the operator on the real control plane,
a real Prometheus scraping a stand-in vLLM endpoint that serves, then hangs as a stuck engine core does (its pods stay
Ready, /health stays 200: no request finishes, no token is generated, the running gauge keeps its last count)."""

import time

import pytest

from llm_sandbox.cluster import wait_for
from llm_sandbox.metrics import FakeVllm
from tests.e2e.test_rollout import Scenario, scenario  # noqa: F401 (the fixture, used by name)

pytestmark = pytest.mark.e2e

STALL_WINDOW = 10  # seconds: failFast.stallWindow, shortened from its 2m


@pytest.mark.parametrize("engines", [1, 2], ids=["its-one-engine", "one-of-two-engines"])
def test_a_canary_whose_engine_hangs_is_aborted_by_the_guard_before_any_analysis_run(scenario, engines):  # noqa: F811
    """analysis.failFast.stallWindow: runs a minute apart, the guard at every 1 s scrape. A healthy canary (tokens
    flowing, requests running) is left alone for longer than the stall window; once an engine of it hangs, it is
    out of traffic within the stall window and a few scrapes, before the first analysis run. With two engines (two
    pods), one hung beside one still serving: the check is per engine, so the healthy one's tokens and finished
    requests do not hide it (the requests the hung one holds never finish, so no error is counted on them)."""
    s: Scenario = scenario(steps=[{"setWeight": 25}, {"analysis": {"duration": "5m"}}],
                           analysis={"interval": "60s", "failFast": {"interval": "1s", "window": "10s", "stallWindow": f"{STALL_WINDOW}s"}})
    target = s.start_rollout()
    canary, *others = [s.serve(target, FakeVllm(rate=40, error_ratio=0.0, latency=0.4, seed=12 + i)) for i in range(engines)]
    wait_for(lambda: s.rollout_status().get("canaryWeight") == 25, 30, "the canary at 25%")
    time.sleep(STALL_WINDOW + 3)  # healthy for more than a stall window: nothing to act on
    assert s.rollout_status()["phase"] == "Progressing", s.rollout_status().get("message")
    canary.stall()
    status = s.finished(timeout=45)
    assert status["phase"] == "Aborted", status.get("message")
    degraded = next(c for c in status["conditions"] if c["type"] == "Degraded")
    assert degraded["reason"] == "FailFast", degraded
    assert (f"fail fast: 1 engine of {target} held " in degraded["message"]
            and f"running requests and generated no token in {STALL_WINDOW}s: it stopped answering" in degraded["message"]), degraded
    assert not (status.get("analysis") or {}).get("runs")  # the analysis never ran (a minute apart): the guard acted
    assert s.routes()[0] == [100, 0]
    assert [e["reason"] for e in s.events("FailFast") if e["involvedObject"]["name"] == "to-v2"] == ["FailFast"]
