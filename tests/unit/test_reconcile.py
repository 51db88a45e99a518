"""The LLMDeployment planner and executor, against an in-memory Kube that records writes."""

import copy
import itertools

import pytest

from llm_operator import _builders as b
from llm_operator import _progressive as p
from llm_operator import _resolver as rz
from llm_operator._api import MlflowModelRef
from llm_operator._cache import ApiReader
from llm_operator._planner import Apply, Delete, is_subset, needs_apply, plan_llmdeployment, spec_or_error, with_applied_hash
from llm_operator._reconcile import Deps, execute, observe, run_pass
from tests.unit.fakes import FakeKube, FakeMetrics, FakeRegistry, fake_deps, owned_by

T0, T1, T2 = "2026-11-21T10:00:00Z", "2026-11-21T10:01:00Z", "2026-11-21T10:02:00Z"


def _plan(body, observed, now):
    """The plan of one pass as run_pass makes it (spec parsed once, the active rollout resolved once)."""
    spec = spec_or_error(body)
    return plan_llmdeployment(body, observed, now, spec=spec, resolved=p.resolve(spec, observed.rollouts))


class Cluster:
    """A FakeKube holding one LLMDeployment, reconciled the way the handler does it (with a FakeRegistry for a
    model that follows MLflow, each pass one poll interval after the last)."""

    def __init__(self, doc: dict, served=frozenset({"HorizontalPodAutoscaler"}), registry: FakeRegistry | None = None,
                 metrics: FakeMetrics | None = None):
        self.kube = FakeKube(served=set(served))
        self.metrics = metrics
        self.served = served
        doc = copy.deepcopy(doc)
        doc["metadata"].setdefault("namespace", "default")
        self.kube.add(doc)
        self.key = (doc["apiVersion"], doc["kind"], doc["metadata"]["namespace"], doc["metadata"]["name"])
        self.events = []
        self.registry = registry
        ticks = itertools.count(0, 31)
        self.cache = rz.RegistryCache(poll_seconds=30, clock=lambda: float(next(ticks)))

    @property
    def body(self) -> dict:
        return self.kube.get(*self.key)

    def reconcile(self, now: str = T0):
        """One pass through the handler's own entry point (run_pass) over fakes; (the plan, the writes it made)."""
        before = len(self.kube.writes)
        try:
            result = run_pass(self.deps(now), self.key[2], self.key[3])
        finally:
            self.last_writes = self.kube.writes[before:]
        return result.plan, self.kube.writes[before:]

    def deps(self, now: str) -> Deps:
        def resolve(body, spec, rollouts):
            if self.registry is None:
                return None, None
            resolution = rz.resolve_spec(self.cache, "k", self.registry, spec, p.target_versions(rollouts))
            return resolution, lambda outcome: rz.record(self.registry, outcome)

        return fake_deps(self.kube, now, resolve=resolve, metrics=self.metrics, events=self.events, served=self.served)

    def deployments(self) -> dict[str, dict]:
        return {k[3]: v for k, v in self.kube.objects.items() if k[1] == "Deployment"}

    def child(self, kind: str) -> dict | None:
        return next((v for k, v in self.kube.objects.items() if k[1] == kind), None)

    def set_ready(self, name: str, ready: int):
        dep = self.kube.objects[("apps/v1", "Deployment", self.key[2], name)]
        dep["status"] = {"observedGeneration": dep["metadata"]["generation"], "replicas": dep["spec"]["replicas"], "readyReplicas": ready}

    def edit_spec(self, **changes):
        obj = self.kube.objects[self.key]
        obj["spec"].update(changes)
        obj["metadata"]["generation"] += 1


def test_first_pass_creates_every_child_and_reports_status(samples):
    cluster = Cluster(samples["llmdeployment-multigpu"])
    plan, writes = cluster.reconcile()
    kinds = [a.obj["kind"] for a in plan.actions]
    assert kinds == ["Deployment", "Service", "Service", "DestinationRule", "DestinationRule", "VirtualService",
                     "HorizontalPodAutoscaler", "PodDisruptionBudget"]
    assert all(isinstance(a, Apply) and a.created for a in plan.actions)
    assert writes[-1] == ("status", "LLMDeployment", "llama-70b")
    status = cluster.body["status"]
    revision = status["stableRevision"]
    assert status["observedGeneration"] == 1
    assert status["model"] == {"name": "meta-llama/Llama-3.1-70B-Instruct-AWQ", "source": "uri",
                               "uri": "s3://models/meta-llama/Llama-3.1-70B-Instruct-AWQ"}
    assert status["endpoint"] == "http://llama-70b.llm-serving.svc.cluster.local:8000/v1"
    assert status["revisions"] == [{"revision": revision, "deployment": f"llama-70b-{revision}", "role": "stable",
                                    "modelUri": "s3://models/meta-llama/Llama-3.1-70B-Instruct-AWQ", "replicas": 0, "readyReplicas": 0}]
    conditions = {c["type"]: c for c in status["conditions"]}
    assert (conditions["Ready"]["status"], conditions["Ready"]["reason"]) == ("False", "ReplicasNotReady")
    assert (conditions["Progressing"]["status"], conditions["Progressing"]["reason"]) == ("True", "ScalingUp")
    assert (conditions["Degraded"]["status"], conditions["Degraded"]["reason"]) == ("False", "AsExpected")
    assert all(c["observedGeneration"] == 1 and c["lastTransitionTime"] == T0 for c in status["conditions"])
    (created,) = [e for e in cluster.events if e.reason == "Created"]  # one Event for the pass's eight creates
    assert created.message.startswith("Created Deployment llama-70b-") and created.message.count(", ") == 7
    assert cluster.child("Deployment")["metadata"]["ownerReferences"][0]["kind"] == "LLMDeployment"


def test_second_pass_with_nothing_changed_writes_nothing(samples):
    for name in ("llmdeployment-multigpu", "llmdeployment-minimal", "llmdeployment-mlflow"):
        cluster = Cluster(samples[name])
        cluster.reconcile(T0)
        plan, writes = cluster.reconcile(T1)
        assert plan.actions == [] and writes == [] and plan.events == [], name


def test_readiness_flows_into_status_once(samples):
    cluster = Cluster(samples["llmdeployment-minimal"])
    cluster.reconcile(T0)
    (name,) = cluster.deployments()
    cluster.set_ready(name, 1)
    plan, writes = cluster.reconcile(T1)
    assert writes == [("status", "LLMDeployment", "qwen-small")]
    status = cluster.body["status"]
    ready = next(c for c in status["conditions"] if c["type"] == "Ready")
    assert (ready["status"], ready["reason"], ready["lastTransitionTime"]) == ("True", "Available", T1)
    degraded = next(c for c in status["conditions"] if c["type"] == "Degraded")
    assert degraded["lastTransitionTime"] == T0  # unchanged status keeps its transition time
    assert (status["replicas"], status["readyReplicas"]) == (1, 1)
    assert {(e.type, e.reason) for e in plan.events} == {("Normal", "Available"), ("Normal", "RevisionAvailable")}
    assert cluster.reconcile(T2)[1] == []


INVALID_EDITS = [
    ("tp", {"runtime": {"tensorParallelSize": 3}}, "spec.runtime.tensorParallelSize"),
    ("maxModelLen", {"runtime": {"maxModelLen": -1}}, "spec.runtime.maxModelLen"),
    ("replicas", {"autoscaling": {"minReplicas": 4, "maxReplicas": 1}}, "spec.autoscaling.minReplicas"),
    ("quantization", {"runtime": {"quantization": "fp3"}}, "spec.runtime.quantization"),
]


@pytest.mark.parametrize("case,spec,field", INVALID_EDITS, ids=[c[0] for c in INVALID_EDITS])
def test_invalid_new_object_creates_nothing(samples, case, spec, field):
    doc = copy.deepcopy(samples["llmdeployment-multigpu"])
    doc["spec"].update(spec)
    cluster = Cluster(doc)
    plan, writes = cluster.reconcile(T0)
    assert plan.actions == [] and writes == [("status", "LLMDeployment", "llama-70b")]
    degraded = next(c for c in cluster.body["status"]["conditions"] if c["type"] == "Degraded")
    assert (degraded["status"], degraded["reason"]) == ("True", "InvalidSpec")
    assert field in degraded["message"]
    assert [(e.type, e.reason) for e in plan.events] == [("Warning", "InvalidSpec")]
    assert field in plan.events[0].message
    # No hot loop: passes after the first write nothing and post nothing.
    for now in (T1, T2):
        plan, writes = cluster.reconcile(now)
        assert writes == [] and plan.events == []


def test_invalid_edit_leaves_running_children_alone(samples):
    cluster = Cluster(samples["llmdeployment-minimal"])
    cluster.reconcile(T0)
    children = copy.deepcopy(cluster.kube.objects)
    cluster.edit_spec(runtime={"maxModelLen": 0})
    plan, writes = cluster.reconcile(T1)
    assert writes == [("status", "LLMDeployment", "qwen-small")]
    assert {k: v for k, v in cluster.kube.objects.items() if k[1] != "LLMDeployment"} == {
        k: v for k, v in children.items() if k[1] != "LLMDeployment"}
    status = cluster.body["status"]
    assert status["observedGeneration"] == 2
    assert status["stableRevision"]  # the last good revision is still reported
    # Fixing the spec clears Degraded.
    cluster.edit_spec(runtime={"maxModelLen": 8192})
    cluster.reconcile(T2)
    degraded = next(c for c in cluster.body["status"]["conditions"] if c["type"] == "Degraded")
    assert (degraded["status"], degraded["reason"], degraded["lastTransitionTime"]) == ("False", "AsExpected", T2)


def test_weights_on_a_canary_that_does_not_exist_go_back_to_stable(samples):
    """Without a canary Deployment, a VirtualService sending traffic to the canary subset (edited by hand, or
    left by a rollout that was deleted) would fail those requests: the pass puts everything on stable."""
    cluster = Cluster(samples["llmdeployment-minimal"])
    cluster.reconcile(T0)
    vs = cluster.child("VirtualService")
    vs["spec"]["http"][0]["route"][0]["weight"] = 80
    vs["spec"]["http"][0]["route"][1]["weight"] = 20
    cluster.edit_spec(traffic={"hosts": ["qwen.example.com"]})
    plan, _ = cluster.reconcile(T1)
    assert [a.obj["kind"] for a in plan.actions] == ["VirtualService"]
    vs = cluster.child("VirtualService")
    assert vs["spec"]["hosts"][-1] == "qwen.example.com"
    assert b.routes_of(vs) == b.Routes(100, 0, 0)


def test_a_new_revision_in_the_spec_is_rolled_out_by_an_llmrollout(samples):
    doc = copy.deepcopy(samples["llmdeployment-minimal"])
    doc["spec"]["rollout"] = {"strategy": "none"}  # switched once ready: this test is about the LLMRollout's life
    cluster = Cluster(doc)
    cluster.reconcile(T0)
    (old,) = cluster.deployments()
    cluster.set_ready(old, 1)
    cluster.reconcile(T0)
    old_revision = cluster.body["status"]["stableRevision"]

    cluster.edit_spec(model={"uri": "hf://Qwen/Qwen2.5-3B-Instruct"})
    plan, writes = cluster.reconcile(T1)
    (rollout,) = [v for k, v in cluster.kube.objects.items() if k[1] == "LLMRollout"]
    new_revision = cluster.body["status"]["specRevision"]
    assert rollout["metadata"]["name"] == f"qwen-small-{new_revision}"
    assert rollout["spec"]["target"]["model"] == {"uri": "hf://Qwen/Qwen2.5-3B-Instruct"}
    assert rollout["metadata"]["ownerReferences"][0]["kind"] == "LLMDeployment"
    assert cluster.body["status"]["stableRevision"] == old_revision
    assert cluster.reconcile(T1)[0].actions != []  # the rollout's first pass

    new = f"qwen-small-{new_revision}"
    assert cluster.deployments()[new]["spec"]["replicas"] == 1  # no steps: full size (1) before the switch
    status = cluster.body["status"]
    assert (status["stableRevision"], status["canaryRevision"], status["rollout"]) == (old_revision, new_revision, rollout["metadata"]["name"])
    assert b.routes_of(cluster.child("VirtualService")) == b.Routes(100, 0, 0)  # no traffic to the newcomer
    assert next(c for c in status["conditions"] if c["type"] == "Progressing")["reason"] == "RolloutInProgress"
    (rollout,) = [v for k, v in cluster.kube.objects.items() if k[1] == "LLMRollout"]
    assert rollout["status"]["phase"] == "Progressing" and "waiting for 1 ready pods" in rollout["status"]["message"]

    cluster.set_ready(new, 1)
    plan, _ = cluster.reconcile(T2)
    assert "RevisionPromoted" in [e.reason for e in plan.events]
    status = cluster.body["status"]
    assert status["stableRevision"] == new_revision and "canaryRevision" not in status
    assert status["previousRevision"] == old_revision and status["previousScaleDownAt"] == "2026-11-21T10:07:00Z"
    services = {k[3]: v["spec"]["selector"]["llmops.dev/revision"] for k, v in cluster.kube.objects.items() if k[1] == "Service"}
    assert services == {"qwen-small": new_revision, "qwen-small-canary": new_revision}
    (rollout,) = [v for k, v in cluster.kube.objects.items() if k[1] == "LLMRollout"]
    assert rollout["status"]["phase"] == "Succeeded"
    assert old in cluster.deployments()  # kept for the scale-down delay: a switch back is instant
    assert plan.requeue_after == 300

    assert cluster.reconcile("2026-11-21T10:05:00Z")[1] == []
    plan, writes = cluster.reconcile("2026-11-21T10:07:01Z")
    assert ("delete", "Deployment", old) in writes
    assert list(cluster.deployments()) == [new]
    assert "previousRevision" not in cluster.body["status"]
    assert cluster.reconcile("2026-11-21T10:08:00Z")[1] == []


def test_autoscaled_replicas_belong_to_the_autoscaler(samples):
    cluster = Cluster(samples["llmdeployment-multigpu"])
    cluster.reconcile(T0)
    (name,) = cluster.deployments()
    assert cluster.deployments()[name]["spec"]["replicas"] == 2  # minReplicas to start
    cluster.kube.objects[("apps/v1", "Deployment", "llm-serving", name)]["spec"]["replicas"] = 5  # the HPA scaled up
    plan, writes = cluster.reconcile(T1)
    assert plan.actions == [] and cluster.deployments()[name]["spec"]["replicas"] == 5
    assert writes == [("status", "LLMDeployment", "llama-70b")]  # "0/5 replicas ready": the new goal shows
    assert cluster.reconcile(T2)[1] == []


def test_fixed_replicas_are_enforced(samples):
    cluster = Cluster(samples["llmdeployment-mlflow"])
    cluster.reconcile(T0)
    (name,) = cluster.deployments()
    cluster.kube.objects[("apps/v1", "Deployment", "default", name)]["spec"]["replicas"] = 1  # drift
    plan, _ = cluster.reconcile(T1)
    assert [a.obj["kind"] for a in plan.actions] == ["Deployment"]
    assert cluster.deployments()[name]["spec"]["replicas"] == 3


def test_switching_autoscaler_off_deletes_the_hpa(samples):
    cluster = Cluster(samples["llmdeployment-multigpu"])
    cluster.reconcile(T0)
    assert cluster.child("HorizontalPodAutoscaler") is not None
    cluster.edit_spec(autoscaling=None)
    del cluster.kube.objects[cluster.key]["spec"]["autoscaling"]
    plan, _ = cluster.reconcile(T1)
    assert Delete("autoscaling/v2", "HorizontalPodAutoscaler", "llama-70b") in plan.actions
    assert cluster.child("HorizontalPodAutoscaler") is None


def test_keda_needs_the_crd_in_the_cluster(samples):
    with_keda = Cluster(samples["llmdeployment-keda"], served=frozenset({"HorizontalPodAutoscaler", "ScaledObject"}))
    with_keda.reconcile(T0)
    assert with_keda.child("ScaledObject")["spec"]["minReplicaCount"] == 0
    assert with_keda.child("HorizontalPodAutoscaler") is None


def test_progress_deadline_shows_as_degraded(samples):
    cluster = Cluster(samples["llmdeployment-minimal"])
    cluster.reconcile(T0)
    (name,) = cluster.deployments()
    cluster.kube.objects[("apps/v1", "Deployment", "default", name)]["status"] = {"conditions": [
        {"type": "Progressing", "status": "False", "reason": "ProgressDeadlineExceeded", "message": "ReplicaSet has timed out progressing."}]}
    plan, _ = cluster.reconcile(T1)
    degraded = next(c for c in cluster.body["status"]["conditions"] if c["type"] == "Degraded")
    assert (degraded["status"], degraded["reason"]) == ("True", "ProgressDeadlineExceeded")
    assert name in degraded["message"]
    assert ("Warning", "ProgressDeadlineExceeded") in [(e.type, e.reason) for e in plan.events]


def test_stale_status_write_is_a_conflict_not_an_error(samples):
    cluster = Cluster(samples["llmdeployment-minimal"])
    body = cluster.body
    plan = _plan(body, observe(ApiReader(cluster.kube), body, cluster.served), T0)
    cluster.kube.objects[cluster.key]["metadata"]["resourceVersion"] = "999"  # someone wrote in between
    writes = execute(cluster.kube, body, plan, now=T0, post_event=lambda e: None, owner=owned_by(body))
    assert writes == len(plan.actions)  # children applied, status skipped for the next pass
    assert "status" not in cluster.body


@pytest.mark.parametrize("want,have,equal", [
    ({"a": 1}, {"a": 1, "b": 2}, True),
    ({"a": {"b": [1, 2]}}, {"a": {"b": [1, 2], "c": 3}}, True),
    ({"a": [1]}, {"a": [1, 2]}, False),
    ({"memory": "1024Mi"}, {"memory": "1Gi"}, True),
    ({"cpu": "500m"}, {"cpu": 0.5}, True),
    ({"cpu": "2"}, {"cpu": "3"}, False),
    ({"name": "Always"}, {"name": "IfNotPresent"}, False),
    ({"x": True}, {"x": 1}, False),
])
def test_is_subset(want, have, equal):
    assert is_subset(want, have) is equal


def test_needs_apply_sees_removed_fields():
    desired = with_applied_hash({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "s"}, "spec": {"a": 1}})
    live = copy.deepcopy(desired)
    assert not needs_apply(desired, live)
    live_with_extra = copy.deepcopy(live)
    live_with_extra["spec"]["b"] = 2  # defaulted by the server: fine
    assert not needs_apply(desired, live_with_extra)
    older = with_applied_hash({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "s"}, "spec": {"a": 1, "b": 2}})
    assert needs_apply(desired, older)  # b was dropped from the spec: apply to remove it
    assert needs_apply(desired, None)


def test_the_old_stable_survives_until_the_switch_is_recorded(samples):
    doc = copy.deepcopy(samples["llmdeployment-minimal"])
    doc["spec"]["rollout"] = {"strategy": "none", "scaleDownDelaySeconds": 0}
    cluster = Cluster(doc)
    cluster.reconcile(T0)
    (old,) = cluster.deployments()
    cluster.set_ready(old, 1)
    cluster.edit_spec(model={"uri": "hf://Qwen/Qwen2.5-3B-Instruct"})
    cluster.reconcile(T1)  # creates the LLMRollout
    cluster.reconcile(T1)  # starts it: the new revision at full size
    new = next(n for n in cluster.deployments() if n != old)
    cluster.set_ready(new, 1)
    plan, writes = cluster.reconcile(T2)  # promotes
    assert "RevisionPromoted" in [e.reason for e in plan.events]
    assert ("delete", "Deployment", old) not in writes  # even with no scale-down delay
    # The stable revision is recorded on the LLMDeployment before the rollout claims Succeeded.
    assert writes[-2:] == [("status", "LLMDeployment", "qwen-small"), ("status", "LLMRollout", f"qwen-small-{new.rsplit('-', 1)[1]}")]
    plan, writes = cluster.reconcile(T2)
    assert ("delete", "Deployment", old) in writes


def test_a_conflict_on_the_deployment_status_leaves_the_rollout_status_alone(samples):
    doc = copy.deepcopy(samples["llmdeployment-minimal"])
    doc["spec"]["rollout"] = {"strategy": "none"}
    cluster = Cluster(doc)
    cluster.reconcile(T0)
    (old,) = cluster.deployments()
    cluster.set_ready(old, 1)
    cluster.edit_spec(model={"uri": "hf://Qwen/Qwen2.5-3B-Instruct"})
    cluster.reconcile(T1)
    cluster.reconcile(T1)
    new = next(n for n in cluster.deployments() if n != old)
    cluster.set_ready(new, 1)
    body = cluster.body
    plan = _plan(body, observe(ApiReader(cluster.kube), body, cluster.served), T2)
    assert any(e.reason == "Promoted" for e in plan.events)
    cluster.kube.objects[cluster.key]["metadata"]["resourceVersion"] = "999"  # someone wrote in between
    execute(cluster.kube, body, plan, now=T2, post_event=cluster.events.append, owner=owned_by(body))
    (rollout,) = [v for k, v in cluster.kube.objects.items() if k[1] == "LLMRollout"]
    assert rollout["status"]["phase"] == "Progressing"  # not Succeeded while the LLMDeployment says otherwise
    assert not any(e.reason == "Promoted" for e in cluster.events)
    cluster.reconcile(T2)  # the next pass does it again, from what is there
    (rollout,) = [v for k, v in cluster.kube.objects.items() if k[1] == "LLMRollout"]
    assert rollout["status"]["phase"] == "Succeeded"
    assert cluster.body["status"]["stableRevision"] == new.rsplit("-", 1)[1]


def _start_rollout(cluster, **spec):
    cluster.kube.add({"apiVersion": "llmops.dev/v1alpha1", "kind": "LLMRollout",
                      "metadata": {"name": "next", "namespace": "default", "creationTimestamp": T0},
                      "spec": {"deploymentName": cluster.key[3], "target": {"model": {"uri": "hf://org/next"}}, **spec}})


def test_blue_green_routes_the_preview_header_to_the_new_revision(samples):
    from tests.schemas import validate

    cluster = Cluster(samples["llmdeployment-mlflow"])  # 3 replicas
    cluster.reconcile(T0)
    (stable,) = cluster.deployments()
    cluster.set_ready(stable, 3)
    _start_rollout(cluster, strategy="blueGreen", analysisDuration="1m")
    cluster.reconcile(T1)
    new = next(n for n in cluster.deployments() if n != stable)
    assert cluster.deployments()[new]["spec"]["replicas"] == 3  # full size before anyone sees it
    vs = cluster.child("VirtualService")
    assert [h["name"] for h in vs["spec"]["http"]] == ["primary"]
    cluster.set_ready(new, 3)
    cluster.reconcile(T1)
    vs = cluster.child("VirtualService")
    preview, primary = vs["spec"]["http"]
    assert preview["match"] == [{"headers": {"x-llmops-preview": {"exact": "true"}}}]
    assert [(r["destination"]["host"].split(".")[0], r["weight"]) for r in preview["route"]] == [("support-assistant-canary", 100)]
    assert [r["weight"] for r in primary["route"]] == [100, 0]  # live traffic untouched
    validate({k: v for k, v in vs.items() if k != "status"})
    canary = cluster.kube.objects[("v1", "Service", vs["metadata"]["namespace"], "support-assistant-canary")]
    assert canary["spec"]["selector"]["llmops.dev/revision"] == new.rsplit("-", 1)[1]


def test_shadow_mirrors_live_traffic_to_the_new_revision(samples):
    from tests.schemas import validate

    cluster = Cluster(samples["llmdeployment-mlflow"])
    cluster.reconcile(T0)
    (stable,) = cluster.deployments()
    cluster.set_ready(stable, 3)
    _start_rollout(cluster, strategy="shadow", mirrorPercent=30)
    cluster.reconcile(T1)
    new = next(n for n in cluster.deployments() if n != stable)
    assert cluster.deployments()[new]["spec"]["replicas"] == 1  # ceil(30% of 3)
    cluster.set_ready(new, 1)
    cluster.reconcile(T1)
    vs = cluster.child("VirtualService")
    (primary,) = vs["spec"]["http"]
    assert primary["mirror"]["host"].startswith("support-assistant-canary.") and primary["mirrorPercentage"] == {"value": 30.0}
    assert [r["weight"] for r in primary["route"]] == [100, 0]
    validate({k: v for k, v in vs.items() if k != "status"})
    (rollout,) = [v for k, v in cluster.kube.objects.items() if k[1] == "LLMRollout"]
    assert (rollout["status"]["mirrorWeight"], rollout["status"]["currentStepIndex"]) == (30, 1)


# ------------------------------------------------------------------ what kube-apiserver stores (issue 13, item 2)


def test_whole_number_and_non_finite_run_metrics_converge(samples):
    """kube-apiserver returns ``3.0`` as ``3`` and refuses NaN (not JSON): a pass must compare the way the server
    stores values (or it rewrites the status on every pass, each write starting the next), and must never send a
    non-finite number (a 400 that would leave the status unwritten for good)."""
    registry = FakeRegistry()
    registry.register("support-assistant", "4", alias="champion",
                      metrics={"accuracy": 1.0, "epochs": 3.0, "loss": float("nan"), "perplexity": float("inf")})
    cluster = Cluster(samples["llmdeployment-mlflow"], registry=registry)
    cluster.reconcile(T0)
    status = cluster.body["status"]
    assert status["model"]["metrics"] == {"accuracy": 1, "epochs": 3}
    resolved = next(c for c in status["conditions"] if c["type"] == "ModelResolved")
    assert resolved["message"].endswith("; left out of status.model, as JSON has no NaN or infinity: metrics.loss=nan, metrics.perplexity=inf")
    for now in (T1, T2):
        plan, writes = cluster.reconcile(now)
        assert writes == [] and plan.events == [], now


@pytest.mark.parametrize("value,stored,notes", [
    (3.0, 3, []),
    (0.0, 0, []),
    (-2.0, -2, []),
    (0.25, 0.25, []),
    (1e21, 1e21, []),  # Go writes 1e+21: it reads back as a float
    (True, True, []),
    ({"a": 1.0, "b": {"c": [2.0, 0.5]}}, {"a": 1, "b": {"c": [2, 0.5]}}, []),
    ({"loss": float("nan"), "acc": 0.9}, {"acc": 0.9}, ["m.loss=nan"]),
    ({"x": [1.5, float("-inf")]}, {"x": [1.5, None]}, ["m.x[1]=-inf"]),
    ({"v": None}, {"v": None}, []),
])
def test_as_stored(value, stored, notes):
    from llm_operator._planner import as_stored

    assert as_stored(value, "m") == (stored, notes)


def test_status_patch_compares_and_sends_what_the_server_stores():
    from llm_operator._reconcile import status_patch

    body = {"metadata": {"resourceVersion": "7"}, "status": {"analysis": {"requests": 500, "value": 0}}}
    assert status_patch(body, {"analysis": {"requests": 500.0, "value": 0.0}}) == []
    ops = status_patch(body, {"analysis": {"requests": 500.0, "value": float("inf")}})
    assert ops == [{"op": "test", "path": "/metadata/resourceVersion", "value": "7"},
                   {"op": "remove", "path": "/status/analysis/value"}]


# ------------------------------------------------------------------ revisions over time (issue 13, items 3 and 4)


def _rollouts(cluster) -> dict[str, dict]:
    return {k[3]: v for k, v in cluster.kube.objects.items() if k[1] == "LLMRollout"}


def _all_ready(cluster):
    for name, dep in cluster.deployments().items():
        cluster.set_ready(name, dep["spec"]["replicas"])


def _edit_and_roll_out(cluster, uri, now):
    """Edit the model and carry the rollout through: create, start (full size, no steps), ready, promote."""
    cluster.edit_spec(model={"uri": uri})
    cluster.reconcile(now)
    cluster.reconcile(now)
    _all_ready(cluster)
    cluster.reconcile(now)
    status = cluster.body["status"]
    assert status["stableRevision"] == status["specRevision"], status
    return status["stableRevision"]


def _serving_a(samples, **rollout):
    """The minimal sample serving its first revision A, ready, under ``spec.rollout`` = ``rollout``: (cluster, A)."""
    doc = copy.deepcopy(samples["llmdeployment-minimal"])
    doc["spec"]["rollout"] = rollout
    cluster = Cluster(doc)
    cluster.reconcile(T0)
    _all_ready(cluster)
    return cluster, cluster.body["status"]["stableRevision"]


def test_returning_to_an_earlier_revision_rolls_it_out_like_a_new_one(samples):
    """A -> B -> C -> B by spec edits: B's first rollout is long finished; going back to B needs a rollout of its own
    (Argo Rollouts re-runs the steps and analysis for an older manifest re-applied), not a 409 and a status that
    claims B while C serves."""
    cluster, a = _serving_a(samples, strategy='none', scaleDownDelaySeconds=0)
    b_rev = _edit_and_roll_out(cluster, "hf://org/model-b", T1)
    c_rev = _edit_and_roll_out(cluster, "hf://org/model-c", T1)
    assert len({a, b_rev, c_rev}) == 3
    cluster.reconcile(T2)  # the previous revisions go (no scale-down delay)
    assert list(cluster.deployments()) == [f"qwen-small-{c_rev}"]

    cluster.edit_spec(model={"uri": "hf://org/model-b"})
    plan, writes = cluster.reconcile(T2)
    assert ("create", "LLMRollout", f"qwen-small-{b_rev}-2") in writes
    assert [e.reason for e in plan.events].count("RolloutCreated") == 1
    cluster.reconcile(T2)  # the new rollout's first pass: B's Deployment again, no traffic yet
    status = cluster.body["status"]
    assert (status["stableRevision"], status["canaryRevision"], status["specRevision"]) == (c_rev, b_rev, b_rev)
    assert next(c for c in status["conditions"] if c["type"] == "Progressing")["reason"] == "RolloutInProgress"
    assert cluster.reconcile(T2)[1] == []  # idempotent: no second create while it waits for pods
    _all_ready(cluster)
    cluster.reconcile(T2)
    status = cluster.body["status"]
    assert status["stableRevision"] == b_rev
    assert _rollouts(cluster)[f"qwen-small-{b_rev}-2"]["status"]["phase"] == "Succeeded"
    assert _rollouts(cluster)[f"qwen-small-{b_rev}"]["status"]["phase"] == "Succeeded"  # the first one, untouched
    assert set(_rollouts(cluster)) == {f"qwen-small-{b_rev}", f"qwen-small-{c_rev}", f"qwen-small-{b_rev}-2"}


def _canary_at_half(samples, **rollout):
    """An LLMDeployment whose rollout to model-b holds at 50% with every pod ready: (cluster, the stable revision)."""
    doc = copy.deepcopy(samples["llmdeployment-minimal"])
    doc["spec"]["rollout"] = {"steps": [{"setWeight": 50}, {"pause": {}}], "analyzeEveryStep": False, **rollout}
    cluster = Cluster(doc)
    cluster.reconcile(T0)
    _all_ready(cluster)
    a = cluster.body["status"]["stableRevision"]
    cluster.edit_spec(model={"uri": "hf://org/model-b"})
    cluster.reconcile(T1)
    cluster.reconcile(T1)
    _all_ready(cluster)
    cluster.reconcile(T1)
    return cluster, a


def test_going_back_to_stable_mid_rollout_supersedes_it(samples):
    """The spec goes back to the stable revision while a rollout to another is in flight: that rollout is aborted
    (Argo Rollouts' fast rollback to the canary's stable), never promoted."""
    cluster, a = _canary_at_half(samples)
    (name, rollout), = _rollouts(cluster).items()
    assert rollout["status"]["canaryWeight"] == 50
    cluster.edit_spec(model={"uri": "hf://Qwen/Qwen2.5-1.5B-Instruct"})
    plan, writes = cluster.reconcile(T2)
    assert _rollouts(cluster)[name]["status"]["phase"] == "Aborted"
    assert b.routes_of(cluster.child("VirtualService")) == b.Routes(100, 0, 0)
    assert not [w for w in writes if w[0] == "create"]
    status = cluster.body["status"]
    assert (status["stableRevision"], status["specRevision"]) == (a, a) and "canaryRevision" not in status


def _injected_503(name):
    from llm_operator._kube import KubeError

    return KubeError("ApiException (503): Service Unavailable", 503)


def test_a_failed_llmrollout_create_is_retried_and_supersedes_the_older_one(samples):
    """A 503 on the LLMRollout create must not record the new spec revision (the next pass would see nothing to
    do, and the older in-flight rollout would go on to promote an outdated revision)."""
    from llm_operator._kube import KubeError

    doc = copy.deepcopy(samples["llmdeployment-minimal"])
    doc["spec"]["rollout"] = {"steps": [{"setWeight": 50}, {"pause": {"duration": "1m"}}], "analyzeEveryStep": False}
    cluster = Cluster(doc)
    cluster.reconcile(T0)
    _all_ready(cluster)
    cluster.edit_spec(model={"uri": "hf://org/model-b"})
    cluster.reconcile(T0)
    cluster.reconcile(T0)
    _all_ready(cluster)
    cluster.reconcile(T0)
    (first, rollout), = _rollouts(cluster).items()
    b_rev = rollout["status"]["toRevision"]
    assert rollout["status"]["canaryWeight"] == 50

    cluster.edit_spec(model={"uri": "hf://org/model-c"})
    cluster.kube.fail[("create", "LLMRollout")] = _injected_503
    with pytest.raises(KubeError):
        cluster.reconcile(T1)
    status = cluster.body["status"]
    degraded = next(c for c in status["conditions"] if c["type"] == "Degraded")
    assert (degraded["status"], degraded["reason"]) == ("True", "ReconcileError") and "503" in degraded["message"]
    assert status["specRevision"] == b_rev  # not the revision nothing was created for
    assert status["observedGeneration"] == 3  # the spec was seen; the condition says what failed

    del cluster.kube.fail[("create", "LLMRollout")]
    plan, writes = cluster.reconcile("2026-11-21T10:01:10Z")  # B's pause is over: without the fix, B is promoted here
    (second,) = set(_rollouts(cluster)) - {first}
    assert ("create", "LLMRollout", second) in writes
    assert _rollouts(cluster)[first]["status"]["phase"] == "Aborted"  # superseded, never promoted
    assert "RevisionPromoted" not in [e.reason for e in plan.events]
    status = cluster.body["status"]
    assert status["stableRevision"] != b_rev and status["specRevision"] == _rollouts(cluster)[second]["metadata"]["labels"]["llmops.dev/revision"]
    assert next(c for c in status["conditions"] if c["type"] == "Degraded")["status"] == "False"


def test_a_failed_supersession_write_is_caught_by_the_next_pass(samples):
    """Supersession is level-based: an operator-made rollout whose revision the spec no longer names is aborted on
    any pass, so one whose status write failed once cannot resume later and promote an outdated revision."""
    from llm_operator._kube import KubeError

    doc = copy.deepcopy(samples["llmdeployment-minimal"])
    doc["spec"]["rollout"] = {"steps": [{"setWeight": 50}, {"pause": {}}], "analyzeEveryStep": False}
    cluster = Cluster(doc)
    cluster.reconcile(T0)
    _all_ready(cluster)
    cluster.edit_spec(model={"uri": "hf://org/model-b"})
    cluster.reconcile(T0)
    cluster.reconcile(T0)
    (first,) = _rollouts(cluster)
    cluster.edit_spec(model={"uri": "hf://org/model-c"})
    cluster.kube.fail[("status", "LLMRollout")] = lambda name: _injected_503(name) if name == first else None
    with pytest.raises(KubeError):
        cluster.reconcile(T1)
    assert _rollouts(cluster)[first]["status"]["phase"] == "Progressing"
    del cluster.kube.fail[("status", "LLMRollout")]
    cluster.reconcile(T1)
    assert _rollouts(cluster)[first]["status"]["phase"] == "Aborted"
    assert len(_rollouts(cluster)) == 2


def test_a_registry_outage_mid_rollout_starts_and_supersedes_nothing(samples):
    """While the registry cannot say which version the alias names, the version held is the stable one: that is
    not the spec going back to stable, so the rollout in flight goes on."""
    registry = FakeRegistry()
    good = {"accuracy": 0.91, "hallucination_rate": 0.04}
    registry.register("support-assistant", "4", alias="champion", metrics=good)
    doc = copy.deepcopy(samples["llmdeployment-mlflow"])
    doc["spec"].update(replicas=1)
    doc["spec"]["rollout"].update(steps=[{"setWeight": 50}, {"pause": {}}], analyzeEveryStep=False)
    cluster = Cluster(doc, registry=registry)
    cluster.reconcile(T0)
    _all_ready(cluster)
    registry.register("support-assistant", "5", alias="champion", metrics=good)
    cluster.reconcile(T1)
    cluster.reconcile(T1)
    _all_ready(cluster)
    cluster.reconcile(T1)
    (name, rollout), = _rollouts(cluster).items()
    assert rollout["status"]["canaryWeight"] == 50
    registry.down = True
    plan, writes = cluster.reconcile(T2)
    assert _rollouts(cluster)[name]["status"]["phase"] == "Paused" and not [w for w in writes if w[0] == "create"]
    registry.down = False
    plan, writes = cluster.reconcile(T2)
    assert _rollouts(cluster)[name]["status"]["phase"] == "Paused" and not [w for w in writes if w[0] == "create"]
    assert b.routes_of(cluster.child("VirtualService")) == b.Routes(50, 50, 0)


def test_returning_to_the_previous_revision_within_its_delay_reuses_its_pods(samples):
    """B replaced A a minute ago (A kept for scaleDownDelaySeconds); the spec goes back to A: A's ready pods are the
    canary (no new pods, no pods lost under its traffic), listed as the canary rather than the previous revision."""
    cluster, a = _serving_a(samples, strategy='none')
    b_rev = _edit_and_roll_out(cluster, "hf://org/model-b", T1)
    assert cluster.body["status"]["previousRevision"] == a
    cluster.kube.objects[cluster.key]["spec"]["rollout"] = {"steps": [{"setWeight": 50}, {"pause": {}}], "analyzeEveryStep": False}
    cluster.edit_spec(model={"uri": "hf://Qwen/Qwen2.5-1.5B-Instruct"})
    cluster.reconcile(T2)  # creates the rollout back to A
    plan, writes = cluster.reconcile(T2)  # A's pods are ready: 50% at once, then the pause
    assert b.routes_of(cluster.child("VirtualService")) == b.Routes(50, 50, 0)
    status = cluster.body["status"]
    assert (status["stableRevision"], status["canaryRevision"]) == (b_rev, a) and "previousRevision" not in status
    assert [(r["revision"], r["role"]) for r in status["revisions"]] == [(b_rev, "stable"), (a, "canary")]
    for now in (T2, "2026-11-21T10:10:00Z"):  # past A's old scale-down time too
        plan, writes = cluster.reconcile(now)
        assert writes == [] and cluster.deployments()[f"qwen-small-{a}"]["spec"]["replicas"] == 1


# ------------------------------------------------------------------ healthy only when the spec serves (issue 13, item 11)


def _conditions(cluster) -> dict[str, tuple[str, str, str]]:
    return {c["type"]: (c["status"], c["reason"], c["message"]) for c in cluster.body["status"]["conditions"]}


def _rollout_spec(cluster, name, **fields):
    obj = cluster.kube.objects[("llmops.dev/v1alpha1", "LLMRollout", cluster.key[2], name)]
    obj["spec"].update(fields)
    obj["metadata"]["generation"] += 1


def test_an_aborted_rollout_leaves_the_deployment_degraded_until_the_spec_serves(samples):
    """After an abort the stable revision serves, Ready stays True, but the spec's model is not what serves: Degraded
    (reason RolloutAborted, naming both revisions), as Argo Rollouts reports an aborted Rollout, so Argo CD does
    not show Healthy. A retry clears it."""
    cluster, a = _serving_a(samples, steps=[{'setWeight': 50}, {'pause': {}}], analyzeEveryStep=False)
    cluster.edit_spec(model={"uri": "hf://org/model-b"})
    cluster.reconcile(T1)
    (name,) = _rollouts(cluster)
    b_rev = cluster.body["status"]["specRevision"]
    assert _conditions(cluster)["Progressing"][:2] == ("True", "RolloutPending")  # created, not started yet
    cluster.reconcile(T1)
    _all_ready(cluster)
    cluster.reconcile(T1)
    assert _conditions(cluster)["Progressing"][:2] == ("True", "RolloutInProgress")

    _rollout_spec(cluster, name, abort=True)
    plan, _ = cluster.reconcile(T2)
    conditions = _conditions(cluster)
    assert conditions["Ready"][:2] == ("True", "Available")  # stable serves
    status, reason, message = conditions["Degraded"]
    assert (status, reason) == ("True", "RolloutAborted")
    assert message.startswith(f"revision {a} serves, not the spec's revision {b_rev}: LLMRollout {name} aborted (AbortedByUser)")
    assert conditions["Progressing"][:2] == ("False", "RolloutAborted")
    assert [e.reason for e in plan.events if e.about is None and e.type == "Warning"] == ["RolloutAborted"]
    cluster.reconcile("2026-11-21T10:03:00Z")  # the canary's pods go after the abort delay
    plan, writes = cluster.reconcile("2026-11-21T10:04:00Z")
    assert writes == [] and _conditions(cluster)["Degraded"][:2] == ("True", "RolloutAborted")

    _rollout_spec(cluster, name, abort=False, retry=1)
    cluster.reconcile("2026-11-21T10:05:00Z")
    conditions = _conditions(cluster)
    assert conditions["Degraded"][:2] == ("False", "AsExpected")
    assert conditions["Progressing"][:2] == ("True", "RolloutInProgress")


def test_a_failed_rollout_leaves_the_deployment_degraded(samples):
    doc = copy.deepcopy(samples["llmdeployment-minimal"])
    doc["spec"]["rollout"] = {"strategy": "none", "progressDeadlineSeconds": 600}
    cluster = Cluster(doc)
    cluster.reconcile(T0)
    _all_ready(cluster)
    cluster.edit_spec(model={"uri": "hf://org/model-b"})
    cluster.reconcile(T1)
    cluster.reconcile(T1)  # waits for the new revision's pods, which never become ready
    cluster.reconcile("2026-11-21T10:12:00Z")
    status, reason, message = _conditions(cluster)["Degraded"]
    assert (status, reason) == ("True", "RolloutFailed") and "(ProgressDeadlineExceeded)" in message
    cluster.edit_spec(model={"uri": "hf://Qwen/Qwen2.5-1.5B-Instruct"})  # back to what serves
    cluster.reconcile("2026-11-21T10:13:00Z")
    assert _conditions(cluster)["Degraded"][:2] == ("False", "AsExpected")


# ------------------------------------------------------------------ deleting an in-flight LLMRollout (issue 13, item 12)


@pytest.mark.parametrize("how", ["deleted", "being deleted"])
def test_deleting_an_in_flight_rollout_routes_back_then_waits_then_scales_down(samples, how):
    """As for an abort: routes to stable first, the canary's pods kept for abortScaleDownDelaySeconds while the
    proxies converge (deleting them in the same pass as the weight change gives 503s), then deleted."""
    cluster, a = _canary_at_half(samples, abortScaleDownDelaySeconds=30)
    (name,) = _rollouts(cluster)
    canary = f"qwen-small-{cluster.body['status']['canaryRevision']}"
    assert b.routes_of(cluster.child("VirtualService")) == b.Routes(50, 50, 0)
    key = ("llmops.dev/v1alpha1", "LLMRollout", "default", name)
    if how == "deleted":
        del cluster.kube.objects[key]
    else:  # a finalizer someone else put on it holds the object
        cluster.kube.objects[key]["metadata"]["deletionTimestamp"] = T2

    plan, writes = cluster.reconcile(T2)
    assert ("apply", "VirtualService", "qwen-small") in writes and not [w for w in writes if w[0] == "delete"]
    assert b.routes_of(cluster.child("VirtualService")) == b.Routes(100, 0, 0)
    assert canary in cluster.deployments()
    status = cluster.body["status"]
    assert status["draining"] == [{"revision": canary.rsplit("-", 1)[1], "scaleDownAt": "2026-11-21T10:02:30Z"}]
    assert "canaryRevision" not in status and status["stableRevision"] == a
    # Make before break: the weight leaves the canary Service in this pass; its selector follows in the next.
    assert ("apply", "Service", "qwen-small-canary") not in writes and plan.requeue_after == 1.0
    assert ("Warning", "RolloutDeleted") in [(e.type, e.reason) for e in plan.events]
    degraded = _conditions(cluster)["Degraded"]  # the spec's model is not what serves (issue 13, item 11)
    assert degraded[:2] == ("True", "RolloutDeleted") and f"LLMRollout {name} was deleted" in degraded[2]
    plan, writes = cluster.reconcile("2026-11-21T10:02:01Z")
    assert writes == [("apply", "Service", "qwen-small-canary")] and plan.requeue_after == 29
    assert cluster.kube.get("v1", "Service", "default", "qwen-small-canary")["spec"]["selector"]["llmops.dev/revision"] == a
    plan, writes = cluster.reconcile("2026-11-21T10:02:20Z")
    assert writes == [] and plan.requeue_after == 10
    plan, writes = cluster.reconcile("2026-11-21T10:02:31Z")
    assert writes == [("delete", "Deployment", canary), ("status", "LLMDeployment", "qwen-small")]
    assert "draining" not in cluster.body["status"]
    assert cluster.reconcile("2026-11-21T10:03:00Z")[1] == []
    assert _conditions(cluster)["Degraded"][:2] == ("True", "RolloutDeleted")
    cluster.edit_spec(model={"uri": "hf://Qwen/Qwen2.5-1.5B-Instruct"})
    cluster.reconcile("2026-11-21T10:04:00Z")
    assert _conditions(cluster)["Degraded"][:2] == ("False", "AsExpected")


# ------------------------------------------------------------------ the HPA capacity cliff (issue 13, item 14)


def _hpa_min(cluster) -> int:
    return cluster.child("HorizontalPodAutoscaler")["spec"]["minReplicas"]


def _hpa_scales(cluster, revision: str, replicas: int):
    """What the HPA does to the Deployment it targets: set its replicas (all ready, for the test)."""
    dep = cluster.deployments()[f"llama-70b-{revision}"]
    dep["spec"]["replicas"] = replicas
    cluster.set_ready(dep["metadata"]["name"], replicas)


def test_stable_keeps_the_size_that_takes_traffic_back_and_the_promoted_revision_gets_it(samples):
    """4 replicas carry all the traffic; with 50% on the canary the HPA (which sees only stable's pods) would shrink
    stable. It may not go below 4 while the canary runs (an abort sends it everything back), and the promoted
    revision is sized 4 before it takes 100%, not the 2 the HPA left stable with (Argo Rollouts' default: stable
    left at full size during the update)."""
    doc = copy.deepcopy(samples["llmdeployment-multigpu"])  # HPA 2..6
    doc["spec"]["rollout"] = {"steps": [{"setWeight": 50}, {"pause": {}}], "analyzeEveryStep": False}
    cluster = Cluster(doc)
    cluster.reconcile(T0)
    stable = cluster.body["status"]["stableRevision"]
    _hpa_scales(cluster, stable, 4)  # the load needs 4
    cluster.reconcile(T0)
    assert _hpa_min(cluster) == 2

    cluster.edit_spec(model={"uri": "s3://models/meta-llama/Llama-3.1-70B-Instruct-AWQ-v2"})
    cluster.reconcile(T1)
    cluster.reconcile(T1)  # the canary is created: 50% of 4 is 2 pods; stable may not shrink below 4 from now on
    canary = cluster.body["status"]["canaryRevision"]
    assert _hpa_min(cluster) == 4
    _hpa_scales(cluster, canary, 2)
    cluster.reconcile(T1)
    assert b.routes_of(cluster.child("VirtualService")).canary_weight == 50
    assert _hpa_min(cluster) == 4  # held while the canary carries traffic
    assert "stable kept at >= 4 replicas" in _conditions(cluster)["Progressing"][2]
    _hpa_scales(cluster, stable, 2)  # had the HPA shrunk it anyway (as it did without a floor)
    cluster.reconcile(T1)
    assert _hpa_min(cluster) == 4

    (name,) = _rollouts(cluster)
    _rollout_spec(cluster, name, promote=True)
    cluster.reconcile(T2)
    assert cluster.deployments()[f"llama-70b-{canary}"]["spec"]["replicas"] == 4  # sized for all the traffic first
    assert cluster.body["status"]["stableRevision"] == stable  # not promoted on 2 ready pods
    _hpa_scales(cluster, canary, 4)
    cluster.reconcile(T2)
    status = cluster.body["status"]
    assert status["stableRevision"] == canary
    assert cluster.deployments()[f"llama-70b-{canary}"]["spec"]["replicas"] == 4
    hpa = cluster.child("HorizontalPodAutoscaler")
    assert (hpa["spec"]["scaleTargetRef"]["name"], hpa["spec"]["minReplicas"]) == (f"llama-70b-{canary}", 2)  # the HPA's again


def test_the_floor_is_lifted_when_the_rollout_aborts(samples):
    doc = copy.deepcopy(samples["llmdeployment-multigpu"])
    doc["spec"]["rollout"] = {"steps": [{"setWeight": 50}, {"pause": {}}], "analyzeEveryStep": False}
    cluster = Cluster(doc)
    cluster.reconcile(T0)
    stable = cluster.body["status"]["stableRevision"]
    _hpa_scales(cluster, stable, 5)
    cluster.edit_spec(model={"uri": "s3://models/meta-llama/Llama-3.1-70B-Instruct-AWQ-v2"})
    cluster.reconcile(T1)
    cluster.reconcile(T1)
    _hpa_scales(cluster, cluster.body["status"]["canaryRevision"], 3)
    cluster.reconcile(T1)
    assert _hpa_min(cluster) == 5
    (name,) = _rollouts(cluster)
    _rollout_spec(cluster, name, abort=True)
    cluster.reconcile(T2)
    assert b.routes_of(cluster.child("VirtualService")) == b.Routes(100, 0, 0)
    assert cluster.deployments()[f"llama-70b-{stable}"]["spec"]["replicas"] == 5  # ready to take it all back
    assert _hpa_min(cluster) == 2


def test_a_json_patch_that_no_longer_applies_is_a_conflict_as_kube_apiserver_says_it():
    """kube-apiserver answers a failed `test` (the resourceVersion guard on status writes) with a bare 422 and no
    causes; read as an error, a concurrent write looked like a failed pass (seen on the real control plane). A
    422 naming field causes is a real error."""
    import json as _json

    from llm_operator._kube import json_patch_not_applicable

    class ApiError(Exception):
        def __init__(self, status, body):
            self.status, self.body = status, _json.dumps(body)

    generic = {"kind": "Status", "status": "Failure", "reason": "Invalid", "details": {}, "code": 422,
               "message": "the server rejected our request due to an error in our request"}
    fields = {**generic, "message": "LLMDeployment.llmops.dev x is invalid: status.replicas: Invalid value",
              "details": {"causes": [{"reason": "FieldValueInvalid", "field": "status.replicas"}]}}
    assert json_patch_not_applicable(ApiError(422, generic))
    assert not json_patch_not_applicable(ApiError(422, fields))
    assert not json_patch_not_applicable(ApiError(409, {**generic, "code": 409}))


def _applies(plan):
    return [(a.obj["kind"], a.obj["metadata"]["name"]) for a in plan.actions if isinstance(a, Apply)]


def test_a_newer_rollout_mid_canary_moves_the_weight_before_it_repoints_the_canary_service(samples):
    """Make before break (review finding): a newer LLMRollout takes over while 50% of traffic is on the canary. The
    canary Service must not select the new, not-yet-ready revision while the VirtualService still sends it half the
    traffic: this pass moves the weight to stable, the next re-points the Service."""
    doc = copy.deepcopy(samples["llmdeployment-minimal"])
    doc["spec"]["rollout"] = {"steps": [{"setWeight": 50}, {"pause": {}}], "analyzeEveryStep": False}
    cluster = Cluster(doc)
    cluster.reconcile(T0)
    (old,) = cluster.deployments()
    cluster.set_ready(old, 1)
    cluster.reconcile(T0)
    cluster.edit_spec(model={"uri": "hf://Qwen/Qwen2.5-3B-Instruct"})
    cluster.reconcile(T1)
    cluster.reconcile(T1)
    canary = next(n for n in cluster.deployments() if n != old)
    cluster.set_ready(canary, 1)
    cluster.reconcile(T1)
    assert b.routes_of(cluster.child("VirtualService")) == b.Routes(50, 50, 0)
    cluster.kube.add({"apiVersion": "llmops.dev/v1alpha1", "kind": "LLMRollout",
                      "metadata": {"name": "manual", "namespace": "default", "creationTimestamp": "2026-11-21T10:01:30Z",
                                   "uid": "m", "generation": 1},
                      "spec": {"deploymentName": doc["metadata"]["name"], "target": {"model": {"uri": "hf://org/other"}}}})
    plan, _ = cluster.reconcile(T2)
    assert ("VirtualService", "qwen-small") in _applies(plan) and ("Service", "qwen-small-canary") not in _applies(plan)
    assert b.routes_of(cluster.child("VirtualService")) == b.Routes(100, 0, 0)
    served = cluster.kube.get("v1", "Service", "default", "qwen-small-canary")["spec"]["selector"]["llmops.dev/revision"]
    assert served == canary.rsplit("-", 1)[1] and plan.requeue_after == 1.0  # still the ready revision
    plan, _ = cluster.reconcile("2026-11-21T10:02:01Z")
    assert ("Service", "qwen-small-canary") in _applies(plan)  # weight 0 now: safe to re-point


def test_an_upgrade_from_subset_routing_moves_the_virtual_service_before_the_subsets_go(samples):
    """Make before break (review finding): the release before routed to DestinationRule subsets. The first pass of
    this one switches the VirtualService to the Services but keeps the subsets it was using; the next drops them."""
    doc = copy.deepcopy(samples["llmdeployment-minimal"])
    cluster = Cluster(doc)
    cluster.reconcile(T0)
    vs = cluster.child("VirtualService")
    host = vs["spec"]["http"][0]["route"][0]["destination"]["host"]
    rev = next(iter(cluster.deployments())).rsplit("-", 1)[1]
    for i, role in enumerate(("stable", "canary")):  # as the previous release wrote them
        vs["spec"]["http"][0]["route"][i]["destination"] = {"host": host, "subset": role, "port": {"number": 8000}}
    dr = cluster.kube.objects[("networking.istio.io/v1", "DestinationRule", "default", "qwen-small")]
    dr["spec"]["subsets"] = [{"name": n, "labels": {"llmops.dev/revision": rev}} for n in ("stable", "canary")]
    for obj in (vs, dr):
        obj["metadata"]["annotations"]["llmops.dev/applied-hash"] = "previous-release"
    plan, _ = cluster.reconcile(T1)
    assert ("VirtualService", "qwen-small") in _applies(plan) and ("DestinationRule", "qwen-small") not in _applies(plan)
    assert cluster.kube.get("networking.istio.io/v1", "DestinationRule", "default", "qwen-small")["spec"]["subsets"]
    plan, _ = cluster.reconcile("2026-11-21T10:01:01Z")
    assert ("DestinationRule", "qwen-small") in _applies(plan)
    assert "subsets" not in cluster.kube.get("networking.istio.io/v1", "DestinationRule", "default", "qwen-small")["spec"]


def test_a_recreated_llmdeployment_adopts_its_orphaned_children(samples):
    """The owner reference is added when an apply is executed, so the comparison with the live child never saw it:
    after `kubectl delete --cascade=orphan` and a re-create, the new object never owned its children (found writing
    the e2e test). A child not controlled by this object's uid is applied again."""
    cluster = Cluster(samples["llmdeployment-minimal"])
    cluster.reconcile(T0)
    for (_, kind, _, _), obj in cluster.kube.objects.items():
        if kind != "LLMDeployment":
            obj["metadata"].pop("ownerReferences", None)  # orphaned by the garbage collector
    cluster.kube.objects[cluster.key]["metadata"]["uid"] = "recreated"
    plan, writes = cluster.reconcile(T1)
    children = {(kind, name) for (_, kind, _, name) in cluster.kube.objects if kind not in ("LLMDeployment", "Event")}
    assert {(w[1], w[2]) for w in writes if w[0] == "apply"} == children
    assert all(o["metadata"]["ownerReferences"][0]["uid"] == "recreated" for (_, kind, _, _), o in cluster.kube.objects.items()
               if kind not in ("LLMDeployment", "Event"))
    assert cluster.reconcile(T2)[1] == []  # and then nothing more


def test_finished_rollouts_beyond_the_history_limit_are_deleted_oldest_first(samples):
    """spec.rollout.historyLimit: the operator's own finished LLMRollouts beyond the limit go, once nothing needs
    them; people's LLMRollouts and the one toward the spec's revision stay (issue 15)."""
    doc = copy.deepcopy(samples["llmdeployment-minimal"])
    doc["spec"]["rollout"] = {"strategy": "none", "scaleDownDelaySeconds": 0, "historyLimit": 1}
    cluster = Cluster(doc)
    cluster.reconcile(T0)
    _all_ready(cluster)
    people = {"apiVersion": "llmops.dev/v1alpha1", "kind": "LLMRollout",
              "metadata": {"name": "by-hand", "namespace": "default"},
              "spec": {"deploymentName": "qwen-small", "target": {"model": {"uri": "hf://org/other"}}, "abort": True},
              "status": {"phase": "Aborted", "finishedAt": "2026-11-21T09:00:00Z", "toRevision": "0000000000"}}
    cluster.kube.create(people)
    b_rev = _edit_and_roll_out(cluster, "hf://org/model-b", T1)
    c_rev = _edit_and_roll_out(cluster, "hf://org/model-c", T1)  # c's done: b's is beyond the limit of 1
    cluster.reconcile(T2)  # the pass that reads c's rollout finished
    assert set(_rollouts(cluster)) == {f"qwen-small-{c_rev}", "by-hand"}
    assert ("delete", "LLMRollout", f"qwen-small-{b_rev}") in cluster.kube.writes
    assert any(e.reason == "Deleted" and f"LLMRollout qwen-small-{b_rev}" in e.message for e in cluster.events)
    d_rev = _edit_and_roll_out(cluster, "hf://org/model-d", T1)
    cluster.reconcile(T2)
    assert set(_rollouts(cluster)) == {f"qwen-small-{d_rev}", "by-hand"}  # people's LLMRollout is never touched
    assert cluster.reconcile(T2)[1] == []  # converged


def test_history_keeps_what_still_matters():
    """The pure rule: never a rollout still running or retried, one whose outcome the registry lacks, one toward the
    spec's revision, or one whose pods still drain."""
    def auto(name, created, phase="Succeeded", revision=None, **status):
        return {"metadata": {"name": name, "namespace": "default", "creationTimestamp": created,
                             "labels": {p.AUTO_LABEL: "llm-operator", "llmops.dev/revision": revision or name}},
                "spec": {"target": {"model": {"version": name[-1]}}}, "status": {"phase": phase, **status}}
    ref = MlflowModelRef.model_validate({"name": "m", "alias": "champion"})
    recorded = {"finishedAt": "t", "registry": {"outcome": "succeeded", "recordedAt": "t"}}
    rollouts = [
        auto("r1", "2026-01-01T00:00:01Z", **recorded),
        auto("r2", "2026-01-01T00:00:02Z", finishedAt="t"),  # outcome not written back yet
        auto("r3", "2026-01-01T00:00:03Z", phase="Aborted", toRevision="r3", finishedAt="t",
             registry={"outcome": "aborted", "recordedAt": "t"}),  # still draining
        auto("r4", "2026-01-01T00:00:04Z", revision="spec", **recorded),  # toward the spec's revision
        auto("r5", "2026-01-01T00:00:05Z", phase="Progressing"),
        auto("r6", "2026-01-01T00:00:06Z", **recorded),
        auto("r7", "2026-01-01T00:00:07Z", **recorded),
    ]
    names = lambda out: [r["metadata"]["name"] for r in out]  # noqa: E731
    assert names(p.pruned(rollouts, 2, {"spec", "r3"}, ref)) == ["r1"]  # r7, r6 within the limit
    assert names(p.pruned(rollouts, 0, {"spec"}, ref)) == ["r1", "r3", "r6", "r7"]
    assert names(p.pruned(rollouts, 0, {"spec"}, None)) == ["r1", "r2", "r3", "r6", "r7"]  # no registry to wait for


def test_history_in_one_second_keeps_the_rollout_toward_the_spec_revision_as_the_newest():
    """creationTimestamp has whole seconds: three model edits in one second (seen in CI) gave three rollouts of equal
    creation time, the name (a revision hash) broke the tie, and with limit 1 the older "zzz" was kept by the limit
    beside the protected current "aaa": neither deleted, ever. The rollout toward the spec's revision is the newest."""
    def auto(name, revision):
        return {"metadata": {"name": name, "namespace": "default", "creationTimestamp": "2026-01-01T00:00:01Z",
                             "labels": {p.AUTO_LABEL: "llm-operator", "llmops.dev/revision": revision}},
                "spec": {}, "status": {"phase": "Succeeded", "toRevision": revision, "finishedAt": "t"}}
    rollouts = [auto("qwen-small-zzz", "c"), auto("qwen-small-aaa", "d"), auto("qwen-small-mmm", "b")]
    out = p.pruned(rollouts, 1, {"d"}, None, current="d")
    assert sorted(r["metadata"]["name"] for r in out) == ["qwen-small-mmm", "qwen-small-zzz"]
    assert p.pruned(rollouts, 1, {"d"}, None) == [rollouts[2]]  # without ``current``: the name decides, "zzz" stays


def test_history_tie_break_never_pushes_out_newer_rollouts():
    """Review: B (t1), C (t2), back to B (t3) with limit 2 keeps all three (B's are protected, C is within the limit:
    `kubectl llm rollback --to-revision C` finds it); ``current`` breaks ties of one second only."""
    def auto(name, created, revision):
        return {"metadata": {"name": name, "namespace": "default", "creationTimestamp": created,
                             "labels": {p.AUTO_LABEL: "llm-operator", "llmops.dev/revision": revision}},
                "spec": {}, "status": {"phase": "Succeeded", "toRevision": revision, "finishedAt": "t"}}
    rollouts = [auto("x", "2026-01-01T00:00:01Z", "b"), auto("y", "2026-01-01T00:00:02Z", "c"), auto("z", "2026-01-01T00:00:03Z", "b")]
    assert p.pruned(rollouts, 2, {"b"}, None, current="b") == []


def test_kubectl_llm_rollback_brings_the_previous_revision_back_on_its_warm_pods(samples):
    """issue 16: after B replaced A, the rollback's LLMRollout (strategy none) makes A stable again on the pods kept
    for scaleDownDelaySeconds (no new Deployment), starts no rollout for the spec's B, and says so: Degraded
    RolledBack until the spec names A (or something new)."""
    from llm_operator._plugin import rollback_rollout

    cluster, a = _serving_a(samples, strategy='none', scaleDownDelaySeconds=600)
    b_rev = _edit_and_roll_out(cluster, "hf://org/model-b", T1)
    assert cluster.body["status"]["previousRevision"] == a
    rollback = rollback_rollout(cluster.body, list(_rollouts(cluster).values()))
    assert rollback["metadata"]["name"] == f"qwen-small-rollback-{a}"
    assert rollback["spec"] == {"deploymentName": "qwen-small", "target": {"model": {"uri": "hf://Qwen/Qwen2.5-1.5B-Instruct"}},
                                "strategy": "none"}
    cluster.kube.create(rollback)
    before = set(cluster.deployments())
    cluster.reconcile(T1)
    cluster.reconcile(T1)
    status = cluster.body["status"]
    assert status["stableRevision"] == a and set(cluster.deployments()) <= before  # A's warm pods, no new Deployment
    assert _rollouts(cluster)[rollback["metadata"]["name"]]["status"]["phase"] == "Succeeded"
    degraded = next(c for c in status["conditions"] if c["type"] == "Degraded")
    assert (degraded["status"], degraded["reason"]) == ("True", "RolledBack")
    assert f"revision {a} serves, not the spec's revision {b_rev}" in degraded["message"]
    assert len(_rollouts(cluster)) == 2  # no new rollout for the spec's B
    assert cluster.reconcile(T2)[1] == []  # converged
    cluster.edit_spec(model={"uri": "hf://Qwen/Qwen2.5-1.5B-Instruct"})  # the spec names A again
    cluster.reconcile(T2)
    degraded = next(c for c in cluster.body["status"]["conditions"] if c["type"] == "Degraded")
    assert degraded["status"] == "False"


def test_a_registry_outage_prunes_nothing_and_keeps_the_rollout_that_explains_degraded(samples):
    """Found by review: with historyLimit 0, a pass during a registry outage (its target the held stable model)
    deleted the Failed rollout toward the spec's revision, and once the registry was back the LLMDeployment
    reported AsExpected although the spec's version never served."""
    registry = FakeRegistry()
    registry.register("chat", "1", metrics={"accuracy": 0.9}, alias="champion")
    registry.register("chat", "2", metrics={"accuracy": 0.5})
    doc = copy.deepcopy(samples["llmdeployment-minimal"])
    doc["spec"]["model"] = {"mlflow": {"name": "chat", "alias": "champion"}}
    doc["spec"]["rollout"] = {"historyLimit": 0, "qualityGate": [{"metric": "accuracy", "min": 0.8}]}
    cluster = Cluster(doc, registry=registry)
    cluster.reconcile(T0)
    _all_ready(cluster)
    cluster.reconcile(T0)
    registry.aliases["chat"]["champion"] = "2"
    for _ in range(4):
        cluster.reconcile(T1)

    def degraded():
        return next((c["status"], c["reason"]) for c in cluster.body["status"]["conditions"] if c["type"] == "Degraded")

    assert len(_rollouts(cluster)) == 1 and degraded() == ("True", "RolloutFailed")
    registry.down = True
    cluster.reconcile(T2)
    registry.down = False
    for _ in range(3):
        cluster.reconcile("2026-11-21T10:05:00Z")
    assert len(_rollouts(cluster)) == 1 and degraded() == ("True", "RolloutFailed")


def _rolling_to_b(doc, metrics):
    """``doc`` (two replicas) serving revision A, ready; then a model edit, its LLMRollout created and started at
    10:01: (the cluster, A, B)."""
    cluster = Cluster(doc, metrics=metrics)
    cluster.reconcile(T0)
    a = cluster.body["status"]["stableRevision"]
    cluster.set_ready(f"qwen-small-{a}", 2)
    cluster.reconcile(T0)
    cluster.edit_spec(model={"uri": "hf://org/model-b"})
    cluster.reconcile("2026-11-21T10:01:00Z")  # the LLMRollout created
    cluster.reconcile("2026-11-21T10:01:00Z")  # and started
    return cluster, a, _rollout_status(cluster)["toRevision"]


def _bake_cluster(samples):
    """Two replicas on revision A, then a model edit rolled out by setWeight 50 and a 10-minute bake; the metrics
    answer for each revision from ``errors`` (errors per 1,000 requests)."""
    doc = copy.deepcopy(samples["llmdeployment-minimal"])
    doc["spec"]["replicas"] = 2
    doc["spec"]["rollout"] = {"steps": [{"setWeight": 50}], "analyzeEveryStep": False, "bakeDuration": "10m",
                              "scaleDownDelaySeconds": 60, "abortScaleDownDelaySeconds": 30,
                              "analysis": {"interval": "30s", "minRequests": 10,
                                           "metrics": [{"name": "errors", "builtin": "errorRatio", "max": 0.01}]}}
    errors: dict[str, float] = {}

    def answer(promql):
        if "request_success_total" not in promql:
            return None
        rev = next((r for r in errors if f'llmops_dev_revision="{r}"' in promql), None)
        if rev is None:
            return None
        return errors[rev] if 'finished_reason="error"' in promql else 1000.0
    cluster, a, bad = _rolling_to_b(doc, FakeMetrics(answer))
    errors.update({a: 0.0, bad: 0.0})
    cluster.set_ready(f"qwen-small-{bad}", 2)
    cluster.reconcile("2026-11-21T10:01:10Z")  # setWeight 50 routed, and the switch (2 ready: full size)
    return cluster, errors, a, bad


def _rollout_status(cluster):
    (rollout,) = cluster.kube.list("llmops.dev/v1alpha1", "LLMRollout", "default", "")
    return rollout["status"]


def test_a_failed_bake_rolls_back_routes_first_and_keeps_the_new_revision_draining(samples):
    cluster, errors, a, bad = _bake_cluster(samples)
    status = _rollout_status(cluster)
    assert status["phase"] == "Progressing" and status["bake"]["previousRevision"] == a, status
    body = cluster.body["status"]
    assert body["stableRevision"] == bad and body["previousRevision"] == a
    assert body["previousScaleDownAt"] == "2026-11-21T10:12:10Z"  # switched 10:01:10, bake 10 min + scaleDownDelaySeconds 60
    assert set(cluster.deployments()) == {f"qwen-small-{a}", f"qwen-small-{bad}"}  # A kept warm
    cluster.reconcile("2026-11-21T10:01:55Z")  # a run on the new stable: healthy
    assert _rollout_status(cluster)["analysis"]["verdict"] == "Pass"
    errors[bad] = 300.0  # the regression shows only after promotion
    plan, writes = cluster.reconcile("2026-11-21T10:02:30Z")
    status = _rollout_status(cluster)
    assert status["phase"] == "Aborted" and "rolled back: all traffic on " + a in status["message"]
    assert cluster.body["status"]["stableRevision"] == a
    service = cluster.kube.get("v1", "Service", "default", "qwen-small")
    assert service["spec"]["selector"]["llmops.dev/revision"] == a  # what clients call selects A again
    kinds = [w[1] for w in writes]
    assert kinds.index("Service") < kinds.index("LLMDeployment"), writes  # routes first, then the status
    assert f"qwen-small-{bad}" in cluster.deployments()  # drains abortScaleDownDelaySeconds
    assert {"RolledBack", "RevisionRolledBack"} <= {e.reason for e in cluster.events}
    cluster.reconcile("2026-11-21T10:03:10Z")
    assert f"qwen-small-{bad}" not in cluster.deployments() and f"qwen-small-{a}" in cluster.deployments()
    degraded = next(c for c in cluster.body["status"]["conditions"] if c["type"] == "Degraded")
    assert (degraded["status"], degraded["reason"]) == ("True", "RolloutAborted")


def test_a_passed_bake_succeeds_at_its_end_and_the_previous_revision_goes_after_the_scale_down_delay(samples):
    cluster, errors, a, bad = _bake_cluster(samples)
    cluster.reconcile("2026-11-21T10:05:00Z")
    assert _rollout_status(cluster)["phase"] == "Progressing"
    cluster.reconcile("2026-11-21T10:11:10Z")
    status = _rollout_status(cluster)
    assert status["phase"] == "Succeeded" and "bake passed" in status["message"], status
    assert f"qwen-small-{a}" in cluster.deployments()  # until previousScaleDownAt, 10:12:10
    cluster.reconcile("2026-11-21T10:12:11Z")
    assert set(cluster.deployments()) == {f"qwen-small-{bad}"}


def _edit_rollout(cluster, **spec):
    (key,) = [k for k in cluster.kube.objects if k[1] == "LLMRollout"]
    cluster.kube.objects[key]["spec"].update(spec)
    cluster.kube.objects[key]["metadata"]["generation"] += 1


def _rolled_back(samples):
    cluster, errors, a, bad = _bake_cluster(samples)
    errors[bad] = 300.0
    cluster.reconcile("2026-11-21T10:02:30Z")
    assert _rollout_status(cluster)["phase"] == "Aborted"
    return cluster, errors, a, bad


def test_a_retried_rolled_back_rollout_starts_over_at_step_0_not_in_its_old_bake(samples):
    """Review: restart kept status.bake, so a retry went straight to the old bake and ended Succeeded, unpromoted,
    writing the promote alias for a revision that never served."""
    cluster, errors, a, bad = _rolled_back(samples)
    cluster.reconcile("2026-11-21T10:03:10Z")  # drained: its pods are gone
    errors[bad] = 0.0
    _edit_rollout(cluster, retry=1)
    cluster.reconcile("2026-11-21T10:20:00Z")
    status = _rollout_status(cluster)
    assert status["phase"] == "Progressing" and status["currentStepIndex"] == 0 and "bake" not in status, status
    assert status["startedAt"] == "2026-11-21T10:20:00Z" and "waiting for" in status["message"]
    assert cluster.body["status"]["stableRevision"] == a


def test_a_switch_the_rollout_did_not_record_still_bakes(samples):
    """Review: the LLMDeployment's status landed (stable = the new revision), the rollout's was lost (a conflict);
    the next pass closed the rollout as "already stable" with no bake. Now its bake starts then."""
    cluster, errors, a, bad = _bake_cluster(samples)
    (key,) = [k for k in cluster.kube.objects if k[1] == "LLMRollout"]
    status = cluster.kube.objects[key]["status"]
    status.pop("bake")  # as if the switch's rollout status write had been lost
    status.update(phase="Progressing", currentStepIndex=0, canaryWeight=50)
    cluster.reconcile("2026-11-21T10:01:30Z")
    status = _rollout_status(cluster)
    assert status["phase"] == "Progressing" and status["bake"]["previousRevision"] == a
    assert status["bake"]["endsAt"] == "2026-11-21T10:11:30Z"


def test_a_newer_revision_during_the_bake_ends_it_succeeded_not_aborted(samples):
    """Review: superseded in its bake, the revision serving all traffic was recorded Aborted (and so in MLflow)."""
    cluster, errors, a, bad = _bake_cluster(samples)
    cluster.edit_spec(model={"uri": "hf://org/model-c"})
    cluster.reconcile("2026-11-21T10:02:00Z")
    old = {r["metadata"]["name"]: r.get("status", {}) for r in cluster.kube.list("llmops.dev/v1alpha1", "LLMRollout", "default", "")}
    assert old[f"qwen-small-{bad}"]["phase"] == "Succeeded" and "bake was cut short" in old[f"qwen-small-{bad}"]["message"]
    assert cluster.body["status"]["stableRevision"] == bad


def test_a_failed_bake_with_nothing_to_go_back_to_consumes_a_retry(samples):
    cluster, errors, a, bad = _bake_cluster(samples)
    del cluster.kube.objects[("apps/v1", "Deployment", "default", f"qwen-small-{a}")]  # someone deleted A
    errors[bad] = 300.0
    cluster.reconcile("2026-11-21T10:02:30Z")
    assert _rollout_status(cluster)["phase"] == "Failed"
    _edit_rollout(cluster, retry=1)
    cluster.reconcile("2026-11-21T10:03:00Z")
    status = _rollout_status(cluster)
    assert status["observedRetry"] == 1 and "already stable" in status["message"]
    assert not p.wants_pass(cluster.kube.list("llmops.dev/v1alpha1", "LLMRollout", "default", "")[0])


def test_the_llmdeployment_says_baking_while_its_rollout_bakes(samples):
    cluster, errors, a, bad = _bake_cluster(samples)
    progressing = next(c for c in cluster.body["status"]["conditions"] if c["type"] == "Progressing")
    assert (progressing["status"], progressing["reason"]) == ("True", "Baking")
    assert f"revision {a} is kept to roll back to" in progressing["message"]


def test_a_rollback_under_an_autoscaler_brings_back_the_size_it_grew_to(samples):
    """Review: the HPA grew the new revision to 6 under all the traffic; the previous came back at its old 2."""
    samples = copy.deepcopy(samples)
    samples["llmdeployment-minimal"]["spec"]["autoscaling"] = {"minReplicas": 2, "maxReplicas": 8}
    cluster, errors, a, bad = _bake_cluster(samples)
    cluster.kube.objects[("apps/v1", "Deployment", "default", f"qwen-small-{bad}")]["spec"]["replicas"] = 6
    cluster.set_ready(f"qwen-small-{bad}", 6)
    errors[bad] = 300.0
    plan, writes = cluster.reconcile("2026-11-21T10:02:30Z")
    assert cluster.deployments()[f"qwen-small-{a}"]["spec"]["replicas"] == 6
    assert cluster.child("HorizontalPodAutoscaler")["spec"]["scaleTargetRef"]["name"] == f"qwen-small-{a}"
    kinds = [w[1] for w in writes]
    assert ("scale", "Deployment", f"qwen-small-{a}") in writes or "Deployment" in kinds


def test_a_rollback_the_rollout_did_not_record_ends_it_aborted_not_baking_a_revision_that_does_not_serve(samples):
    """Second review: the rollback's LLMDeployment status landed (A stable again), the rollout's own was lost; it
    kept baking B as a 0% canary and at endsAt said Succeeded, moving the promote alias to a revision not serving."""
    cluster, errors, a, bad = _bake_cluster(samples)
    (key,) = [k for k in cluster.kube.objects if k[1] == "LLMRollout"]
    baking_status = copy.deepcopy(cluster.kube.objects[key]["status"])
    errors[bad] = 300.0
    cluster.reconcile("2026-11-21T10:02:30Z")
    assert cluster.body["status"]["stableRevision"] == a
    cluster.kube.objects[key]["status"] = baking_status  # as if the rollout's status write had been lost
    cluster.reconcile("2026-11-21T10:02:40Z")
    status = _rollout_status(cluster)
    assert status["phase"] == "Aborted" and status["message"].startswith(f"rolled back: all traffic on {a}")
    assert cluster.body["status"]["stableRevision"] == a


def test_an_older_rollout_resuming_after_another_switched_does_not_start_a_bake(samples):
    """Second review: the recovery of a lost switch write fired for a rollout that had not switched; the evidence now
    is the LLMDeployment's status.rollout naming it."""
    cluster, errors, a, bad = _bake_cluster(samples)
    (key,) = [k for k in cluster.kube.objects if k[1] == "LLMRollout"]
    assert cluster.body["status"]["rollout"] == key[3]  # named while it bakes
    status = cluster.kube.objects[key]["status"]
    status.pop("bake")
    status.update(phase="Progressing", currentStepIndex=0, canaryWeight=50)
    cluster.kube.objects[cluster.key]["status"]["rollout"] = "another-rollout"  # another one switched
    cluster.reconcile("2026-11-21T10:01:30Z")
    assert "bake" not in _rollout_status(cluster)


def test_a_measuring_pass_parses_the_spec_and_resolves_the_active_rollout_once(samples, monkeypatch):
    """Issue 14: one pass reads the object once, parses it once and resolves the active rollout once, however
    many phases (the measurement, the planner) look at it."""
    from llm_operator import _planner, _reconcile, _validation

    cluster, errors, a, bad = _bake_cluster(samples)
    calls = {"llmdeployment": 0, "llmrollout": 0}

    def counting(name, parse):
        def wrapper(*args, **kwargs):
            calls[name] += 1
            return parse(*args, **kwargs)
        return wrapper

    for module in (_planner, _reconcile, _validation):
        if hasattr(module, "parse_llmdeployment"):
            monkeypatch.setattr(module, "parse_llmdeployment", counting("llmdeployment", _validation.parse_llmdeployment))
    monkeypatch.setattr(p, "parse_llmrollout", counting("llmrollout", _validation.parse_llmrollout))
    queries = len(cluster.metrics.queries)
    cluster.reconcile("2026-11-21T10:01:55Z")  # a run on the new stable during the bake
    assert len(cluster.metrics.queries) > queries  # it measured
    assert calls == {"llmdeployment": 1, "llmrollout": 1}, calls


def test_fail_fast_between_runs_costs_two_queries_a_pass_and_a_hard_breach_routes_back_first(samples):
    """analysis.failFast: while the canary takes traffic every pass reads its requests and errors (two queries; a
    third, the stalled engines, once the attempt has lasted failFast.stallWindow),
    and a hard breach aborts before the next run (5 minutes away), the VirtualService written before the status."""
    doc = copy.deepcopy(samples["llmdeployment-minimal"])
    doc["spec"]["replicas"] = 2
    doc["spec"]["rollout"] = {"steps": [{"setWeight": 50}, {"analysis": {"duration": "10m"}}], "analyzeEveryStep": False,
                              "bakeDuration": "0s", "analysis": {"interval": "5m"}}
    failing = {"errors": 0.0}

    def answer(promql):
        if "request_success_total" not in promql:
            return None
        return failing["errors"] if 'finished_reason="error"' in promql else 40.0
    cluster, _, new = _rolling_to_b(doc, FakeMetrics(answer))
    cluster.set_ready(f"qwen-small-{new}", 1)
    plan, _ = cluster.reconcile("2026-11-21T10:01:05Z")  # 50% routed
    assert _rollout_status(cluster)["canaryWeight"] == 50 and plan.requeue_after == 5.0
    queries = len(cluster.metrics.queries)
    plan, writes = cluster.reconcile("2026-11-21T10:01:10Z")
    assert len(cluster.metrics.queries) - queries == 2 and not writes  # the guard's two reads; nothing to write
    failing["errors"] = 20.0  # half the canary's requests fail
    plan, writes = cluster.reconcile("2026-11-21T10:01:15Z")
    status = _rollout_status(cluster)
    assert status["phase"] == "Aborted" and status["message"].startswith("step 1: fail fast: 20 errors in 40 requests over 15s")  # since it started
    kinds = [w[1] for w in writes]
    assert kinds.index("VirtualService") < kinds.index("LLMRollout"), writes  # routes first
    vs = cluster.child("VirtualService")
    weights = {r["destination"]["host"].split(".")[0]: r.get("weight") for r in vs["spec"]["http"][0]["route"]}
    assert weights.get("qwen-small-canary", 0) == 0, weights


def test_a_pass_lists_only_its_own_rollouts_and_a_name_held_by_another_deployments_takes_the_next(samples):
    """Issue 15: the LLMRollout LIST is filtered by the API server (the CRD's selectableFields), so a pass never reads
    the namespace's other rollouts; a name one of them holds is found at the create (409) and the next is taken."""
    from llm_operator._kube import Conflict

    cluster, a = _serving_a(samples, strategy="none")
    name = cluster.key[3]
    rollout_lists = [f for kind, _, f in cluster.kube.lists if kind == "LLMRollout"]
    assert rollout_lists and set(rollout_lists) == {f"spec.deploymentName={name}"}
    held = []

    def someone_elses(rollout_name):  # a hand-made rollout of another deployment holds the name the planner chose
        if held:
            return None
        held.append(rollout_name)
        cluster.kube.add({"apiVersion": "llmops.dev/v1alpha1", "kind": "LLMRollout",
                          "metadata": {"name": rollout_name, "namespace": "default"},
                          "spec": {"deploymentName": "another", "target": {"model": {"uri": "hf://org/x"}}}})
        return Conflict(f"llmrollouts {rollout_name} already exists")
    cluster.kube.fail[("create", "LLMRollout")] = someone_elses
    cluster.edit_spec(model={"uri": "hf://org/model-b"})
    cluster.events.clear()
    plan, writes = cluster.reconcile(T1)
    mine = [n for n, r in _rollouts(cluster).items() if r["spec"]["deploymentName"] == name]
    assert held and mine == [f"{held[0]}-2"], (held, list(_rollouts(cluster)), writes)
    # The Event names the rollout created, not the one planned (a leftover of the last review, fixed).
    created = [e.message for e in cluster.events if e.reason == "RolloutCreated"]
    assert len(created) == 1 and created[0].endswith(f"created LLMRollout {held[0]}-2"), created
    assert _rollouts(cluster)[held[0]]["spec"]["deploymentName"] == "another"  # untouched
    assert cluster.body["status"]["specRevision"] != a  # the revision is recorded: what it needs exists


def test_a_create_meeting_a_foreign_name_skips_the_names_its_own_rollouts_hold(samples):
    """Review: a foreign rollout holds <name>-<B>-3, ours hold <name>-<B>, -2 and -4; the planner picks -3, the 409
    must lead past -4 (ours, read by the pass) to -5, not raise on every pass."""
    from llm_operator._kube import Conflict
    from llm_operator._reconcile import _create_rollout

    kube = FakeKube()
    for name, deployment in (("chat-b-3", "another"), ("chat-b", "chat"), ("chat-b-2", "chat"), ("chat-b-4", "chat")):
        kube.add({"apiVersion": "llmops.dev/v1alpha1", "kind": "LLMRollout", "metadata": {"name": name, "namespace": "default",
                  "labels": {"llmops.dev/revision": "b"}}, "spec": {"deploymentName": deployment}})
    original = kube.create

    def create(obj):
        if ("llmops.dev/v1alpha1", "LLMRollout", "default", obj["metadata"]["name"]) in kube.objects:
            raise Conflict("exists", 409)
        return original(obj)
    kube.create = create
    obj = {"apiVersion": "llmops.dev/v1alpha1", "kind": "LLMRollout",
           "metadata": {"name": "chat-b-3", "namespace": "default", "labels": {"llmops.dev/revision": "b"}},
           "spec": {"deploymentName": "chat"}}
    _create_rollout(kube, obj, frozenset({"chat-b", "chat-b-2", "chat-b-4"}))
    assert obj["metadata"]["name"] == "chat-b-5" and ("llmops.dev/v1alpha1", "LLMRollout", "default", "chat-b-5") in kube.objects


def test_a_create_meeting_a_foreign_name_reads_the_holder_with_the_grants_the_role_has(samples):
    """Issue 15 review: the role grants list (for the watch) and no get on LLMRollouts; reading the holder of a
    taken name by GET was refused (403) on a real API server, so a pass meeting a foreign name failed on every try."""
    import pathlib

    import yaml

    from llm_operator._kube import Conflict, KubeError
    from llm_operator._reconcile import _create_rollout

    rules = next(d for d in yaml.safe_load_all(pathlib.Path("manifests/operator/rbac.yaml").read_text()) if d["kind"] == "ClusterRole")["rules"]
    verbs = {v for r in rules if "llmrollouts" in r["resources"] for v in r["verbs"]}
    assert "get" not in verbs and "list" in verbs
    kube = FakeKube()
    kube.add({"apiVersion": "llmops.dev/v1alpha1", "kind": "LLMRollout", "metadata": {"name": "chat-b", "namespace": "default",
              "labels": {"llmops.dev/revision": "b"}}, "spec": {"deploymentName": "another"}})
    original_create = kube.create

    def create(obj):
        if ("llmops.dev/v1alpha1", "LLMRollout", "default", obj["metadata"]["name"]) in kube.objects:
            raise Conflict("exists", 409)
        return original_create(obj)

    def get(api_version, kind, namespace, name):
        raise KubeError(f'llmrollouts.llmops.dev "{name}" is forbidden', 403)
    kube.create, kube.get = create, get
    obj = {"apiVersion": "llmops.dev/v1alpha1", "kind": "LLMRollout",
           "metadata": {"name": "chat-b", "namespace": "default", "labels": {"llmops.dev/revision": "b"}},
           "spec": {"deploymentName": "chat"}}
    assert _create_rollout(kube, obj) == "chat-b-2"


def test_warm_replicas_shrinks_the_previous_revision_after_the_routes_and_a_rollback_brings_it_back_to_size(samples):
    """spec.rollout.warmReplicas (issue 16): during the bake the previous revision kept to roll back to holds fewer
    pods: not before abortScaleDownDelaySeconds after the switch (the routes left it then), by a plain scale. A failed bake
    switches back at once, routes first, and scales the previous revision back to the size the new one had, before
    the routes in the same pass."""
    doc = copy.deepcopy(samples["llmdeployment-minimal"])
    doc["spec"]["replicas"] = 2
    doc["spec"]["rollout"] = {"steps": [{"setWeight": 50}], "analyzeEveryStep": False, "bakeDuration": "10m",
                              "scaleDownDelaySeconds": 60, "abortScaleDownDelaySeconds": 30, "warmReplicas": 1,
                              "analysis": {"interval": "30s", "minRequests": 10,
                                           "metrics": [{"name": "errors", "builtin": "errorRatio", "max": 0.01}]}}
    errors: dict[str, float] = {}

    def answer(promql):
        rev = next((r for r in errors if f'llmops_dev_revision="{r}"' in promql), None)
        if "request_success_total" not in promql or rev is None:
            return None
        return errors[rev] if 'finished_reason="error"' in promql else 1000.0
    cluster, a, bad = _rolling_to_b(doc, FakeMetrics(answer))
    errors.update({a: 0.0, bad: 0.0})
    cluster.set_ready(f"qwen-small-{bad}", 2)
    _, writes = cluster.reconcile("2026-11-21T10:01:10Z")  # the switch: A is the previous revision, still at 2
    assert cluster.body["status"]["previousRevision"] == a and ("scale", "Deployment", f"qwen-small-{a}") not in writes
    assert cluster.deployments()[f"qwen-small-{a}"]["spec"]["replicas"] == 2
    cluster.reconcile("2026-11-21T10:01:30Z")  # 20 s after the switch: proxies may still send A some requests
    assert cluster.deployments()[f"qwen-small-{a}"]["spec"]["replicas"] == 2
    _, writes = cluster.reconcile("2026-11-21T10:01:55Z")  # abortScaleDownDelaySeconds (30) after: A shrinks to its warm size
    assert cluster.deployments()[f"qwen-small-{a}"]["spec"]["replicas"] == 1, writes
    cluster.set_ready(f"qwen-small-{a}", 1)
    errors[bad] = 300.0  # the regression shows only after promotion
    _, writes = cluster.reconcile("2026-11-21T10:02:30Z")
    assert _rollout_status(cluster)["phase"] == "Aborted" and cluster.body["status"]["stableRevision"] == a
    assert cluster.deployments()[f"qwen-small-{a}"]["spec"]["replicas"] == 2  # back to the size the new one had
    kinds = [w[1] for w in writes]
    assert writes.index(("scale", "Deployment", f"qwen-small-{a}")) < kinds.index("Service"), writes  # pods asked first
    service = cluster.kube.get("v1", "Service", "default", "qwen-small")
    assert service["spec"]["selector"]["llmops.dev/revision"] == a  # and the traffic back at once


def test_a_fail_fast_interval_longer_than_half_the_default_stall_window_rolls_out(samples):
    """failFast {interval: 90s, window: 3m}, valid before stallWindow existed: its default (2m) is under two
    intervals, and stands as two intervals. A rollout's target is validated from the deployment's spec written
    out; a default written out there was judged as written and made every pass with a rollout raise."""
    doc = copy.deepcopy(samples["llmdeployment-minimal"])
    doc["spec"]["replicas"] = 2
    doc["spec"]["rollout"] = {"steps": [{"setWeight": 50}], "analyzeEveryStep": False, "bakeDuration": "0s",
                              "analysis": {"interval": "5m", "failFast": {"interval": "90s", "window": "3m"}}}
    cluster, a, b = _rolling_to_b(doc, FakeMetrics(lambda promql: None))
    assert a != b and _rollout_status(cluster)["phase"] == "Progressing"


def test_a_rollout_status_this_release_cannot_read_fails_that_rollout_not_the_pass(samples):
    """Review finding (issue 14): a phase a newer release wrote (after a downgrade) makes the typed status refuse it;
    that rollout is reported invalid on its own status, traffic goes back to stable, and the pass carries on."""
    cluster, a = _canary_at_half(samples)
    (name, rollout), = _rollouts(cluster).items()
    cluster.kube.objects[(rollout["apiVersion"], "LLMRollout", "default", name)]["status"]["phase"] = "Hibernating"
    plan, writes = cluster.reconcile(T2)
    status = _rollouts(cluster)[name]["status"]
    assert status["phase"] == "Failed" and status["message"].startswith("status.phase: ")
    assert b.routes_of(cluster.child("VirtualService")) == b.Routes(100, 0, 0)
