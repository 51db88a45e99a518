"""LLMRollouts end to end: the operator process on the real control plane (the revisions' pods scheduled onto kwok
CPU nodes and reported ready there), a real Prometheus scraping per-revision vLLM metric endpoints whose error ratio
and latency each test sets."""

import copy
import re
import time

import pytest

from llm_sandbox.cluster import wait_for
from llm_sandbox.metrics import FakeVllm, Prometheus
from tests.e2e.conftest import sample

pytestmark = pytest.mark.e2e

LLMD = ("llmops.dev/v1alpha1", "LLMDeployment")
LLMRO = ("llmops.dev/v1alpha1", "LLMRollout")
NAME = "chat"
FAST = {"interval": "2s", "minRequests": 10, "inconclusiveLimit": 3, "consecutiveErrorLimit": 2}


class Scenario:
    """An LLMDeployment serving from a healthy stable revision, ready for a rollout."""

    def __init__(self, api, prometheus, namespace, *, steps, analysis=None, slo=None, traffic=None, **rollout):
        self.api, self.prometheus, self.namespace = api, prometheus, namespace
        self.gateway_api = bool(traffic and traffic.get("router") == "gatewayAPI")
        self.exporters = []
        doc = copy.deepcopy(sample("llmdeployment-cpu"))
        doc["metadata"]["name"] = NAME
        doc["spec"]["replicas"] = 2
        doc["spec"]["slo"] = slo or {"availability": 99.0, "latencyP99Seconds": 2.0}
        if traffic:
            doc["spec"]["traffic"] = traffic
        doc["spec"]["rollout"] = {**({"steps": steps} if steps is not None else {}), "analysis": {**FAST, **(analysis or {})},
                                  "scaleDownDelaySeconds": 0, "abortScaleDownDelaySeconds": 3,
                                  "bakeDuration": "0s", **rollout}  # the bake's own test sets one
        api.create(doc, namespace)
        status = wait_for(lambda: self.status().get("readyReplicas") == 2 and self.status(), 60, "stable ready")
        self.stable = status["stableRevision"]
        self.serve(self.stable, FakeVllm(rate=40, error_ratio=0.0, latency=0.4, seed=1))

    def status(self, kind=LLMD, name=NAME):
        return (self.api.get(*kind, self.namespace, name) or {}).get("status") or {}

    def serve(self, revision, exporter):
        self.exporters.append(exporter.start())
        self.prometheus.add_target(exporter.port, namespace=self.namespace, llmops_dev_deployment=NAME, llmops_dev_revision=revision)
        return exporter

    def start_rollout(self, name="to-v2", uri="hf://org/model-v2", **spec):
        self.rollout = name
        self.api.create({"apiVersion": "llmops.dev/v1alpha1", "kind": "LLMRollout", "metadata": {"name": name},
                         "spec": {"deploymentName": NAME, "target": {"model": {"uri": uri}}, **spec}}, self.namespace)
        self.target = wait_for(lambda: self.status(LLMRO, name).get("toRevision"), 30, "the rollout to start")
        return self.target

    def rollout_status(self):
        return self.status(LLMRO, self.rollout)

    def finished(self, timeout=90):
        try:
            return self._finished(timeout)
        except AssertionError:
            import json
            print("ROLLOUT", json.dumps(self.rollout_status(), indent=1)[:3000])
            print("LLMD", json.dumps(self.status(), indent=1)[:2000])
            raise

    def _finished(self, timeout):
        return wait_for(lambda: (s := self.rollout_status()).get("phase") in ("Succeeded", "Aborted", "Failed") and s,
                        timeout, "the rollout to finish")

    def routes(self):
        """([stable weight, canary weight], [the revision the stable Service selects, the canary Service's]); with the
        Gateway API router, the HTTPRoute's weights and the revisions its InferencePools select."""
        if self.gateway_api:
            route = self.api.get("gateway.networking.k8s.io/v1", "HTTPRoute", self.namespace, NAME)
            primary = next(r for r in route["spec"]["rules"] if not any(m.get("headers") for m in r["matches"]))
            selected = [self.api.get("inference.networking.k8s.io/v1", "InferencePool", self.namespace, ref["name"])["spec"]["selector"]
                        ["matchLabels"]["llmops.dev/revision"] for ref in primary["backendRefs"]]
            return [ref["weight"] for ref in primary["backendRefs"]], selected
        vs = self.api.get("networking.istio.io/v1", "VirtualService", self.namespace, NAME)
        primary = next(h for h in vs["spec"]["http"] if h["name"] == "primary")
        selected = [self.api.get("v1", "Service", self.namespace, svc)["spec"]["selector"]["llmops.dev/revision"]
                    for svc in (NAME, f"{NAME}-canary")]
        return [r["weight"] for r in primary["route"]], selected

    def deployment(self, revision):
        return self.api.get("apps/v1", "Deployment", self.namespace, f"{NAME}-{revision}")

    def events(self, reason):
        return [e for e in self.api.list("v1", "Event", self.namespace) if e["reason"] == reason]

    def close(self):
        for exporter in self.exporters:
            exporter.stop()


@pytest.fixture
def scenario(api, operator, prometheus, namespace):
    made = []

    def make(**kwargs):
        made.append(Scenario(api, prometheus, namespace, **kwargs))
        return made[-1]

    yield make
    for s in made:
        s.close()


STEPS = [{"setWeight": 25}, {"analysis": {"duration": "4s"}}, {"setWeight": 50}, {"analysis": {"duration": "4s"}}]


def test_healthy_canary_goes_through_every_step_to_succeeded(scenario, operator):
    s = scenario(steps=STEPS)
    target = s.start_rollout()
    s.serve(target, FakeVllm(rate=40, error_ratio=0.0, latency=0.4, seed=2))
    status = s.finished()
    assert status["phase"] == "Succeeded", status.get("message")
    assert s.status()["stableRevision"] == target
    wait_for(lambda: s.routes() == ([100, 0], [target, target]), 10, "both Services on the promoted revision")
    steps = sorted(e["message"] for e in s.events("StepCompleted") if e["involvedObject"]["name"] == "to-v2")
    assert steps == ["step 0: weight 25", "step 2: weight 50"]
    passed = [e["message"] for e in s.events("AnalysisPassed")]
    assert len(passed) == 2
    wait_for(lambda: s.deployment(s.stable) is None, 20, "the old revision scaled away")
    # The operator's own metrics tell the same story.
    import urllib.request

    metrics = urllib.request.urlopen(operator.metrics_url, timeout=5).read().decode()
    labels = f'llmops_dev_deployment="{NAME}",namespace="{s.namespace}"'
    assert f'llmops_rollouts_finished_total{{{labels},phase="Succeeded",reason="Promoted"}} 1.0' in metrics
    assert f'llmops_slo_availability_ratio{{{labels}}} 0.99' in metrics
    assert f'llmops_rollout_phase{{{labels},phase="Succeeded",rollout="to-v2"}} 1.0' in metrics


GATEWAY_API = {"router": "gatewayAPI", "gatewayAPI": {
    "parentRefs": [{"name": "inference-gateway"}],
    "endpointPicker": {"stable": {"name": "chat-epp"}, "canary": {"name": "chat-canary-epp"}}}}


def _watch_routes(s, until, timeout=90):
    """The distinct (weights, revisions) the router's objects went through, in order, until ``until()`` holds."""
    seen = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        current = s.routes()
        if not seen or seen[-1] != current:
            seen.append(current)
        if until():
            return seen
        time.sleep(0.05)
    raise AssertionError(f"timed out; routes so far {seen}")


def test_gateway_api_canary_moves_the_http_route_step_by_step_and_promotes(scenario):
    """Issue 18: with router gatewayAPI the rollout moves an HTTPRoute's weights between two InferencePools, each
    step held while it is analysed, and promotion puts both pools on the new revision with the weight back on stable."""
    s = scenario(steps=STEPS, traffic=GATEWAY_API)
    assert s.api.get("networking.istio.io/v1", "VirtualService", s.namespace, NAME) is None
    target = s.start_rollout()
    s.serve(target, FakeVllm(rate=40, error_ratio=0.0, latency=0.4, seed=2))
    seen = _watch_routes(s, lambda: s.rollout_status().get("phase") in ("Succeeded", "Aborted", "Failed"))
    status = s.finished()
    assert status["phase"] == "Succeeded", status.get("message")
    seen.append(wait_for(lambda: (r := s.routes()) == ([100, 0], [target, target]) and r, 10, "both pools on the promoted revision"))
    weights = [w for w, _ in seen]
    assert [w for i, w in enumerate(weights) if i == 0 or w != weights[i - 1]] == [[100, 0], [75, 25], [50, 50], [100, 0]], seen
    # Weight on the canary's pool only while it selects the new revision; at the switch the stable pool moves to it
    # first (for a moment both pools select it: all traffic on the promoted revision), then the weights go to 100/0.
    assert all(revisions[1] == target for w, revisions in seen if w[1] > 0), seen
    assert all(revisions == [s.stable, target] for w, revisions in seen if w == [75, 25]), seen  # the first step: both serve


def test_gateway_api_abort_puts_the_http_route_canary_weight_back_to_zero(scenario):
    s = scenario(steps=STEPS, traffic=GATEWAY_API, analysis={"failFast": {"enabled": False}})
    target = s.start_rollout()
    s.serve(target, FakeVllm(rate=40, error_ratio=0.3, latency=0.4, seed=3))
    seen = _watch_routes(s, lambda: s.rollout_status().get("phase") in ("Succeeded", "Aborted", "Failed"))
    status = s.finished()
    assert status["phase"] == "Aborted", status.get("message")
    assert wait_for(lambda: (r := s.routes())[0] == [100, 0] and r, 10, "the canary's weight back to 0")[1][0] == s.stable
    assert max(w[1] for w, _ in seen) == 25  # aborted at the first analysis: never past its step
    assert s.status()["stableRevision"] == s.stable


def test_no_steps_written_goes_through_the_default_canary(scenario):
    """Safe by default (issue 16): an LLMDeployment that writes no steps rolls a new revision out through the
    default canary, 5, 10, 25 and 50 percent, each analysed against real Prometheus before the next (the analysis
    shortened here to 3 s; it is 5 minutes unless set)."""
    s = scenario(steps=None, analysisDuration="3s")
    target = s.start_rollout()
    s.serve(target, FakeVllm(rate=40, error_ratio=0.0, latency=0.4, seed=5))
    status = s.finished(timeout=150)
    assert status["phase"] == "Succeeded", status.get("message")
    assert status["stepsTotal"] == 8
    weights = [e["message"] for e in s.events("StepCompleted") if e["involvedObject"]["name"] == "to-v2"]
    assert sorted(weights, key=lambda m: int(m.split()[1].rstrip(":"))) == [
        "step 0: weight 5", "step 2: weight 10", "step 4: weight 25", "step 6: weight 50"]
    assert len([e for e in s.events("AnalysisPassed") if e["involvedObject"]["name"] == "to-v2"]) == 4
    assert s.status()["stableRevision"] == target


def test_errors_abort_with_traffic_back_on_stable_and_stable_untouched(scenario):
    s = scenario(steps=STEPS, analysis={"failFast": {"enabled": False}})  # the analysis's verdict (the guard's is below)
    stable_before = s.deployment(s.stable)
    target = s.start_rollout()
    s.serve(target, FakeVllm(rate=40, error_ratio=0.3, latency=0.4, seed=3))
    status = s.finished()
    assert status["phase"] == "Aborted"
    degraded = next(c for c in status["conditions"] if c["type"] == "Degraded")
    assert degraded["reason"] == "AnalysisFailed" and "error-ratio" in degraded["message"]
    failing = {m["name"]: m for m in status["analysis"]["metrics"] if m["verdict"] == "Fail"}
    assert failing["error-ratio"]["value"] > failing["error-ratio"]["max"] == 0.01
    assert s.routes()[0] == [100, 0]  # the weight went back in the pass that aborted
    # ... and the canary Service follows it to stable in the next pass (make before break), never the other way
    wait_for(lambda: s.routes() == ([100, 0], [s.stable, s.stable]), 10, "the canary Service back on stable")
    assert s.deployment(target) is not None  # its pods stay while proxies converge (abortScaleDownDelaySeconds: 3)
    wait_for(lambda: s.deployment(target) is None, 20, "the aborted revision removed")
    stable_after = s.deployment(s.stable)
    assert stable_after["metadata"]["generation"] == stable_before["metadata"]["generation"]
    assert stable_after["spec"]["replicas"] == 2 and s.status()["stableRevision"] == s.stable


def test_a_hard_breach_is_aborted_by_the_guard_long_before_the_next_analysis_run(scenario):
    """analysis.failFast (issue 16): runs a minute apart, the guard at every 1 s scrape over 10 s. A canary failing
    half its requests is out of traffic within seconds, with no analysis run having happened."""
    s = scenario(steps=[{"setWeight": 25}, {"analysis": {"duration": "5m"}}],
                 analysis={"interval": "60s", "failFast": {"interval": "1s", "window": "10s"}})
    target = s.start_rollout()
    s.serve(target, FakeVllm(rate=40, error_ratio=0.5, latency=0.4, seed=11))
    wait_for(lambda: s.rollout_status().get("canaryWeight") == 25, 30, "the canary at 25%")
    routed = time.monotonic()
    status = s.finished(timeout=40)
    took = time.monotonic() - routed
    assert status["phase"] == "Aborted" and took < 60, (status.get("message"), took)  # before the first run's window ended
    degraded = next(c for c in status["conditions"] if c["type"] == "Degraded")
    assert degraded["reason"] == "FailFast" and "fail fast: " in degraded["message"], degraded
    window = int(re.search(r" over (\d+)s:", degraded["message"]).group(1))
    assert 1 <= window <= 10  # the guard's 10 s, or less: no further back than the rollout's start
    assert not (status.get("analysis") or {}).get("runs")  # the analysis never ran: the guard acted
    assert s.routes()[0] == [100, 0]
    assert [e["reason"] for e in s.events("FailFast") if e["involvedObject"]["name"] == "to-v2"] == ["FailFast"]


def test_a_regression_after_promotion_is_rolled_back_inside_the_bake(scenario, prometheus):
    """The bake (issue 16): after the switch the analysis keeps running on the new stable while the previous revision
    stays up; errors that begin only then roll back to it, routes first, the rollout Aborted with reason RolledBack
    and the figures. (How fast, from the breach visible in Prometheus: benchmarks/rollout.py.)"""
    s = scenario(steps=[{"setWeight": 50}, {"analysis": {"duration": "4s"}}], bakeDuration="3m")
    stable_before = s.deployment(s.stable)
    target = s.start_rollout()
    new = s.serve(target, FakeVllm(rate=40, error_ratio=0.0, latency=0.4, seed=11))
    wait_for(lambda: s.status().get("stableRevision") == target and s.rollout_status().get("bake"), 90, "switched and baking")
    assert s.rollout_status()["phase"] == "Progressing"
    assert s.status()["previousRevision"] == s.stable and s.deployment(s.stable)["spec"]["replicas"] == 2  # kept warm
    wait_for(lambda: (s.rollout_status().get("analysis") or {}).get("verdict") == "Pass", 30, "a passing run in the bake")
    wait_for(lambda: s.routes() == ([100, 0], [target, target]), 10, "every Service on the new stable")
    new.error_ratio = 0.3  # shows only after promotion
    status = s.finished(timeout=60)
    assert status["phase"] == "Aborted", status.get("message")
    degraded = next(c for c in status["conditions"] if c["type"] == "Degraded")
    assert degraded["reason"] == "RolledBack" and "error-ratio" in degraded["message"]
    assert status["message"].endswith(f"rolled back: all traffic on {s.stable}")
    assert s.status()["stableRevision"] == s.stable
    wait_for(lambda: s.routes() == ([100, 0], [s.stable, s.stable]), 10, "every Service back on the previous revision")
    assert s.deployment(s.stable)["metadata"]["generation"] == stable_before["metadata"]["generation"]  # never re-templated
    assert s.events("RolledBack") and s.events("RevisionRolledBack")
    wait_for(lambda: s.deployment(target) is None, 20, "the rolled-back revision removed")


def test_latency_regression_is_caught_by_the_latency_sli(scenario):
    s = scenario(steps=STEPS)
    target = s.start_rollout()
    s.serve(target, FakeVllm(rate=40, error_ratio=0.0, latency=6.0, seed=4))
    status = s.finished()
    assert status["phase"] == "Aborted"
    failing = {m["name"] for m in status["analysis"]["metrics"] if m["verdict"] == "Fail"}
    assert {"latency-p99", "latency-vs-stable"} <= failing
    assert "errors" not in " ".join(failing)
    assert s.routes()[0] == [100, 0]


def test_no_data_pauses_and_never_promotes(scenario):
    s = scenario(steps=STEPS)
    s.start_rollout()  # no metrics endpoint for the new revision: nothing to judge it by
    status = wait_for(lambda: (st := s.rollout_status()).get("phase") == "Paused" and st, 60, "paused")
    paused = next(c for c in status["conditions"] if c["type"] == "Paused")
    assert paused["reason"] == "InconclusiveAnalysis"
    assert s.routes()[0] == [75, 25]  # holds at the step it reached; nothing more without evidence
    assert s.status()["stableRevision"] == s.stable


def test_a_quiet_canary_with_one_error_neither_aborts_nor_promotes(scenario):
    """Low traffic (issue 16): at a 99.9% target, a canary seeing ~200 requests per run window (a fifteenth of the
    2995 a verdict needs at 95%) and one error. The observed ratio, about 0.5%, is five times the 0.1% budget, which
    a plain threshold (and the z-test against stable) aborted on; the exact binomial test finds it no evidence of a
    breach, nor (with requireEvidenceToPass, the strict rule) the error-free runs evidence of staying within the
    budget (a plain threshold promoted on the first of those): the step holds, then pauses. By default an error-free
    run on minRequests passes (tests/unit/test_analysis.py); the run that sees the error holds either way."""
    s = scenario(steps=[{"setWeight": 5}, {"analysis": {"duration": "4s"}}], slo={"availability": 99.9, "latencyP99Seconds": 2.0},
                 analysis={"inconclusiveLimit": 4, "requireEvidenceToPass": True})
    target = s.start_rollout()
    quiet = FakeVllm(rate=20, error_ratio=0.0, latency=0.4, seed=8)
    errors = quiet.success.labels(model_name="model", engine="0", finished_reason="error")  # the series, at 0, from the start
    s.serve(target, quiet)
    wait_for(lambda: (s.rollout_status().get("analysis") or {}).get("runs", 0) >= 1, 60, "a first analysis run")
    errors.inc()  # one error, inside the window of the runs that follow
    seen = set()

    def paused():
        status = s.rollout_status()
        seen.update(m["message"] for m in (status.get("analysis") or {}).get("metrics", []) if m["name"] == "error-ratio")
        return status.get("phase") in ("Paused", "Aborted", "Succeeded", "Failed") and status

    status = wait_for(paused, 60, "the rollout to pause")
    assert status["phase"] == "Paused", status.get("message")
    condition = next(c for c in status["conditions"] if c["type"] == "Paused")
    assert condition["reason"] == "InconclusiveAnalysis"
    assert "a verdict needs >= 2995 requests with no errors" in condition["message"]
    one_error = [m for m in seen if ": 1 error in " in m]
    assert one_error, seen  # a run saw the error ...
    assert all("not evidence of a breach of the 0.1% budget at 95%, nor of staying within it" in m for m in one_error)
    assert next(m for m in status["analysis"]["metrics"] if m["name"] == "error-ratio")["verdict"] == "Inconclusive"
    # ... and nothing moved on it: traffic where the step put it, stable still stable, no analysis passed.
    assert s.routes()[0] == [95, 5] and s.status()["stableRevision"] == s.stable
    assert not [e for e in s.events("AnalysisPassed") if e["involvedObject"]["name"] == "to-v2"]


def test_a_quiet_canary_with_one_error_is_not_aborted_by_default(scenario):
    """Low traffic, default analysis (issue 16): at a 99.9% target, a canary at 8 requests a second holds about 80
    requests a 10 s run window (the interval here, as the default minute is: each request counted by one run), beside
    a stable serving 200 a second: the canary's share is 80/2080 = 3.8%. One error on it: Fisher's p against none on
    stable is that share, 0.038 < 0.05, which failed errors-vs-stable and aborted the rollout on a single request; it
    no longer stands (one error fewer would not fail). The SLO check on the same counts finds it no evidence either
    way (P(X >= 1) = 1 - 0.999^80 = 7.7%), so that run is Inconclusive, the step holds, and the rollout is promoted on
    a later run, which no longer sees the error."""
    s = scenario(steps=[{"setWeight": 5}, {"analysis": {"duration": "20s"}}], slo={"availability": 99.9, "latencyP99Seconds": 2.0},
                 analysis={"interval": "10s", "minRequests": 20, "consecutiveErrorLimit": 4})  # the defaults but the interval
    s.exporters[0].rate = 200  # stable: the canary's 8 a second are 3.8% of the requests
    target = s.start_rollout()
    quiet = FakeVllm(rate=8, error_ratio=0.0, latency=0.4, seed=9)
    errors = quiet.success.labels(model_name="model", engine="0", finished_reason="error")  # the series, at 0, from the start
    s.serve(target, quiet)
    # ~80 error-free requests pass a run; the step holds for its 20 s.
    wait_for(lambda: (s.rollout_status().get("analysis") or {}).get("verdict") == "Pass", 90, "a first passing run")

    def served():
        return quiet.registry.get_sample_value("vllm:request_success_total",
                                               {"model_name": "model", "engine": "0", "finished_reason": "stop"}) or 0.0

    # Half a window (40 requests) after that run, so that the next run, 10 s after it, counts the error and the one after
    # that does not, however the runs fall among the 1 s scrapes.
    after = served() + 40
    wait_for(lambda: served() >= after, 30, "half a run window of canary traffic")
    errors.inc()
    runs = {}  # run number -> (the run's verdict, {metric: (verdict, message)}), as the status showed each run

    def finished():
        status = s.rollout_status()
        analysis = status.get("analysis") or {}
        if analysis.get("runs"):
            runs[analysis["runs"]] = (analysis["verdict"], {m["name"]: (m["verdict"], m["message"]) for m in analysis["metrics"]})
        return status.get("phase") in ("Paused", "Aborted", "Succeeded", "Failed") and status

    status = wait_for(finished, 90, "the rollout to finish")
    assert status["phase"] == "Succeeded", (status.get("message"), runs)
    with_error = {n: run for n, run in runs.items() if ": 1 error in " in run[1]["error-ratio"][1]}
    assert with_error, runs  # a run saw the error ...
    for verdict, metrics in with_error.values():  # ... and nothing failed on it
        assert verdict == "Inconclusive", metrics
        assert metrics["error-ratio"][0] == "Inconclusive" and "not evidence of a breach" in metrics["error-ratio"][1], metrics
        assert metrics["errors-vs-stable"][0] == "Inconclusive", metrics["errors-vs-stable"]
        assert metrics["errors-vs-stable"][1].endswith("a single error never fails a comparison with stable"), metrics
    # The promotion rests on a later run: the step advances on a passing run only, and a run seeing that one error
    # never passes (1 error in under 1000 requests is above the 0.1% budget), so the run it advanced on no longer saw it.
    passed = [e["message"] for e in s.events("AnalysisPassed") if e["involvedObject"]["name"] == "to-v2"]
    assert len(passed) == 1, passed
    ok, total = map(int, re.fullmatch(r"step 1: (\d+)/(\d+) runs passed", passed[0]).groups())
    assert total > max(with_error) and 2 <= ok <= total - len(with_error), (passed, runs)
    assert s.status()["stableRevision"] == target


def test_prometheus_unreachable_aborts_with_metrics_unavailable(scenario, tmp_path):
    own = Prometheus(tmp_path).start()  # this test stops its Prometheus mid-rollout
    try:
        s = scenario(steps=[{"setWeight": 25}, {"analysis": {"duration": "60s"}}], analysis={"prometheusAddress": own.url})
        own.targets.update(s.prometheus.targets)
        own._write_targets()
        target = s.start_rollout()
        exporter = s.serve(target, FakeVllm(rate=40, error_ratio=0.0, latency=0.4, seed=5))
        own.add_target(exporter.port, namespace=s.namespace, llmops_dev_deployment=NAME, llmops_dev_revision=target)
        wait_for(lambda: (s.rollout_status().get("analysis") or {}).get("passed", 0) >= 1, 60, "a first passing run")
        own.stop()
        status = s.finished()
    finally:
        own.stop()
    assert status["phase"] == "Aborted"
    assert next(c for c in status["conditions"] if c["type"] == "Degraded")["reason"] == "MetricsUnavailable"
    assert s.routes()[0] == [100, 0] and s.status()["stableRevision"] == s.stable


def test_operator_restart_resumes_at_the_same_step(scenario, operator):
    s = scenario(steps=[{"setWeight": 25}, {"analysis": {"duration": "8s"}}, {"setWeight": 50}, {"analysis": {"duration": "4s"}}])
    target = s.start_rollout()
    s.serve(target, FakeVllm(rate=40, error_ratio=0.0, latency=0.4, seed=6))
    wait_for(lambda: s.rollout_status().get("currentStepIndex") == 1, 30, "the first analysis step")
    # The pass that moved the cursor posts its Events after the status writes: a kill between them loses the Event
    # (best-effort, as client-go's), which is not what this test is about. Kill once that pass is done.
    wait_for(lambda: [e for e in s.events("StepCompleted") if e["involvedObject"]["name"] == "to-v2"], 30, "step 0's Event")
    operator.kill()  # SIGKILL mid-analysis: no clean shutdown
    index = s.rollout_status()["currentStepIndex"]
    operator.start()
    status = s.finished()
    assert index == 1 and status["phase"] == "Succeeded"
    steps = [e["message"] for e in s.events("StepCompleted") if e["involvedObject"]["name"] == "to-v2"]
    assert sorted(steps) == ["step 0: weight 25", "step 2: weight 50"]  # nothing repeated or skipped
    assert len(s.api.list("apps/v1", "Deployment", s.namespace, f"llmops.dev/revision={target}")) == 1
