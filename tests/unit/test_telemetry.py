"""The operator's own metrics, from what a pass decided."""

from prometheus_client import generate_latest

from llm_operator._telemetry import Telemetry


def body():
    return {"metadata": {"namespace": "ns", "name": "chat"}}


def rollout(phase=None, **status):
    return {"metadata": {"name": "to-v2"}, "status": {"phase": phase, **status} if phase else {}}


def scrape(t: Telemetry) -> str:
    return generate_latest(t.registry).decode()


def test_a_pass_records_slo_phase_weight_and_analysis():
    t = Telemetry()
    after = {"phase": "Progressing", "canaryWeight": 25,
             "analysis": {"lastRunAt": "2026-11-21T10:00:00Z", "verdict": "Pass", "metrics": [{"name": "error-ratio", "value": 0.002}]}}
    t.observe_pass(body(), 99.5, [(rollout("Progressing", canaryWeight=10), after)], 0.12, writes=3)
    text = scrape(t)
    assert 'llmops_slo_availability_ratio{llmops_dev_deployment="chat",namespace="ns"} 0.995' in text
    assert 'llmops_rollout_phase{llmops_dev_deployment="chat",namespace="ns",phase="Progressing",rollout="to-v2"} 1.0' in text
    assert 'llmops_rollout_phase{llmops_dev_deployment="chat",namespace="ns",phase="Aborted",rollout="to-v2"} 0.0' in text
    assert 'llmops_rollout_canary_weight_percent{llmops_dev_deployment="chat",namespace="ns",rollout="to-v2"} 25.0' in text
    assert 'llmops_analysis_metric_value{metric="error-ratio",namespace="ns",rollout="to-v2"} 0.002' in text
    assert 'llmops_analysis_runs_total{namespace="ns",rollout="to-v2",verdict="Pass"} 1.0' in text
    assert 'llmops_api_writes_total{llmops_dev_deployment="chat",namespace="ns"} 3.0' in text
    assert "llmops_reconcile_duration_seconds_count 1.0" in text


def test_an_outcome_is_counted_once_and_a_run_only_when_new():
    t = Telemetry()
    aborted = {"phase": "Aborted", "conditions": [{"type": "Degraded", "status": "True", "reason": "AnalysisFailed"}],
               "analysis": {"lastRunAt": "t1", "verdict": "Fail", "metrics": []}}
    t.observe_pass(body(), 99.0, [(rollout("Progressing"), aborted)], 0.1, writes=1)
    t.observe_pass(body(), 99.0, [({"metadata": {"name": "to-v2"}, "status": aborted}, aborted)], 0.1, writes=0)  # idle pass
    text = scrape(t)
    assert 'llmops_rollouts_finished_total{llmops_dev_deployment="chat",namespace="ns",phase="Aborted",reason="AnalysisFailed"} 1.0' in text
    assert 'llmops_analysis_runs_total{namespace="ns",rollout="to-v2",verdict="Fail"} 1.0' in text


def test_the_latency_slos_are_exported_for_the_alerts_and_withdrawn_when_unset():
    """The serving alerts read llmops_slo_latency_p99_seconds and llmops_slo_time_to_first_token_p95_seconds; an
    LLMDeployment that drops an objective stops exporting it (the rules then hold it to their default)."""
    t = Telemetry()
    t.observe_pass(body(), 99.5, [], 0.1, writes=0, latency_p99_seconds=20.0, ttft_p95_seconds=1.5)
    text = scrape(t)
    assert 'llmops_slo_latency_p99_seconds{llmops_dev_deployment="chat",namespace="ns"} 20.0' in text
    assert 'llmops_slo_time_to_first_token_p95_seconds{llmops_dev_deployment="chat",namespace="ns"} 1.5' in text
    t.observe_pass(body(), 99.5, [], 0.1, writes=0, latency_p99_seconds=20.0)
    text = scrape(t)
    assert "llmops_slo_time_to_first_token_p95_seconds{" not in text and "llmops_slo_latency_p99_seconds{" in text


def test_api_requests_are_counted_by_verb_kind_and_code_and_passes_in_flight_by_the_queue():
    """Issue 15: client-go's rest_client_requests_total for the passes' own client, and the queue's passes in flight."""
    import pytest

    from llm_operator._kube import Conflict, CountingKube
    from llm_operator._workqueue import WorkQueue
    from tests.unit.fakes import FakeKube

    t = Telemetry()
    fake = FakeKube()
    kube = CountingKube(fake, t.count_request)
    deployment = {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "chat-a", "namespace": "ns"}, "spec": {}}
    kube.apply(deployment)
    assert kube.get("apps/v1", "Deployment", "ns", "chat-a") is not None
    assert kube.get("apps/v1", "Deployment", "ns", "gone") is None
    kube.list("llmops.dev/v1alpha1", "LLMRollout", "ns", "", field_selector="spec.deploymentName=chat")
    assert kube.delete("apps/v1", "Deployment", "ns", "chat-a") is True
    assert kube.delete("apps/v1", "Deployment", "ns", "chat-a") is False  # absent: a 404, not a 200
    fake.fail[("create", "LLMRollout")] = lambda name: Conflict("exists", 409)
    with pytest.raises(Conflict):
        kube.create({"apiVersion": "llmops.dev/v1alpha1", "kind": "LLMRollout", "metadata": {"name": "r", "namespace": "ns"}})
    text = scrape(t)
    for verb, kind, code, n in (("patch", "Deployment", 200, 1), ("get", "Deployment", 200, 1), ("get", "Deployment", 404, 1),
                                ("list", "LLMRollout", 200, 1), ("create", "LLMRollout", 409, 1),
                                ("delete", "Deployment", 200, 1), ("delete", "Deployment", 404, 1)):
        assert f'llmops_api_requests_total{{code="{code}",kind="{kind}",verb="{verb}"}} {n}.0' in text, text
    queue = WorkQueue()
    t.watch_queue(queue)
    queue.add("a")
    queue.add("b")
    queue.take()
    assert "llmops_workqueue_passes_in_flight 1.0" in scrape(t) and "llmops_workqueue_depth 1.0" in scrape(t)


def test_a_deleted_rollouts_and_a_deleted_deployments_gauges_are_removed():
    """A gauge left behind reports a deleted rollout as Progressing to the alerts forever (a leftover, fixed)."""
    t = Telemetry()
    after = {"phase": "Progressing", "canaryWeight": 25,
             "analysis": {"lastRunAt": "t1", "verdict": "Pass", "metrics": [{"name": "error-ratio", "value": 0.002}]}}
    other = {"metadata": {"name": "to-v3"}, "status": {}}
    t.observe_pass(body(), 99.5, [(rollout("Progressing"), after), (other, {"phase": "Succeeded"})], 0.1, writes=0)
    assert 'rollout="to-v2"' in scrape(t)
    t.observe_pass(body(), 99.5, [(other, {"phase": "Succeeded"})], 0.1, writes=0)  # to-v2 deleted (the history limit)
    text = scrape(t)
    assert 'llmops_rollout_phase{llmops_dev_deployment="chat",namespace="ns",phase="Progressing",rollout="to-v2"}' not in text
    assert 'llmops_rollout_canary_weight_percent{llmops_dev_deployment="chat",namespace="ns",rollout="to-v2"}' not in text
    assert 'llmops_analysis_metric_value{metric="error-ratio",namespace="ns",rollout="to-v2"}' not in text
    assert 'llmops_analysis_runs_total{namespace="ns",rollout="to-v2",verdict="Pass"} 1.0' in text  # counters stay
    assert 'phase="Succeeded",rollout="to-v3"} 1.0' in text
    t.forget("ns", "chat")  # the LLMDeployment deleted
    text = scrape(t)
    assert 'rollout="to-v3"' not in text.replace('llmops_analysis_runs_total', '')
    assert 'llmops_slo_availability_ratio{llmops_dev_deployment="chat"' not in text
    t.forget("ns", "chat")  # twice, or never seen: nothing to remove, no error
    t.forget("ns", "never")
