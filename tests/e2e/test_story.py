"""The whole story, as the demo tells it, asserted: real MLflow, real vLLM servers (CPU build) run by the node
agent, the traffic shim, real Prometheus, and the operator promoting version 2 and aborting version 3."""

import pytest

from llm_sandbox.story import MODEL, Story

pytestmark = [pytest.mark.e2e, pytest.mark.vllm]


def test_v2_is_promoted_and_v3_aborted_on_real_measurements(vllm_python, tmp_path):
    story = Story(tmp_path, vllm_python, say=print).start()
    try:
        figures = story.run(timeout=600)
        v1, v2, v3 = figures["versions"]
        # The API: v2 promoted and serving, v3 aborted by the latency analysis, traffic back on v2.
        assert figures["v2"]["phase"] == "Succeeded", figures["v2"]
        assert figures["v3"]["phase"] == "Aborted", figures["v3"]
        assert figures["v3"]["message"].count("latency") >= 1
        assert story.serving_version() == v2
        status = story.llmd()["status"]
        assert "canaryRevision" not in status and status["stableRevision"] == figures["v2"]["toRevision"]
        # MLflow: the outcomes written back; `production` on v2, never on v3.
        client = story.mlflow.client()
        assert client.get_model_version(MODEL, v2).tags["llmops.dev/rollout"] == "succeeded"
        assert client.get_model_version(MODEL, v3).tags["llmops.dev/rollout"] == "aborted"
        assert client.get_model_version_by_alias(MODEL, "production").version == v2
        # Prometheus: real vLLM series for every revision (v1's pods are gone: look back), relabelled by revision.
        served = {r["metric"].get("llmops_dev_revision") for r in story.prometheus.query(
            'sum by (llmops_dev_revision) (max_over_time(vllm:request_success_total{llmops_dev_deployment="assistant"}[30m])) > 0')}
        revisions = {figures["v2"]["fromRevision"], figures["v2"]["toRevision"], figures["v3"]["toRevision"]}
        assert revisions <= served
        # v3 never got more than the canary step it reached allowed (binomial noise: +15 points).
        reached = max(25, figures["v3"].get("canaryWeight", 0))
        timeline = story.shim.timeline
        v3_rev = figures["v3"]["toRevision"]
        times = [t for t, rev, _ in timeline if rev == v3_rev]
        window = [rev for t, rev, _ in timeline if times and times[0] <= t <= times[-1]]
        assert times and window.count(v3_rev) / len(window) <= reached / 100 + 0.15
        assert figures["detect_seconds"] < 120
    finally:
        story.stop()
