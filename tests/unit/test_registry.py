"""The model registry: version selection, the quality gate, write-back, the polling cache, and the planner
driven by a fake registry (alias moves, faults, gate, supersession, outcomes)."""

import copy

import pytest

from llm_operator import _builders as b
from llm_operator import _progressive as p
from llm_operator import _registry as reg
from llm_operator import _resolver as rz
from llm_operator._api import GateThreshold, MlflowModelRef
from llm_operator._planner import RecordOutcome
from llm_operator._reconcile import run_pass
from tests.unit.fakes import FakeKube, FakeMetrics, FakeRegistry, fake_deps

T0, T1, T2, T3 = "2026-11-21T10:00:00Z", "2026-11-21T10:01:00Z", "2026-11-21T10:02:00Z", "2026-11-21T10:03:00Z"
GOOD = {"accuracy": 0.91, "hallucination_rate": 0.04}


# ------------------------------------------------------------------------------------ pure parts


MODEL = reg.ModelInfo("chat", {"champion": "4", "challenger": "5"}, {"Production": "3", "Staging": "5"})


@pytest.mark.parametrize("ref, want", [
    ({"alias": "champion"}, "4"),
    ({"alias": "challenger"}, "5"),
    ({"stage": "Production"}, "3"),
    ({"stage": "Staging"}, "5"),
    ({"version": "2"}, "2"),
])
def test_select_version(ref, want):
    assert reg.select_version(MODEL, MlflowModelRef(name="chat", **ref)) == want


@pytest.mark.parametrize("ref, message", [
    ({"alias": "production"}, "registered model 'chat' has no alias 'production' (aliases: challenger, champion)"),
    ({"stage": "Production"}, "registered model 'chat' has no version in stage 'Production'"),
])
def test_a_missing_alias_or_stage_is_model_not_found(ref, message):
    with pytest.raises(reg.ModelNotFound) as error:
        reg.select_version(reg.ModelInfo("chat", {"champion": "4", "challenger": "5"}), MlflowModelRef(name="chat", **ref))
    assert str(error.value) == message


@pytest.mark.parametrize("metrics, passed, message", [
    ({"accuracy": 0.9, "hallucination_rate": 0.04}, True, "accuracy 0.9 >= min 0.86; hallucination_rate 0.04 <= max 0.1"),
    ({"accuracy": 0.81, "hallucination_rate": 0.04}, False, "accuracy 0.81 < min 0.86"),
    ({"accuracy": 0.81, "hallucination_rate": 0.2}, False, "accuracy 0.81 < min 0.86; hallucination_rate 0.2 > max 0.1"),
    ({"accuracy": 0.86, "hallucination_rate": 0.1}, True, "accuracy 0.86 >= min 0.86; hallucination_rate 0.1 <= max 0.1"),
    ({"accuracy": 0.9}, False, "hallucination_rate missing from the version's run"),
])
def test_quality_gate(metrics, passed, message):
    gate = [GateThreshold(metric="accuracy", min=0.86), GateThreshold(metric="hallucination_rate", max=0.10)]
    assert reg.evaluate_gate(gate, metrics) == (passed, message)


def _finished(phase, message="", metrics=()):
    return {"metadata": {"name": "chat-abc", "namespace": "ml"}, "spec": {"target": {"model": {"version": "5"}}},
            "status": {"phase": phase, "message": message, "finishedAt": T1, "toRevision": "abc",
                       "analysis": {"metrics": [{"name": n, "value": v} for n, v in metrics]}}}


def test_outcome_of_a_promotion_moves_the_promote_alias_and_tags_the_figures():
    ref = MlflowModelRef(name="chat", alias="champion", promote_alias="production")
    out = reg.outcome_of(ref, "5", _finished("Succeeded", metrics=[("error-ratio", 0.00123456), ("ttft", 0.21)]))
    assert (out.outcome, out.alias, out.stage) == ("succeeded", "production", None)
    assert out.tags == {"llmops.dev/rollout": "succeeded", "llmops.dev/rollout-name": "ml/chat-abc",
                        "llmops.dev/finished-at": T1, "llmops.dev/revision": "abc",
                        "llmops.dev/analysis": "error-ratio=0.001235, ttft=0.21"}


def test_outcome_of_an_abort_leaves_the_alias_and_records_the_reason():
    ref = MlflowModelRef(name="chat", stage="Staging", promote_stage="Production", promote_alias="production")
    out = reg.outcome_of(ref, "5", _finished("Aborted", "step 1: latency-p99: 6.1 > max 2"))
    assert (out.outcome, out.alias, out.stage) == ("aborted", None, None)
    assert out.tags["llmops.dev/rollout"] == "aborted"
    assert out.tags["llmops.dev/reason"] == "step 1: latency-p99: 6.1 > max 2"


def _rollback(phase="Succeeded", version="4"):
    """A finished rollback (``kubectl llm rollback``'s label) from revision r5 to r4, which serves ``version``."""
    return {"metadata": {"name": "chat-rollback-r4", "namespace": "ml", "labels": {"llmops.dev/rollback-to": "r4"}},
            "spec": {"strategy": "none", "target": {"model": {"version": version}}},
            "status": {"phase": phase, "message": "", "finishedAt": T2, "fromRevision": "r5", "toRevision": "r4"}}


MADE_R5 = {"spec": {"target": {"model": {"version": "5"}}}, "status": {"phase": "Succeeded", "toRevision": "r5"}}


def test_a_rollbacks_outcome_tags_the_version_brought_back_and_the_one_rolled_back():
    ref = MlflowModelRef(name="chat", alias="champion", promote_alias="production")
    out, _ = p.pending_outcome(ref, _rollback(), [MADE_R5, _rollback()], [])
    assert (out.version, out.outcome, out.alias) == ("4", "succeeded", "production")
    assert out.tags["llmops.dev/rollback-from"] == "5" and out.tags["llmops.dev/rollback-from-revision"] == "r5"
    assert out.rolled_back == ("5", {"llmops.dev/rolled-back": "true", "llmops.dev/rolled-back-by": "ml/chat-rollback-r4",
                                     "llmops.dev/rolled-back-at": T2, "llmops.dev/rolled-back-to": "4"})
    # no LLMRollout made r5 stable any more: the LLMDeployment's status.revisions says which version it served
    out, _ = p.pending_outcome(ref, _rollback(), [], [{"revision": "r5", "modelVersion": "5",
                                                       "modelUri": f"models:/{ref.name}/5"}])
    assert out.rolled_back is not None and out.rolled_back[0] == "5"


def test_a_rollback_whose_earlier_version_is_unknown_tags_only_the_version_brought_back():
    ref = MlflowModelRef(name="chat", alias="champion", promote_alias="production")
    out, _ = p.pending_outcome(ref, _rollback(), [], [{"revision": "r3", "modelVersion": "3"}])
    assert out.rolled_back is None and "llmops.dev/rollback-from" not in out.tags
    assert out.tags["llmops.dev/rollback-from-revision"] == "r5"
    out, _ = p.pending_outcome(ref, _rollback(version="5"), [MADE_R5], [])  # the runtime alone went back: same version
    assert out.rolled_back is None and out.tags["llmops.dev/rollback-from"] == "5"
    # r5 served another registered model's version 5 (status.revisions names it): not this model's version 5
    out, _ = p.pending_outcome(ref, _rollback(), [], [{"revision": "r5", "modelVersion": "5", "modelUri": "models:/other/5"}])
    assert out.rolled_back is None and "llmops.dev/rollback-from" not in out.tags


def test_a_rollback_whose_earlier_version_was_deleted_is_still_recorded():
    """The version rolled away from, deleted from the registry meanwhile, cannot be tagged (MLflow answers
    RESOURCE_DOES_NOT_EXIST): the version brought back is tagged and the promote alias moves all the same, once
    (a failure there would be retried every pass, and the alias would never move)."""
    ref = MlflowModelRef(name="chat", alias="champion", promote_alias="production")
    out, _ = p.pending_outcome(ref, _rollback(), [MADE_R5, _rollback()], [])
    registry = FakeRegistry()

    def set_tags(name, version, tags):
        if version == "5":
            raise reg.ModelNotFound("RESOURCE_DOES_NOT_EXIST: Model Version (name=chat, version=5) not found")
        registry.writes.append(("tags", name, version, dict(tags)))
    registry.set_tags = set_tags
    registry.set_alias = lambda name, alias, version: registry.writes.append(("alias", name, version, alias))
    rz.record(registry, out)
    assert [(w[0], w[2]) for w in registry.writes] == [("tags", "4"), ("alias", "4")]


@pytest.mark.parametrize("phase", ["Aborted", "Failed"])
def test_a_rollback_that_did_not_succeed_tags_no_rollback(phase):
    ref = MlflowModelRef(name="chat", alias="champion", promote_alias="production")
    out, _ = p.pending_outcome(ref, _rollback(phase), [MADE_R5], [])
    assert out.rolled_back is None and out.alias is None
    assert not [t for t in out.tags if "roll" in t.removeprefix("llmops.dev/rollout")]


def test_record_writes_tags_before_moving_the_alias():
    registry = FakeRegistry()
    registry.register("chat", "5", alias="champion")
    rz.record(registry, reg.Outcome("chat", "5", "succeeded", {"llmops.dev/rollout": "succeeded"}, alias="production", stage="Production"))
    assert [w[0] for w in registry.writes] == ["tags", "alias", "stage"]
    assert registry.aliases["chat"]["production"] == "5" and registry.stages["chat"]["Production"] == "5"
    registry.writes.clear()
    rz.record(registry, reg.Outcome("chat", "4", "succeeded", {"llmops.dev/rollback-from": "5"}, alias="production",
                                    rolled_back=("5", {"llmops.dev/rolled-back": "true"})))
    assert registry.writes == [("tags", "chat", "4", {"llmops.dev/rollback-from": "5"}),
                               ("tags", "chat", "5", {"llmops.dev/rolled-back": "true"}), ("alias", "chat", "production", "4")]


# ------------------------------------------------------------------------------------ cache


class Clock:
    def __init__(self):
        self.t = 1000.0

    def __call__(self):
        return self.t


def test_the_cache_reads_each_model_once_per_poll_interval():
    registry, clock = FakeRegistry(), Clock()
    registry.register("chat", "4", alias="champion")
    cache = rz.RegistryCache(poll_seconds=30, clock=clock)
    for _ in range(20):  # twenty LLMDeployments following the same model in one interval
        assert cache.model("k", registry, "chat").aliases == {"champion": "4"}
    assert registry.calls == 1
    clock.t += 30
    cache.model("k", registry, "chat")
    assert registry.calls == 2


def test_the_cache_backs_off_after_a_failure():
    registry, clock = FakeRegistry(), Clock()
    registry.register("chat", "4", alias="champion")
    cache = rz.RegistryCache(poll_seconds=30, clock=clock)
    registry.down = True
    waits = []
    for _ in range(8):
        with pytest.raises(reg.RegistryError):
            cache.model("k", registry, "chat")
        with pytest.raises(reg.RegistryError):
            cache.model("k", registry, "chat")  # inside the back-off: no query
        waits.append(cache.retry_in("k", "chat"))
        clock.t += waits[-1]
    assert waits == [5, 10, 20, 40, 80, 160, 300, 300]
    assert registry.calls == 8
    registry.down = False
    assert cache.model("k", registry, "chat").aliases == {"champion": "4"}
    assert cache.retry_in("k", "chat") is None


# ------------------------------------------------------------------------------------ the planner


@pytest.fixture
def mlflow_doc(samples):
    doc = copy.deepcopy(samples["llmdeployment-mlflow"])
    doc["spec"]["replicas"] = 1
    doc["spec"]["rollout"].update(steps=[{"setWeight": 50}, {"pause": {"duration": "1m"}}], analyzeEveryStep=False,
                                  bakeDuration="0s")  # no bake here; a failed one: test_a_failed_bake_of_a_version_*
    return doc


class Cluster:
    """A FakeKube with one LLMDeployment and a FakeRegistry, reconciled the way the handler does it."""

    def __init__(self, doc, metrics=None):
        self.kube = FakeKube()
        self.metrics = metrics  # a FakeMetrics for the analysis (None: no Prometheus)
        self.kube.add(doc)
        self.key = (doc["apiVersion"], doc["kind"], doc["metadata"]["namespace"], doc["metadata"]["name"])
        self.registry = FakeRegistry()
        self.clock = Clock()
        self.cache = rz.RegistryCache(poll_seconds=30, clock=self.clock)
        self.events = []
        self.ref = MlflowModelRef.model_validate(doc["spec"]["model"]["mlflow"])

    @property
    def body(self):
        return self.kube.get(*self.key)

    def reconcile(self, now):
        """One pass through the handler's own entry point (``run_pass``) over the fakes: (the plan, its writes)."""
        self.clock.t += 31  # every pass in these tests is a poll interval apart

        def resolve(body, spec, rollouts):
            def record(outcome):
                rz.record(self.registry, outcome)
                self.cache.forget("k", outcome.name)
            return rz.resolve(self.cache, "k", self.registry, spec.model.mlflow, p.target_versions(rollouts)), record

        deps = fake_deps(self.kube, now, resolve=resolve, metrics=self.metrics, events=self.events)
        before = len(self.kube.writes)
        result = run_pass(deps, self.key[2], self.key[3])
        return result.plan, self.kube.writes[before:]

    def deployment(self, revision):
        return self.kube.objects.get(("apps/v1", "Deployment", "default", f"support-assistant-{revision}"))

    def ready(self, revision, n=1):
        dep = self.deployment(revision)
        dep["status"] = {"observedGeneration": dep["metadata"]["generation"], "replicas": n, "readyReplicas": n}

    def rollouts(self):
        return {k[3]: v for k, v in self.kube.objects.items() if k[1] == "LLMRollout"}

    def serving_v4(self):
        """Version 4 behind champion, resolved and ready: the starting point of most tests here."""
        self.registry.register("support-assistant", "4", alias="champion", metrics=GOOD)
        self.reconcile(T0)
        self.ready(self.body["status"]["stableRevision"])
        return self

    def condition(self, type_):
        return next((c for c in self.body["status"]["conditions"] if c["type"] == type_), None)


def _serving(cluster):
    status = cluster.body["status"]
    env = {e["name"]: e.get("value") for e in cluster.deployment(status["stableRevision"])["spec"]["template"]["spec"]["containers"][0]["env"]}
    return status["model"], env["LLMOPS_MODEL_URI"]


def test_an_alias_resolves_to_a_pinned_version_with_its_run(mlflow_doc):
    cluster = Cluster(mlflow_doc)
    cluster.registry.register("support-assistant", "4", alias="champion", metrics=GOOD)
    cluster.reconcile(T0)
    model, uri = _serving(cluster)
    assert uri == "models:/support-assistant/4"  # a restarted pod loads what was rolled out, not the alias's latest
    assert model == {"name": "support-assistant", "source": "mlflow", "uri": "models:/support-assistant/4", "version": "4",
                     "alias": "champion", "artifactUri": "mlflow-artifacts:/1/4/artifacts/model", "runId": "run4",
                     "metrics": GOOD, "params": {"lr": "1e-4"}}
    resolved = cluster.condition("ModelResolved")
    assert (resolved["status"], resolved["reason"]) == ("True", "Resolved")
    assert resolved["message"] == "support-assistant version 4 (by alias champion), run run4"


def test_a_moved_alias_starts_exactly_one_rollout_gated_then_promoted_and_written_back(mlflow_doc):
    cluster = Cluster(mlflow_doc)
    reg_ = cluster.registry
    reg_.register("support-assistant", "4", alias="champion", metrics=GOOD)
    cluster.reconcile(T0)
    stable = cluster.body["status"]["stableRevision"]
    cluster.ready(stable)
    cluster.reconcile(T0)

    reg_.register("support-assistant", "5", alias="champion", metrics={"accuracy": 0.93, "hallucination_rate": 0.03})
    cluster.reconcile(T1)
    cluster.reconcile(T1)  # the same version again: no second rollout
    (name, rollout), = cluster.rollouts().items()
    assert rollout["spec"]["target"]["model"] == {"version": "5"}
    assert rollout["status"]["qualityGate"]["passed"] is True
    assert rollout["status"]["qualityGate"]["message"] == "accuracy 0.93 >= min 0.86; hallucination_rate 0.03 <= max 0.1"
    assert cluster.body["status"]["model"]["version"] == "4"  # still what serves
    canary = rollout["status"]["toRevision"]
    cluster.ready(canary)
    cluster.reconcile(T2)
    assert cluster.rollouts()[name]["status"]["canaryWeight"] == 50
    cluster.reconcile(T3)  # the pause is over: promoted
    assert cluster.rollouts()[name]["status"]["phase"] == "Succeeded"
    assert reg_.writes == []  # nothing written before the API holds the outcome
    plan, writes = cluster.reconcile(T3)
    assert [type(a) for a in plan.actions if isinstance(a, RecordOutcome)] == [RecordOutcome]
    assert reg_.aliases["support-assistant"]["production"] == "5"
    (_, _, _, tags), = [w for w in reg_.writes if w[0] == "tags"]
    assert tags["llmops.dev/rollout"] == "succeeded" and tags["llmops.dev/rollout-name"] == f"default/{name}"
    assert cluster.rollouts()[name]["status"]["registry"] == {"outcome": "succeeded", "recordedAt": T3}
    assert "RegistryUpdated" in [e.reason for e in cluster.events]
    assert cluster.body["status"]["model"]["version"] == "5" and cluster.body["status"]["model"]["runId"] == "run5"
    count = len(reg_.writes)
    cluster.reconcile(T3)
    assert len(reg_.writes) == count  # recorded once


def test_a_version_failing_the_quality_gate_gets_no_pods_and_no_traffic(mlflow_doc):
    cluster = Cluster(mlflow_doc).serving_v4()
    cluster.registry.register("support-assistant", "5", alias="champion", metrics={"accuracy": 0.81, "hallucination_rate": 0.04})
    cluster.reconcile(T1)
    plan, writes = cluster.reconcile(T1)
    (rollout,) = cluster.rollouts().values()
    status = rollout["status"]
    assert status["phase"] == "Failed"
    assert status["message"] == f"quality gate: version 5: accuracy 0.81 < min 0.86; no traffic was sent to {status['toRevision']}"
    assert next(c for c in status["conditions"] if c["type"] == "Degraded")["reason"] == "QualityGateFailed"
    assert cluster.deployment(status["toRevision"]) is None
    assert not [w for w in writes if w[1] in ("Deployment", "VirtualService")]
    assert b.routes_of(cluster.kube.objects[("networking.istio.io/v1", "VirtualService", "default", "support-assistant")]) == b.Routes()
    cluster.reconcile(T2)  # the outcome reaches the registry; the alias that was moved is left alone
    assert [w[3]["llmops.dev/rollout"] for w in cluster.registry.writes if w[0] == "tags"] == ["failed"]
    assert cluster.registry.aliases["support-assistant"] == {"champion": "5"}
    assert cluster.body["status"]["model"]["version"] == "4"


def test_a_version_moved_again_mid_rollout_supersedes_the_unfinished_one(mlflow_doc):
    cluster = Cluster(mlflow_doc).serving_v4()
    cluster.registry.register("support-assistant", "5", alias="champion", metrics=GOOD)
    cluster.reconcile(T1)
    cluster.reconcile(T1)
    (first,) = cluster.rollouts()
    cluster.ready(cluster.rollouts()[first]["status"]["toRevision"])
    cluster.reconcile(T1)
    assert cluster.rollouts()[first]["status"]["canaryWeight"] == 50
    cluster.registry.register("support-assistant", "6", alias="champion", metrics=GOOD)
    plan, _ = cluster.reconcile(T2)
    old = cluster.rollouts()[first]["status"]
    assert old["phase"] == "Aborted" and old["message"].startswith("superseded by revision")
    assert b.routes_of(cluster.kube.objects[("networking.istio.io/v1", "VirtualService", "default", "support-assistant")]) == b.Routes()
    (second,) = set(cluster.rollouts()) - {first}
    cluster.reconcile(T2)
    new = cluster.rollouts()[second]
    assert new["spec"]["target"]["model"] == {"version": "6"}
    assert (new["status"]["phase"], new["status"]["currentStepIndex"]) == ("Progressing", 0)  # from step 0
    assert cluster.body["status"]["model"]["version"] == "4"  # 5 was never promoted
    assert [w[3]["llmops.dev/rollout"] for w in cluster.registry.writes if w[0] == "tags"] == ["aborted"]


def test_a_registry_down_before_the_first_resolution_touches_nothing(mlflow_doc):
    cluster = Cluster(mlflow_doc)
    cluster.registry.register("support-assistant", "4", alias="champion")
    cluster.registry.down = True
    plan, writes = cluster.reconcile(T0)
    assert writes == [("status", "LLMDeployment", "support-assistant")]
    resolved, ready = cluster.condition("ModelResolved"), cluster.condition("Ready")
    assert (resolved["status"], resolved["reason"]) == ("False", "RegistryUnavailable")
    assert "503 Service Unavailable" in resolved["message"]
    assert (ready["status"], ready["reason"]) == ("False", "RegistryUnavailable")
    assert plan.requeue_after == 5
    assert cluster.reconcile(T1)[1] == []  # nothing changed: nothing written
    cluster.registry.down = False
    cluster.reconcile(T2)
    assert cluster.condition("ModelResolved")["status"] == "True"
    assert cluster.body["status"]["model"]["version"] == "4"


def test_a_registry_down_later_keeps_the_stable_version_serving(mlflow_doc):
    cluster = Cluster(mlflow_doc).serving_v4()
    cluster.reconcile(T0)
    cluster.registry.down = True
    plan, writes = cluster.reconcile(T1)
    assert writes == [("status", "LLMDeployment", "support-assistant")]  # the condition, nothing else
    resolved = cluster.condition("ModelResolved")
    assert (resolved["status"], resolved["reason"]) == ("False", "RegistryUnavailable")
    assert resolved["message"].endswith("; still serving version 4")
    assert cluster.condition("Ready")["status"] == "True"
    assert cluster.rollouts() == {}
    assert cluster.reconcile(T2)[1] == []


def test_a_missing_alias_is_model_not_found(mlflow_doc):
    cluster = Cluster(mlflow_doc)
    cluster.registry.register("support-assistant", "4", alias="challenger")
    cluster.reconcile(T0)
    resolved = cluster.condition("ModelResolved")
    assert (resolved["status"], resolved["reason"]) == ("False", "ModelNotFound")
    assert "has no alias 'champion'" in resolved["message"]
    assert [e.reason for e in cluster.events] == ["ModelNotFound"]


def test_a_failed_write_back_is_reported_and_retried(mlflow_doc):
    cluster = Cluster(mlflow_doc).serving_v4()
    cluster.registry.register("support-assistant", "5", alias="champion", metrics={"accuracy": 0.5, "hallucination_rate": 0.5})
    cluster.reconcile(T1)
    cluster.reconcile(T1)  # gate failed
    fail = cluster.registry.set_tags
    cluster.registry.set_tags = lambda *a: (_ for _ in ()).throw(reg.RegistryError("POST tags: 504 Gateway Timeout"))
    cluster.reconcile(T2)
    (rollout,) = cluster.rollouts().values()
    assert rollout["status"]["registry"] == {"outcome": "failed", "error": "POST tags: 504 Gateway Timeout"}
    assert "RegistryWriteFailed" in [e.reason for e in cluster.events]
    cluster.registry.set_tags = fail
    cluster.reconcile(T3)
    (rollout,) = cluster.rollouts().values()
    assert rollout["status"]["registry"] == {"outcome": "failed", "recordedAt": T3}


def test_a_client_with_its_own_token_sends_it_and_never_touches_the_environment(monkeypatch):
    """MLflow reads MLFLOW_TRACKING_TOKEN from os.environ on every request; swapping it in per call raced every
    thread that iterates the environment (a KeyError in the Kubernetes client's proxy lookup, seen on the real
    control plane). The token now travels in the client's own credentials."""
    import os

    from llm_operator._mlflow import MlflowRegistry

    server, seen = _auth_server({"registered_model": {"name": "m", "aliases": [{"alias": "champion", "version": "3"}]}})
    writes = []

    class Watched(dict):
        def __setitem__(self, key, value):
            writes.append(key)
            super().__setitem__(key, value)

    try:
        monkeypatch.delenv("MLFLOW_TRACKING_TOKEN", raising=False)
        registry = MlflowRegistry(f"http://127.0.0.1:{server.server_address[1]}", token="team-a-token")
        watched = Watched(os.environ)
        monkeypatch.setattr(os, "environ", watched)
        info = registry.get_model("m")
    finally:
        server.shutdown()
    assert info.aliases == {"champion": "3"}
    assert seen == ["Bearer team-a-token"]
    assert "MLFLOW_TRACKING_TOKEN" not in writes


def _auth_server(answer=None):
    """A local MLflow stand-in answering GETs with ``answer``; returns (server, the Authorization headers seen)."""
    import http.server
    import json as _json
    import threading

    seen = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def log_message(self, *args):
            pass

        def do_GET(self):
            seen.append(self.headers.get("Authorization"))
            body = _json.dumps(answer or {"registered_model": {"name": "m"}}).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, seen


@pytest.mark.parametrize("token, sent", [(None, [None]), ("tenant-token", ["Bearer tenant-token"])])
def test_a_tenants_registry_never_carries_the_operators_credentials(monkeypatch, token, sent):
    """A Secret names the tracking URI: the operator's own token or Basic credentials (its environment) must not go
    there, with or without the tenant's token (MLflow sends Basic before Bearer, and reads both from os.environ)."""
    from llm_operator._mlflow import MlflowRegistry

    monkeypatch.setenv("MLFLOW_TRACKING_TOKEN", "OPERATORS-OWN-TOKEN")
    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", "operator")
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", "operator-password")
    server, seen = _auth_server()
    try:
        MlflowRegistry(f"http://127.0.0.1:{server.server_address[1]}", token, own_credentials=True).get_model("m")
    finally:
        server.shutdown()
    assert seen == sent


def test_the_operators_own_registry_uses_its_environment(monkeypatch):
    from llm_operator._mlflow import MlflowRegistry

    monkeypatch.setenv("MLFLOW_TRACKING_TOKEN", "OPERATORS-OWN-TOKEN")
    monkeypatch.delenv("MLFLOW_TRACKING_USERNAME", raising=False)
    monkeypatch.delenv("MLFLOW_TRACKING_PASSWORD", raising=False)
    server, seen = _auth_server()
    try:
        MlflowRegistry(f"http://127.0.0.1:{server.server_address[1]}").get_model("m")
    finally:
        server.shutdown()
    assert seen == ["Bearer OPERATORS-OWN-TOKEN"]


def test_a_bake_cut_short_by_a_newer_revision_is_tagged_succeeded_without_moving_the_promote_alias():
    """Second review: with the followed alias equal to promoteAlias, moving it to the cut-short version undid the
    owner's own move to the newer one."""
    from llm_operator import _registry as r
    from llm_operator._api import MlflowModelRef

    ref = MlflowModelRef.model_validate({"name": "m", "alias": "champion", "promoteAlias": "champion"})
    rollout = {"metadata": {"name": "m-b", "namespace": "default"},
               "status": {"phase": "Succeeded", "toRevision": "b", "finishedAt": "t",
                          "bake": {"startedAt": "t", "endsAt": "t", "cutShort": True}}}
    out = r.outcome_of(ref, "5", rollout)
    assert out.outcome == "succeeded" and out.alias is None and out.stage is None
    rollout["status"]["bake"]["cutShort"] = None
    assert r.outcome_of(ref, "5", rollout).alias == "champion"


def test_an_alias_moved_back_to_an_older_version_rolls_it_out_like_a_new_one(mlflow_doc):
    """Issue item 3: 4 -> 5 (promoted) -> 6 (promoted, then found bad) -> the owner moves the alias back to 5. Version 5's
    first LLMRollout is long finished: going back needs a rollout of its own (a name of its own, not a 409), and the
    LLMDeployment ends serving version 5, its status saying so."""
    cluster = Cluster(mlflow_doc).serving_v4()
    stamps = iter(f"2026-11-21T1{h}:{m}:00Z" for h in range(1, 10) for m in ("00", "01", "02"))

    def roll_out(version):
        """Move champion to ``version`` and carry its rollout to the end: the name of that rollout."""
        cluster.registry.register("support-assistant", version, alias="champion", metrics=GOOD)
        start, canary, paused = next(stamps), next(stamps), next(stamps)
        before = set(cluster.rollouts())
        cluster.reconcile(start)
        cluster.reconcile(start)
        (name,) = set(cluster.rollouts()) - before
        cluster.ready(cluster.rollouts()[name]["status"]["toRevision"])
        cluster.reconcile(canary)
        cluster.reconcile(paused)  # the pause is over: promoted
        cluster.reconcile(paused)  # the outcome written back
        assert cluster.rollouts()[name]["status"]["phase"] == "Succeeded"
        return name

    five = roll_out("5")
    rev5 = cluster.rollouts()[five]["status"]["toRevision"]
    six = roll_out("6")
    assert cluster.body["status"]["model"]["version"] == "6"

    again = roll_out("5")  # back to 5
    rollout = cluster.rollouts()[again]
    assert again not in (five, six) and again == f"{five}-2"
    assert rollout["spec"]["target"]["model"] == {"version": "5"} and rollout["status"]["toRevision"] == rev5
    assert cluster.rollouts()[five]["status"]["phase"] == "Succeeded"  # the first one, untouched
    status = cluster.body["status"]
    assert (status["stableRevision"], status["specRevision"]) == (rev5, rev5)
    assert status["model"]["version"] == "5"
    _, uri = _serving(cluster)
    assert uri == "models:/support-assistant/5"
    assert cluster.registry.aliases["support-assistant"]["production"] == "5"


def _promote_v5(cluster):
    """Serving version 4, champion moved to 5 and 5 promoted (no bake), its outcome written: the rollout's name."""
    cluster.serving_v4()
    cluster.registry.register("support-assistant", "5", alias="champion", metrics=GOOD)
    cluster.reconcile(T1)
    cluster.reconcile(T1)
    (name,) = cluster.rollouts()
    cluster.ready(cluster.rollouts()[name]["status"]["toRevision"])
    cluster.reconcile(T2)
    cluster.reconcile(T3)
    cluster.reconcile(T3)
    assert cluster.rollouts()[name]["status"]["registry"]["outcome"] == "succeeded"
    assert cluster.registry.aliases["support-assistant"] == {"champion": "5", "production": "5"}
    return name


def _argocd_rollback(body):
    """The LLMRollout the Argo CD rollback action creates (its Lua, run as in test_argocd)."""
    from tests.unit.test_argocd import CUSTOMIZATIONS, run

    (op,) = run(CUSTOMIZATIONS / "LLMDeployment" / "actions" / "rollback" / "action.lua", body)
    return op["resource"]


@pytest.mark.parametrize("by", ["kubectl", "argocd"])
def test_a_rollback_of_a_followed_deployment_is_recorded_on_both_versions_and_leaves_the_alias(mlflow_doc, by):
    """v4 -> v5 promoted -> rolled back to 4 (``kubectl llm rollback``, or Argo CD's rollback action): version 4 says
    it was brought back from 5, version 5 that it was rolled back (and by what, when), tags before the promote alias
    moves to 4; champion stays on 5 (the owner's), and the LLMDeployment says Degraded, reason RolledBack."""
    from llm_operator._plugin import rollback_rollout

    cluster = Cluster(mlflow_doc)
    promoted = _promote_v5(cluster)
    rev4, rev5 = cluster.body["status"]["previousRevision"], cluster.body["status"]["stableRevision"]
    rollout = (rollback_rollout(cluster.body, list(cluster.rollouts().values())) if by == "kubectl"
               else _argocd_rollback(cluster.body))
    assert rollout["spec"]["target"]["model"] == {"version": "4"}
    name = cluster.kube.create(rollout)["metadata"]["name"]
    cluster.registry.writes.clear()
    cluster.reconcile("2026-11-21T10:04:00Z")  # switched: v4's pods were kept
    assert cluster.rollouts()[name]["status"]["phase"] == "Succeeded" and cluster.registry.writes == []
    cluster.reconcile("2026-11-21T10:04:00Z")  # the outcome, now that the API holds it
    restored, rolled_back, alias = cluster.registry.writes
    assert restored == ("tags", "support-assistant", "4", {
        "llmops.dev/rollout": "succeeded", "llmops.dev/rollout-name": f"default/{name}",
        "llmops.dev/finished-at": "2026-11-21T10:04:00Z", "llmops.dev/revision": rev4,
        "llmops.dev/rollback-from": "5", "llmops.dev/rollback-from-revision": rev5})
    assert rolled_back == ("tags", "support-assistant", "5", {
        "llmops.dev/rolled-back": "true", "llmops.dev/rolled-back-by": f"default/{name}",
        "llmops.dev/rolled-back-at": "2026-11-21T10:04:00Z", "llmops.dev/rolled-back-to": "4"})
    assert alias == ("alias", "support-assistant", "production", "4")
    assert cluster.registry.aliases["support-assistant"] == {"champion": "5", "production": "4"}
    assert cluster.rollouts()[promoted]["status"]["registry"]["outcome"] == "succeeded"  # its own outcome stands
    degraded = cluster.condition("Degraded")
    assert (degraded["status"], degraded["reason"]) == ("True", "RolledBack")
    assert f"revision {rev4} serves, not the spec's revision {rev5}" in degraded["message"]
    assert cluster.body["status"]["model"]["version"] == "4"  # what serves; champion still names 5:
    assert cluster.condition("ModelResolved")["message"].startswith("support-assistant version 5 (by alias champion)")
    cluster.reconcile("2026-11-21T10:05:00Z")
    assert len(cluster.registry.writes) == 3  # recorded once


def test_a_failed_bake_of_a_version_tags_it_aborted_and_moves_no_alias(mlflow_doc):
    """Version 5 promoted, then its bake's analysis fails: all traffic back on 4 (reason RolledBack), version 5
    tagged ``aborted`` with the reason, and neither the promote alias nor the followed one moves."""
    errors = {}

    def answer(promql):  # errors per 1,000 requests, by revision
        rev = next((r for r in errors if f'llmops_dev_revision="{r}"' in promql), None)
        if "request_success_total" not in promql or rev is None:
            return None
        return errors[rev] if 'finished_reason="error"' in promql else 1000.0

    mlflow_doc["spec"]["rollout"].update(
        steps=[{"setWeight": 50}], bakeDuration="10m",
        analysis={"interval": "30s", "minRequests": 10, "metrics": [{"name": "errors", "builtin": "errorRatio", "max": 0.01}]})
    cluster = Cluster(mlflow_doc, metrics=FakeMetrics(answer)).serving_v4()
    rev4 = cluster.body["status"]["stableRevision"]
    cluster.registry.register("support-assistant", "5", alias="champion", metrics=GOOD)
    cluster.reconcile(T1)
    cluster.reconcile(T1)
    (name,) = cluster.rollouts()
    rev5 = cluster.rollouts()[name]["status"]["toRevision"]
    errors.update({rev4: 0.0, rev5: 0.0})
    cluster.ready(rev5)
    cluster.reconcile("2026-11-21T10:01:10Z")  # 50% routed and the switch (its one pod is full size): the bake
    assert cluster.rollouts()[name]["status"]["bake"]["previousRevision"] == rev4
    errors[rev5] = 300.0
    cluster.reconcile("2026-11-21T10:02:30Z")
    status = cluster.rollouts()[name]["status"]
    assert status["phase"] == "Aborted" and status["message"].startswith("bake failed: ")
    assert next(c for c in status["conditions"] if c["type"] == "Degraded")["reason"] == "RolledBack"
    assert cluster.body["status"]["stableRevision"] == rev4
    assert cluster.registry.writes == []  # nothing written before the API holds the outcome
    cluster.reconcile("2026-11-21T10:02:40Z")
    (tags,) = cluster.registry.writes
    assert tags[:3] == ("tags", "support-assistant", "5")
    assert tags[3]["llmops.dev/rollout"] == "aborted" and tags[3]["llmops.dev/reason"] == status["message"]
    assert "llmops.dev/rolled-back" not in tags[3] and "llmops.dev/rollback-from" not in tags[3]
    assert cluster.registry.aliases["support-assistant"] == {"champion": "5"}  # no production, champion the owner's
    assert cluster.rollouts()[name]["status"]["registry"]["outcome"] == "aborted"
    cluster.reconcile("2026-11-21T10:03:00Z")
    assert len(cluster.registry.writes) == 1
