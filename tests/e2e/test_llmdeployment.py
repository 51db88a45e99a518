"""The operator process on the real control plane: samples in, valid children, scheduled pods and status out."""

import copy
import itertools
import json
import urllib.parse

import pytest
from kubernetes.dynamic.exceptions import ForbiddenError, UnprocessibleEntityError

from llm_operator._render import render
from llm_sandbox.cluster import OPERATOR_USER, wait_for
from llm_sandbox.controlplane import HELD_RESOURCES
from tests.e2e.conftest import mlflow_secret, sample
from tests.schemas import validate

pytestmark = pytest.mark.e2e

LLMD = ("llmops.dev/v1alpha1", "LLMDeployment")
CHILD_KINDS = [
    ("apps/v1", "Deployment"), ("v1", "Service"), ("networking.istio.io/v1", "DestinationRule"),
    ("networking.istio.io/v1", "VirtualService"), ("autoscaling/v2", "HorizontalPodAutoscaler"),
    ("policy/v1", "PodDisruptionBudget"), ("keda.sh/v1alpha1", "ScaledObject"),
    ("security.istio.io/v1", "PeerAuthentication"), ("security.istio.io/v1", "RequestAuthentication"),
    ("security.istio.io/v1", "AuthorizationPolicy"), ("gateway.networking.k8s.io/v1", "HTTPRoute"),
    ("inference.networking.k8s.io/v1", "InferencePool"),
]


def _llmd(api, namespace, name):
    return api.get(*LLMD, namespace, name)


def _reconciled(api, namespace, name, generation=1):
    obj = _llmd(api, namespace, name)
    status = (obj or {}).get("status", {})
    return obj if status.get("observedGeneration") == generation else None


def _children(api, namespace, name):
    return {
        kind: api.list(api_version, kind, namespace, f"llmops.dev/deployment={name}")
        for api_version, kind in CHILD_KINDS
    }


def _condition(obj, type_):
    return next(c for c in obj["status"]["conditions"] if c["type"] == type_)


def _selected(children):
    """Which revision each of the LLMDeployment's Services selects."""
    return {svc["metadata"]["name"]: svc["spec"]["selector"]["llmops.dev/revision"] for svc in children["Service"]}


def rollout_of(api, namespace, revision):
    """The LLMRollout the operator created for ``revision`` (its name carries the revision)."""
    return next((r for r in api.list("llmops.dev/v1alpha1", "LLMRollout", namespace) if (r.get("spec") or {}).get("target")
                 and r["metadata"]["name"].startswith(f"qwen-small-{revision}")), None)


def _held(doc):
    """``doc`` with its pods on the held node, whose readiness the test reports (as their kubelet would)."""
    doc = copy.deepcopy(doc)
    resources = doc["spec"]["resources"]
    resources["nodeSelector"] = {**resources.get("nodeSelector", {}), **HELD_RESOURCES["nodeSelector"]}
    resources["tolerations"] = resources.get("tolerations", []) + HELD_RESOURCES["tolerations"]
    return doc


def _settle(api, operator, namespace, name, passes=3):
    """Writes the operator makes over ``passes`` whole passes, counted from the start of the next pass: passes of
    one object are serialized, so by then the previous pass (its status write and Events) is complete."""
    path = f"/llmdeployments/{name}"
    begin = len(api.requests())
    wait_for(lambda: api.operator_reads_of(path, begin) >= 1, timeout=20, what="the next pass")
    requests = api.requests()
    start = next(i for i in range(begin, len(requests))
                 if requests[i].path.endswith(path) and requests[i].verb == "get" and requests[i].user == OPERATOR_USER)
    wait_for(lambda: api.operator_reads_of(path, start) >= passes, timeout=20, what=f"{passes} reconcile passes")
    return [w for w in api.operator_writes(start) if f"/namespaces/{namespace}/" in w]  # not other tests' teardown


EXPECTED = {
    "llmdeployment-minimal": {"Deployment", "Service", "DestinationRule", "VirtualService", "PodDisruptionBudget"},
    "llmdeployment-multigpu": {"Deployment", "Service", "DestinationRule", "VirtualService", "HorizontalPodAutoscaler", "PodDisruptionBudget"},
    "llmdeployment-mlflow": {"Deployment", "Service", "DestinationRule", "VirtualService", "PodDisruptionBudget"},
    "llmdeployment-keda": {"Deployment", "Service", "DestinationRule", "VirtualService", "ScaledObject", "PodDisruptionBudget"},
    "llmdeployment-cpu": {"Deployment", "Service", "DestinationRule", "VirtualService", "PodDisruptionBudget"},
    "llmdeployment-hardened": {"Deployment", "Service", "DestinationRule", "VirtualService", "HorizontalPodAutoscaler",
                               "PodDisruptionBudget", "PeerAuthentication", "AuthorizationPolicy"},
    "llmdeployment-gateway-api": {"Deployment", "Service", "InferencePool", "HTTPRoute", "PodDisruptionBudget"},
    "llmdeployment-lora": {"Deployment", "Service", "DestinationRule", "VirtualService", "PodDisruptionBudget"},
}


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_sample_becomes_valid_owned_children(api, operator, namespace, name, mlflow, support_assistant):
    name_of_sample = name
    doc = sample(name)
    if doc["spec"]["model"].get("mlflow") or any(a.get("mlflow") for a in doc["spec"].get("adapters", [])):
        api.create(mlflow_secret(namespace, mlflow.url), namespace)
    created = api.create(doc, namespace)
    obj = wait_for(lambda: _reconciled(api, namespace, doc["metadata"]["name"]), what="first reconcile")
    children = wait_for(lambda: (c := _children(api, namespace, doc["metadata"]["name"])) and
                        {k for k, v in c.items() if v} == EXPECTED[name] and c, what="all children")
    for items in children.values():
        for child in items:
            validate(child)
            (ref,) = child["metadata"]["ownerReferences"]
            assert (ref["kind"], ref["name"], ref["uid"], ref["controller"]) == (
                "LLMDeployment", doc["metadata"]["name"], created["metadata"]["uid"], True)
            assert child["metadata"]["labels"]["app.kubernetes.io/managed-by"] == "llm-operator"
    (deployment,) = children["Deployment"]
    revision = obj["status"]["stableRevision"]
    assert deployment["metadata"]["name"] == f"{doc['metadata']['name']}-{revision}"
    assert deployment["metadata"]["labels"]["llmops.dev/revision"] == revision
    args = deployment["spec"]["template"]["spec"]["containers"][0]["args"]
    assert args[args.index("--served-model-name") + 1] == doc["spec"]["model"].get("servedModelName", doc["metadata"]["name"])
    name = doc["metadata"]["name"]
    # Host-level splitting: the Service clients call selects the stable revision only; the canary's selects the
    # canary revision (stable's while there is none); a DestinationRule each (Istio), or an InferencePool each.
    assert _selected(children) == {name: revision, f"{name}-canary": revision}
    if "VirtualService" in EXPECTED[name_of_sample]:
        (vs,) = children["VirtualService"]
        assert [r["weight"] for r in vs["spec"]["http"][0]["route"]] == [100, 0]
        assert sorted(dr["metadata"]["name"] for dr in children["DestinationRule"]) == [name, f"{name}-canary"]
    else:
        (route,) = children["HTTPRoute"]
        assert [(r["kind"], r["name"], r["weight"]) for r in route["spec"]["rules"][0]["backendRefs"]] == [
            ("InferencePool", name, 100), ("InferencePool", f"{name}-canary", 0)]
        assert {p["metadata"]["name"]: p["spec"]["selector"]["matchLabels"]["llmops.dev/revision"] for p in children["InferencePool"]} == {
            name: revision, f"{name}-canary": revision}
    assert obj["status"]["endpoint"] == f"http://{doc['metadata']['name']}.{namespace}.svc.cluster.local:8000/v1"
    # The real scheduler placed the pods by their GPU requests, node selector and tolerations, PodSecurity
    # (restricted) admitted them, kwok's kubelets report them ready, and the Deployment controller counts them.
    replicas = deployment["spec"]["replicas"]
    pods = wait_for(lambda: (p := api.pods_of(namespace, deployment["metadata"]["name"])) and len(p) == replicas
                    and all(x["spec"].get("nodeName") for x in p) and p, 60, "pods bound") if replicas else []
    gpus = doc["spec"]["resources"].get("gpus", 1)
    for pod in pods:
        node = api.get("v1", "Node", None, pod["spec"]["nodeName"])
        assert int(node["status"]["capacity"].get("nvidia.com/gpu", "0")) >= gpus
        for key, value in doc["spec"]["resources"].get("nodeSelector", {}).items():
            assert node["metadata"]["labels"][key] == value
        if doc["spec"]["resources"].get("gpuProducts"):  # the node affinity: one of the GPU models named
            assert node["metadata"]["labels"]["nvidia.com/gpu.product"] in doc["spec"]["resources"]["gpuProducts"]
    if replicas:
        obj = wait_for(lambda: (o := _llmd(api, namespace, doc["metadata"]["name"])) and _condition(o, "Ready")["status"] == "True" and o,
                       60, "Ready=True from the pods' readiness")
        assert obj["status"]["readyReplicas"] == replicas


def test_the_operator_lists_and_watches_children_filtered_by_the_api_server(api, operator, namespace):
    """A handler's ``labels=`` is applied by kopf after the object arrived, so the operator received every Deployment
    of the cluster; now every LIST and WATCH of a child kind it sends, kopf's included, carries a labelSelector the API
    server applies (the audit log's request URI). Issue 15: a pass reads its children from those watches (kopf's
    indexes), so in the LLMDeployment's namespace the operator's only read is the GET of the LLMDeployment itself."""
    doc = sample("llmdeployment-minimal")
    api.create(doc, namespace)
    wait_for(lambda: (o := _llmd(api, namespace, "qwen-small")) and _condition(o, "Ready")["status"] == "True", 60, "Ready=True")
    children = {"deployments", "services", "horizontalpodautoscalers", "poddisruptionbudgets", "destinationrules",
                "virtualservices", "peerauthentications", "requestauthentications", "authorizationpolicies"}
    reads = [r for r in api.requests() if r.user == OPERATOR_USER and r.resource in children and r.verb in ("list", "watch")]
    watches = [r for r in reads if r.verb == "watch"]
    assert children <= {r.resource for r in watches}, sorted({r.resource for r in watches})
    assert not [r for r in watches if r.namespace], watches  # kopf's: one cluster-wide watch a kind
    unfiltered = [f"{r.verb} {r.path}?{r.query}" for r in reads if not urllib.parse.parse_qs(r.query).get("labelSelector")]
    assert not unfiltered
    assert {urllib.parse.parse_qs(r.query)["labelSelector"][0] for r in watches} == {"app.kubernetes.io/managed-by=llm-operator"}
    here = {(r.verb, r.resource) for r in api.requests() if r.user == OPERATOR_USER and r.namespace == namespace
            and r.verb in ("get", "list")}
    assert here == {("get", "llmdeployments")}, here


def test_ready_pods_make_the_deployment_ready_and_idle_passes_write_nothing(api, operator, namespace):
    doc = sample("llmdeployment-minimal")
    api.create(doc, namespace)
    obj = wait_for(lambda: _reconciled(api, namespace, "qwen-small"), what="first reconcile")
    obj = wait_for(lambda: (o := _llmd(api, namespace, "qwen-small")) and _condition(o, "Ready")["status"] == "True" and o,
                   what="Ready=True")
    assert (obj["status"]["replicas"], obj["status"]["readyReplicas"]) == (1, 1)
    assert _condition(obj, "Progressing")["reason"] == "RevisionAvailable"
    # Events follow the status write that records the transition: wait for them rather than race them.
    wait_for(lambda: {("Normal", "Created"), ("Normal", "Available")} <= {
        (e["type"], e["reason"]) for e in api.list("v1", "Event", namespace) if e["involvedObject"]["name"] == "qwen-small"},
        30, "the Created and Available Events")
    # Converged: further passes (resync timer, watch events) make no write at all.
    writes = _settle(api, operator, namespace, "qwen-small", passes=4)
    assert writes == []


def test_invalid_spec_is_degraded_with_no_children_and_no_hot_loop(api, operator, namespace):
    """Objects the API server stored before the CRD carried its CEL rules still get named field errors."""
    doc = sample("llmdeployment-multigpu")
    doc["spec"]["runtime"]["tensorParallelSize"] = 3
    doc["spec"]["runtime"]["maxModelLen"] = 0
    with api.without_crd_rules("llmdeployments.llmops.dev"):
        wait_for(lambda: api.create(doc, namespace), 30, "the CRD without its rules to take effect", interval=0.2)
    obj = wait_for(lambda: _reconciled(api, namespace, "llama-70b"), what="status")
    degraded = _condition(obj, "Degraded")
    assert (degraded["status"], degraded["reason"]) == ("True", "InvalidSpec")
    assert "spec.runtime.tensorParallelSize: tensorParallelSize 3 x pipelineParallelSize 1 must divide resources.gpus (4" in degraded["message"]
    assert "spec.runtime.maxModelLen" in degraded["message"]
    assert all(not items for items in _children(api, namespace, "llama-70b").values())
    warnings = [e for e in api.list("v1", "Event", namespace) if e["reason"] == "InvalidSpec"]
    assert len(warnings) == 1 and warnings[0]["type"] == "Warning"
    assert warnings[0]["involvedObject"]["name"] == "llama-70b" and warnings[0]["involvedObject"]["kind"] == "LLMDeployment"
    assert "spec.runtime.tensorParallelSize" in warnings[0]["message"]
    assert _settle(api, operator, namespace, "llama-70b", passes=4) == []
    # Fixing the spec recovers without a restart.
    api.patch(*LLMD, namespace, "llama-70b", {"spec": {"runtime": {"tensorParallelSize": 4, "maxModelLen": 32768}}})
    obj = wait_for(lambda: _reconciled(api, namespace, "llama-70b", generation=2), what="second generation")
    assert _condition(obj, "Degraded")["status"] == "False"
    assert wait_for(lambda: _children(api, namespace, "llama-70b")["Deployment"], what="deployment")


def test_unknown_quantization_passes_the_api_server_and_stops_at_the_operator(api, operator, namespace):
    api.create(sample("llmdeployment-minimal"), namespace)
    obj = wait_for(lambda: _reconciled(api, namespace, "qwen-small"), what="first reconcile")
    deployment = api.get("apps/v1", "Deployment", namespace, f"qwen-small-{obj['status']['stableRevision']}")
    api.patch(*LLMD, namespace, "qwen-small", {"spec": {"runtime": {"quantization": "int3-magic"}}})
    obj = wait_for(lambda: _reconciled(api, namespace, "qwen-small", generation=2), what="second generation")
    degraded = _condition(obj, "Degraded")
    assert (degraded["status"], degraded["reason"]) == ("True", "InvalidSpec")
    assert degraded["message"].startswith("spec.runtime.quantization: unknown quantization 'int3-magic'")
    (only,) = _children(api, namespace, "qwen-small")["Deployment"]
    assert only["metadata"]["resourceVersion"] == deployment["metadata"]["resourceVersion"]  # untouched


def test_spec_edit_updates_structure_and_stray_weights_go_back_to_stable(api, operator, namespace):
    """Weights on a canary subset with no canary Deployment behind it would fail those requests."""
    api.create(sample("llmdeployment-minimal"), namespace)
    wait_for(lambda: api.get("networking.istio.io/v1", "VirtualService", namespace, "qwen-small"), what="VirtualService")
    vs = api.get("networking.istio.io/v1", "VirtualService", namespace, "qwen-small")
    vs["spec"]["http"][0]["route"][0]["weight"] = 90
    vs["spec"]["http"][0]["route"][1]["weight"] = 10
    api.patch("networking.istio.io/v1", "VirtualService", namespace, "qwen-small", {"spec": {"http": vs["spec"]["http"]}})
    api.patch(*LLMD, namespace, "qwen-small", {"spec": {"traffic": {"hosts": ["qwen.example.com"]}}})
    vs = wait_for(lambda: (v := api.get("networking.istio.io/v1", "VirtualService", namespace, "qwen-small"))
                  and "qwen.example.com" in v["spec"]["hosts"] and v, what="hosts updated")
    vs = wait_for(lambda: (v := api.get("networking.istio.io/v1", "VirtualService", namespace, "qwen-small"))
                  and [r["weight"] for r in v["spec"]["http"][0]["route"]] == [100, 0] and v, what="weights back on stable")
    assert vs["spec"]["hosts"][-1] == "qwen.example.com"


def test_dropped_field_is_removed_from_the_child(api, operator, namespace):
    doc = sample("llmdeployment-multigpu")
    api.create(doc, namespace)
    obj = wait_for(lambda: _reconciled(api, namespace, "llama-70b"), what="first reconcile")
    name = f"llama-70b-{obj['status']['stableRevision']}"
    pod = wait_for(lambda: api.get("apps/v1", "Deployment", namespace, name), what="deployment")["spec"]["template"]["spec"]
    assert "priorityClassName" in pod
    api.patch(*LLMD, namespace, "llama-70b", {"spec": {"disruptionBudget": {"enabled": False}}})
    wait_for(lambda: api.get("policy/v1", "PodDisruptionBudget", namespace, "llama-70b") is None, what="PDB deleted")


def test_a_new_model_in_the_spec_rolls_out_through_an_llmrollout(api, operator, namespace):
    api.create(_held(sample("llmdeployment-minimal")), namespace)
    obj = wait_for(lambda: _reconciled(api, namespace, "qwen-small"), what="first reconcile")
    old = obj["status"]["stableRevision"]
    api.set_pods_ready(namespace, f"qwen-small-{old}", 1)
    api.patch(*LLMD, namespace, "qwen-small", {"spec": {"model": {"uri": "hf://Qwen/Qwen2.5-3B-Instruct"},
                                                        "rollout": {"strategy": "none", "scaleDownDelaySeconds": 0}}})
    obj = wait_for(lambda: (o := _reconciled(api, namespace, "qwen-small", 2)) and o["status"].get("canaryRevision") and o,
                   what="a canary revision")
    new = obj["status"]["canaryRevision"]
    # The LLMDeployment's status lands before the rollout's in the same pass (by design): wait for the second.
    rollout = wait_for(lambda: (r := rollout_of(api, namespace, new)) and r.get("status") and r, what="the rollout's status")
    assert rollout["spec"]["target"]["model"] == {"uri": "hf://Qwen/Qwen2.5-3B-Instruct"}
    assert rollout["status"]["phase"] == "Progressing" and rollout["status"]["toRevision"] == new
    assert obj["status"]["stableRevision"] == old and obj["status"]["rollout"].startswith(f"qwen-small-{new}")
    assert _selected(_children(api, namespace, "qwen-small")) == {"qwen-small": old, "qwen-small-canary": new}
    vs = api.get("networking.istio.io/v1", "VirtualService", namespace, "qwen-small")
    assert [r["weight"] for r in vs["spec"]["http"][0]["route"]] == [100, 0]  # nothing before the pods are ready
    api.set_pods_ready(namespace, f"qwen-small-{new}", 1)
    wait_for(lambda: api.get("apps/v1", "Deployment", namespace, f"qwen-small-{old}") is None, what="old revision removed")
    obj = _llmd(api, namespace, "qwen-small")
    assert obj["status"]["stableRevision"] == new and "canaryRevision" not in obj["status"]
    assert _selected(_children(api, namespace, "qwen-small")) == {"qwen-small": new, "qwen-small-canary": new}
    assert rollout_of(api, namespace, new)["status"]["phase"] == "Succeeded"


def test_deleting_the_llmdeployment_collects_its_children(api, operator, namespace):
    api.create(sample("llmdeployment-minimal"), namespace)
    wait_for(lambda: all(_children(api, namespace, "qwen-small")[k] for k in ("Deployment", "VirtualService")), what="children")
    api.delete(*LLMD, namespace, "qwen-small")
    wait_for(lambda: not any(_children(api, namespace, "qwen-small").values()), what="children collected")


def test_restarted_operator_resumes_without_writing(api, operator, namespace, mlflow, support_assistant):
    api.create(mlflow_secret(namespace, mlflow.url), namespace)
    api.create(sample("llmdeployment-mlflow"), namespace)
    wait_for(lambda: _reconciled(api, namespace, "support-assistant"), what="first reconcile")
    wait_for(lambda: _condition(_llmd(api, namespace, "support-assistant"), "Ready")["status"] == "True", what="ready")
    operator.stop()
    start = len(api.requests())
    operator.start()
    wait_for(lambda: api.operator_reads_of("/llmdeployments/support-assistant", start) >= 3, timeout=30, what="resumed passes")
    assert [w for w in api.operator_writes(start) if f"/namespaces/{namespace}/" in w] == []


def test_switching_the_autoscaler_replaces_it(api, operator, namespace):
    """KEDA -> HPA -> none: the operator deletes the autoscaler it no longer wants (an HPA and a ScaledObject
    both scaling one Deployment would fight)."""
    doc = sample("llmdeployment-keda")
    api.create(doc, namespace)
    name = doc["metadata"]["name"]
    wait_for(lambda: api.get("keda.sh/v1alpha1", "ScaledObject", namespace, name), what="ScaledObject")
    autoscaling = {**doc["spec"]["autoscaling"], "provider": "hpa", "minReplicas": 1}
    autoscaling.pop("keda", None)
    api.patch(*LLMD, namespace, name, {"spec": {"autoscaling": autoscaling}})
    wait_for(lambda: api.get("autoscaling/v2", "HorizontalPodAutoscaler", namespace, name)
             and api.get("keda.sh/v1alpha1", "ScaledObject", namespace, name) is None, what="HPA instead of ScaledObject")
    api.patch(*LLMD, namespace, name, {"spec": {"autoscaling": None}})  # a merge patch: null removes the field
    wait_for(lambda: api.get("autoscaling/v2", "HorizontalPodAutoscaler", namespace, name) is None, what="HPA deleted")
    assert api.get("keda.sh/v1alpha1", "ScaledObject", namespace, name) is None


def test_a_pass_that_keeps_failing_is_one_warning_with_a_count_and_backs_off(api, operator, namespace):
    """A ResourceQuota that admits no Service: every pass is refused the same way (403, exceeded quota). One
    Warning Event counts the repeats instead of one per pass, the retries space out (per-object back-off, not the
    1 s resync), and lifting the quota recovers without a restart."""
    api.create({"apiVersion": "v1", "kind": "ResourceQuota", "metadata": {"name": "no-services"},
                "spec": {"hard": {"services": "0"}}}, namespace)
    api.create(sample("llmdeployment-minimal"), namespace)

    def refused():
        return [r for r in api.requests() if r.user == OPERATOR_USER and r.namespace == namespace
                and r.resource == "services" and r.code == 403]

    wait_for(lambda: len(refused()) >= 6, 90, "six refused passes")
    (event,) = [e for e in api.list("v1", "Event", namespace) if e["reason"] == "ReconcileError"]
    assert event["type"] == "Warning" and "exceeded quota" in event["message"]
    assert event["count"] >= 5 and event["lastTimestamp"] > event["firstTimestamp"]
    degraded = _condition(_llmd(api, namespace, "qwen-small"), "Degraded")
    assert (degraded["status"], degraded["reason"]) == ("True", "ReconcileError")
    at = [r.at for r in refused()]
    gaps = [b - a for a, b in itertools.pairwise(at)]
    assert max(gaps[-2:]) >= 3.5, gaps  # doubling from 1 s; the operator resyncs every 1 s in this suite
    # A restarted operator finds its Event by name and counts on (no second Warning for the same failure).
    operator.stop()
    counted = event["count"]
    operator.start()
    again = wait_for(lambda: (e := [x for x in api.list("v1", "Event", namespace) if x["reason"] == "ReconcileError"])
                     and e[0]["count"] > counted and e, 60, "the count carried on after a restart")
    assert len(again) == 1
    api.delete("v1", "ResourceQuota", namespace, "no-services")
    wait_for(lambda: api.get("v1", "Service", namespace, "qwen-small"), 120, "the Service once the quota is gone")
    wait_for(lambda: _condition(_llmd(api, namespace, "qwen-small"), "Degraded")["status"] == "False", 60, "Degraded=False")


def test_a_recreated_llmdeployment_adopts_its_orphaned_children(api, operator, namespace):
    """`kubectl delete --cascade=orphan`, then apply again: the garbage collector strips the old owner reference,
    the new object's uid differs, and the operator's apply changes every child's owner reference, which
    OwnerReferencesPermissionEnforcement allows only to who may delete that child."""
    doc = sample("llmdeployment-minimal")
    api.create(doc, namespace)
    wait_for(lambda: all(_children(api, namespace, "qwen-small")[k] for k in ("Service", "DestinationRule", "VirtualService")), 60,
             "children")
    wait_for(lambda: _condition(_llmd(api, namespace, "qwen-small"), "Ready")["status"] == "True", 60, "Ready=True")
    _settle(api, operator, namespace, "qwen-small", passes=2)
    kinds = ("Deployment", "Service", "DestinationRule", "VirtualService", "PodDisruptionBudget")
    before = {x["metadata"]["uid"] for k in kinds for x in _children(api, namespace, "qwen-small")[k]}
    # The garbage collector orphans only the dependents its graph has observed; one it observes later, its owner gone,
    # it deletes as garbage (kubernetes/kubernetes#26120). CI lost the DestinationRule and VirtualService that way
    # (and a loaded machine the PDB) although they were minutes old: the graph lags. A barrier instead of a guess.
    _garbage_collector_has_seen(api, namespace, kinds)
    api.resource(*LLMD).delete(name="qwen-small", namespace=namespace, body={"propagationPolicy": "Orphan"})
    wait_for(lambda: _llmd(api, namespace, "qwen-small") is None, 60, "the LLMDeployment gone, its children orphaned")
    seen = {}

    def orphaned():  # every kind present (an empty list would make all() true and the wait vacuous), none owned
        c = _children(api, namespace, "qwen-small")
        seen["children"] = {k: [(x["metadata"]["name"], [r["uid"] for r in x["metadata"].get("ownerReferences") or []])
                                for x in items] for k, items in c.items()}
        return c and all(c[k] for k in kinds) and all(not x["metadata"].get("ownerReferences") for items in c.values() for x in items)

    try:  # the garbage collector is slow under load: 120 s
        wait_for(orphaned, 120, "owner references removed by the garbage collector")
    except AssertionError as error:  # what was there, for the flake seen twice under load (issue 13 notes)
        raise AssertionError(f"{error}; children (name, owner uids): {seen.get('children')}") from None
    created = api.create(doc, namespace)
    uid = created["metadata"]["uid"]
    adopted = wait_for(lambda: (c := _children(api, namespace, "qwen-small")) and all(c[k] for k in kinds) and all(
        [r["uid"] for r in x["metadata"].get("ownerReferences", [])] == [uid] for kind in kinds for x in c[kind]) and c, 90,
        "every child owned by the new object")
    assert adopted["Service"] and not [r for r in api.requests() if r.user == OPERATOR_USER and r.namespace == namespace
                                       and r.code == 403]
    # Adopted, not recreated: the same objects (the Deployment's pods never restarted).
    assert {x["metadata"]["uid"] for k in kinds for x in adopted[k]} == before


#: A probe of each child kind for :func:`_garbage_collector_has_seen` (schema-valid, no llmops.dev label).
_PROBES = {
    "Deployment": ("apps/v1", {"replicas": 0, "selector": {"matchLabels": {"probe": "gc"}},
                               "template": {"metadata": {"labels": {"probe": "gc"}},
                                            "spec": {"containers": [{"name": "c", "image": "registry.k8s.io/pause:3.10"}]}}}),
    "Service": ("v1", {"ports": [{"port": 80}]}),
    "DestinationRule": ("networking.istio.io/v1", {"host": "probe"}),
    "VirtualService": ("networking.istio.io/v1", {"hosts": ["probe"]}),
    "PodDisruptionBudget": ("policy/v1", {"maxUnavailable": 1, "selector": {"matchLabels": {"probe": "gc"}}}),
}


def _garbage_collector_has_seen(api, namespace, kinds):
    """Wait until kube-controller-manager's garbage collector has observed every object of ``kinds`` that exists now.

    Per kind, a probe created now and owned by an object that does not exist: the collector deletes it once its
    graph builder has processed the probe's creation, which comes through the same informer, after every earlier
    event of that kind. The probe gone, the earlier objects are in the graph, and an orphaning delete of their owner
    strips their owner references instead of deleting them."""
    gone = {"apiVersion": "v1", "kind": "ConfigMap", "name": "never-created", "uid": "00000000-0000-4000-8000-000000000000"}
    for kind in kinds:
        api_version, spec = _PROBES[kind]
        api.create({"apiVersion": api_version, "kind": kind, "spec": spec,
                    "metadata": {"name": f"gc-probe-{kind.lower()}", "ownerReferences": [gone]}}, namespace)
    wait_for(lambda: not [k for k in kinds if api.get(_PROBES[k][0], k, namespace, f"gc-probe-{k.lower()}")], 120,
             "the garbage collector's graph past the probes")


def test_finished_rollouts_beyond_the_history_limit_are_deleted(api, operator, namespace):
    """spec.rollout.historyLimit on the real API server: with a limit of 1, three model edits leave one finished
    LLMRollout (the newest), each older one deleted by the operator under its own ServiceAccount (the RBAC test
    counts that `delete` grant as used)."""
    doc = sample("llmdeployment-minimal")
    doc["spec"]["rollout"] = {"strategy": "none", "scaleDownDelaySeconds": 0, "historyLimit": 1}
    api.create(doc, namespace)
    wait_for(lambda: (o := _llmd(api, namespace, "qwen-small")) and _condition(o, "Ready")["status"] == "True", 60, "Ready=True")
    rollouts = lambda: api.list("llmops.dev/v1alpha1", "LLMRollout", namespace)  # noqa: E731
    for n, uri in enumerate(("hf://org/model-b", "hf://org/model-c", "hf://org/model-d"), start=2):
        api.patch(*LLMD, namespace, "qwen-small", {"spec": {"model": {"uri": uri}}})
        wait_for(lambda n=n: (o := _llmd(api, namespace, "qwen-small"))["status"].get("observedGeneration") == n
                 and o["status"]["stableRevision"] == o["status"]["specRevision"], 90, f"{uri} stable")
    newest = _llmd(api, namespace, "qwen-small")["status"]["stableRevision"]
    left = wait_for(lambda: (r := rollouts()) and len(r) == 1 and r, 60, "one LLMRollout left")
    assert left[0]["metadata"]["labels"]["llmops.dev/revision"] == newest and left[0]["status"]["phase"] == "Succeeded"
    deletes = [r for r in api.requests() if r.user == OPERATOR_USER and r.namespace == namespace
               and r.resource == "llmrollouts" and r.verb == "delete"]
    assert len(deletes) == 2 and all(r.code == 200 for r in deletes)


def _restricted_pod(name: str, node: str, resources: dict) -> dict:
    """A pod bound to ``node`` by name (the scheduler counts it, kwok runs it), admitted by PodSecurity restricted."""
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name},
            "spec": {"nodeName": node, "tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}],
                     "securityContext": {"runAsNonRoot": True, "runAsUser": 1000, "seccompProfile": {"type": "RuntimeDefault"}},
                     "containers": [{"name": "hold", "image": "registry.k8s.io/pause:3.10", "resources": resources,
                                     "securityContext": {"allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]}}}]}}


L4_NODES = ("gpu-l4-0", "gpu-l4-1")


def _l4_nodes_to_ourselves(api, namespace):
    """Wait until no pod of another namespace is on the L4 nodes: earlier tests' namespaces are deleted in the
    background, and a pod of theirs left on a node changes the free room the placement tests count on."""
    wait_for(lambda: not [p for p in api.list("v1", "Pod", None) if p["spec"].get("nodeName") in L4_NODES
                          and p["metadata"]["namespace"] != namespace], 120, "the L4 nodes free of earlier tests' pods")


def _placement(api, namespace, name, replicas):
    """(node, zone) of each of the stable revision's ``replicas`` pods, once kube-scheduler has bound them all."""
    obj = wait_for(lambda: (o := _llmd(api, namespace, name)) and o.get("status", {}).get("stableRevision") and o, 60, "a revision")
    deployment = f"{name}-{obj['status']['stableRevision']}"
    pods = wait_for(lambda: (p := api.pods_of(namespace, deployment)) and len(p) == replicas and all(x["spec"].get("nodeName") for x in p)
                    and p, 60, f"{replicas} pods bound")
    nodes = [api.get("v1", "Node", None, pod["spec"]["nodeName"]) for pod in pods]
    return pods, [(n["metadata"]["name"], n["metadata"]["labels"]["topology.kubernetes.io/zone"]) for n in nodes]


def test_the_scheduler_spreads_replicas_over_zones_and_nodes(api, operator, namespace):
    """Two replicas on the L4 pool (gpuProducts: a node affinity; gpu-l4-0 in zone-a, gpu-l4-1 in zone-b, the held L4
    node tainted away). A pod holding most of gpu-l4-1's CPU and memory makes kube-scheduler's resource scoring
    prefer gpu-l4-0 for both; the default spread (zones, then nodes, maxSkew 1, ScheduleAnyway) puts one in each
    zone all the same. With the spread turned off (topologySpread: []) the same two replicas share gpu-l4-0."""
    _l4_nodes_to_ourselves(api, namespace)
    api.create(_restricted_pod("hold-l4-1", "gpu-l4-1", {"requests": {"cpu": "88", "memory": "352Gi"}}), namespace)  # room for one
    doc = sample("llmdeployment-minimal")
    doc["metadata"]["name"] = "spread"
    doc["spec"]["replicas"] = 2
    doc["spec"]["resources"] = {"gpus": 1, "cpu": "8", "memory": "32Gi", "gpuProducts": ["NVIDIA-L4"]}
    api.create(doc, namespace)
    pods, placed = _placement(api, namespace, "spread", 2)
    pod_spec = pods[0]["spec"]
    assert [(t["topologyKey"], t["whenUnsatisfiable"]) for t in pod_spec["topologySpreadConstraints"]] == [
        ("topology.kubernetes.io/zone", "ScheduleAnyway"), ("kubernetes.io/hostname", "ScheduleAnyway")]
    assert pod_spec["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]["nodeSelectorTerms"] == [
        {"matchExpressions": [{"key": "nvidia.com/gpu.product", "operator": "In", "values": ["NVIDIA-L4"]}]}]
    assert sorted(placed) == [("gpu-l4-0", "zone-a"), ("gpu-l4-1", "zone-b")], placed
    # The control: the same replicas without the spread follow the resource scoring onto one node.
    packed = copy.deepcopy(doc)
    packed["metadata"]["name"] = "packed"
    packed["spec"]["resources"]["topologySpread"] = []
    api.delete(*LLMD, namespace, "spread")
    wait_for(lambda: not [p for p in api.list("v1", "Pod", namespace, "llmops.dev/deployment=spread")], 60, "the spread pods gone")
    api.create(packed, namespace)
    pods, placed = _placement(api, namespace, "packed", 2)
    assert "topologySpreadConstraints" not in pods[0]["spec"]
    assert placed == [("gpu-l4-0", "zone-a")] * 2, placed


def test_a_hard_spread_rule_holds_a_replica_pending_rather_than_break_it(api, operator, namespace):
    """whenUnsatisfiable: DoNotSchedule over zones: one L4 per zone, room for one replica in zone-b only (a pod holds
    7 of gpu-l4-1's 8 GPUs). Three replicas fit (zone-a 2, zone-b 1); a fourth in zone-a would skew the zones by 2,
    so kube-scheduler leaves it Pending rather than break the rule."""
    _l4_nodes_to_ourselves(api, namespace)
    api.create(_restricted_pod("hold-l4-1", "gpu-l4-1", {"limits": {"nvidia.com/gpu": "7"}}), namespace)
    doc = sample("llmdeployment-minimal")
    doc["metadata"]["name"] = "zonal"
    doc["spec"]["replicas"] = 4
    doc["spec"]["resources"] = {"gpus": 1, "gpuProducts": ["NVIDIA-L4"], "topologySpread": [
        {"topologyKey": "topology.kubernetes.io/zone", "whenUnsatisfiable": "DoNotSchedule"}]}
    api.create(doc, namespace)
    obj = wait_for(lambda: (o := _llmd(api, namespace, "zonal")) and o.get("status", {}).get("stableRevision") and o, 60, "a revision")
    deployment = f"zonal-{obj['status']['stableRevision']}"
    pods = wait_for(lambda: (p := api.pods_of(namespace, deployment)) and len(p) == 4 and sum(bool(x["spec"].get("nodeName")) for x in p) == 3
                    and p, 60, "three of four pods bound")
    zones = sorted(api.get("v1", "Node", None, x["spec"]["nodeName"])["metadata"]["labels"]["topology.kubernetes.io/zone"]
                   for x in pods if x["spec"].get("nodeName"))
    assert zones == ["zone-a", "zone-a", "zone-b"]
    (pending,) = [x for x in pods if not x["spec"].get("nodeName")]
    reason = wait_for(lambda: next((c for c in (api.get("v1", "Pod", namespace, pending["metadata"]["name"]).get("status") or {})
                                    .get("conditions", []) if c["type"] == "PodScheduled" and c["status"] == "False"), None), 30,
                      "the scheduler's verdict")
    assert reason["reason"] == "Unschedulable" and "topology spread constraints" in reason["message"], reason


SECURITY = ("PeerAuthentication", "RequestAuthentication", "AuthorizationPolicy")


def test_auth_policies_are_admitted_follow_the_spec_and_go_when_it_drops_them(api, operator, namespace):
    """spec.auth on the real API server with Istio's CRDs (their schemas and CEL rules): JWT verification, an ALLOW
    policy and STRICT mTLS are created, changed and deleted with the spec (the operator's own grants for the three
    kinds, which the RBAC test counts); vLLM's API key reaches the pods from its Secret by the environment only."""
    doc = sample("llmdeployment-minimal")
    doc["spec"]["auth"] = {
        "jwt": [{"issuer": "https://auth.example.com", "jwksUri": "https://auth.example.com/.well-known/jwks.json", "audiences": ["qwen"]}],
        "allow": [{"requestPrincipals": ["https://auth.example.com/*"], "claims": [{"claim": "groups", "values": ["llm-users"]}]},
                  {"principals": ["cluster.local/ns/apps/sa/chat"]}],
        "mtls": "STRICT"}
    api.create(doc, namespace)
    objects = wait_for(lambda: (c := _children(api, namespace, "qwen-small")) and all(c[k] for k in SECURITY) and c, 60, "the three policies")
    for kind in SECURITY:
        (obj,) = objects[kind]
        validate(obj)
        assert obj["spec"]["selector"] == {"matchLabels": {"llmops.dev/deployment": "qwen-small"}}
        assert obj["metadata"]["ownerReferences"][0]["name"] == "qwen-small"
    (policy,) = objects["AuthorizationPolicy"]
    assert policy["spec"]["rules"][0]["when"] == [{"key": "request.auth.claims[groups]", "values": ["llm-users"]}]
    # An edit reaches the policy; dropping jwt deletes its verification and the policy keeps the mTLS rule only.
    api.patch(*LLMD, namespace, "qwen-small", {"spec": {"auth": {"jwt": None, "allow": [{"namespaces": ["apps"]}]}}})
    wait_for(lambda: api.get("security.istio.io/v1", "RequestAuthentication", namespace, "qwen-small") is None, 60, "JWT verification gone")
    policy = wait_for(lambda: (p := api.get("security.istio.io/v1", "AuthorizationPolicy", namespace, "qwen-small"))
                      and p["spec"]["rules"][0] == {"from": [{"source": {"namespaces": ["apps"]}}]} and p, 60, "the policy edited")
    # vLLM's own key instead: no Istio policy left but the PeerAuthentication, the key in the pods' environment.
    api.create({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "qwen-key"}, "stringData": {"api-key": "e2e-key-not-logged"}},
               namespace)
    api.patch(*LLMD, namespace, "qwen-small", {"spec": {"auth": {"allow": None, "mtls": None, "apiKey": {"secretRef": {"name": "qwen-key"}}}}})
    wait_for(lambda: all(api.get("security.istio.io/v1", k, namespace, "qwen-small") is None for k in SECURITY), 60, "every policy deleted")
    revision = _llmd(api, namespace, "qwen-small")["status"]["stableRevision"]
    container = wait_for(lambda: (d := api.get("apps/v1", "Deployment", namespace, f"qwen-small-{revision}")) and any(
        e["name"] == "VLLM_API_KEY" for e in d["spec"]["template"]["spec"]["containers"][0]["env"]) and d, 60,
        "the key in the pod template")["spec"]["template"]["spec"]["containers"][0]
    assert {"name": "VLLM_API_KEY", "valueFrom": {"secretKeyRef": {"name": "qwen-key", "key": "api-key"}}} in container["env"]
    assert "e2e-key-not-logged" not in str(container) and "e2e-key-not-logged" not in operator.log_tail(2000)
    deletes = {r.resource for r in api.requests() if r.user == OPERATOR_USER and r.namespace == namespace and r.verb == "delete"}
    assert {"peerauthentications", "requestauthentications", "authorizationpolicies"} <= deletes


def test_the_api_server_refuses_runtime_env_named_like_the_operators_contract_or_twice(api, namespace):
    """Issue item 10: the serving container's ``LLMOPS_*`` variables are the operator's contract with the image (set
    from the spec), and each variable is named once (server-side apply refuses a list with two entries of one name).
    The real API server refuses both in runtime.env, by the CRD's CEL rule and its list-map key, naming the entry;
    an entry replacing one of the operator's defaults (HOME) is an ordinary spec."""
    doc = sample("llmdeployment-minimal")
    for env, words in [
        ([{"name": "LLMOPS_MODEL_URI", "value": "hf://org/elsewhere"}],
         ["spec.runtime.env[0].name", "LLMOPS_* variables are the operator's contract"]),
        ([{"name": "HOME", "value": "/srv/a"}, {"name": "HOME", "value": "/srv/b"}], ["spec.runtime.env[1]", "Duplicate value"]),
    ]:
        bad = copy.deepcopy(doc)
        bad["spec"].setdefault("runtime", {})["env"] = env
        with pytest.raises(UnprocessibleEntityError) as refused:
            api.create(bad, namespace)
        message = refused.value.summary()
        assert 'LLMDeployment.llmops.dev "qwen-small" is invalid' in message and all(w in message for w in words), message
    assert api.list(*LLMD, namespace) == []
    doc["spec"].setdefault("runtime", {})["env"] = [{"name": "HOME", "value": "/srv/home"}]
    assert api.create(doc, namespace)["spec"]["runtime"]["env"] == [{"name": "HOME", "value": "/srv/home"}]


def test_pod_security_restricted_refuses_a_root_pod_and_admits_the_operators(api, namespace):
    """Issue item 12's negative control: the serving namespaces enforce the Pod Security Standard ``restricted``, and
    the real PodSecurity admission does refuse a pod that breaks it. The operator's pod (its rendered template, as
    test_sample_becomes_valid_owned_children sees its Deployments' pods admitted and running) passes; the same pod as
    root, free to escalate, with its capabilities and without a seccomp profile is refused, each violation named.
    (A privileged container never reaches PodSecurity here: kube-apiserver's default --allow-privileged=false refuses
    it first.) Dry runs: admission runs in full, nothing is stored or scheduled."""
    assert api.get("v1", "Namespace", None, namespace)["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"
    (deployment,) = [o for o in render([sample("llmdeployment-minimal")], namespace) if o["kind"] == "Deployment"]
    template = deployment["spec"]["template"]
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {**template["metadata"], "name": "rendered", "namespace": namespace},
           "spec": template["spec"]}
    pods = api.resource("v1", "Pod")
    assert pods.create(body=pod, namespace=namespace, dry_run="All").metadata.name == "rendered"
    bad = copy.deepcopy(pod)
    bad["metadata"]["name"] = "root"
    bad["spec"]["securityContext"] = {}  # no runAsNonRoot, no seccompProfile
    bad["spec"]["containers"][0]["securityContext"] = {"runAsUser": 0, "allowPrivilegeEscalation": True}
    with pytest.raises(ForbiddenError) as refused:
        pods.create(body=bad, namespace=namespace, dry_run="All")
    message = refused.value.summary()
    assert 'pods "root" is forbidden: violates PodSecurity "restricted:latest"' in message, message
    for violation in ("allowPrivilegeEscalation != false", "unrestricted capabilities", "runAsNonRoot != true", "runAsUser=0",
                      "seccompProfile"):
        assert violation in message, (violation, message)
    assert api.list("v1", "Pod", namespace) == []


GATEWAY_API = {"router": "gatewayAPI", "gatewayAPI": {
    "parentRefs": [{"name": "inference-gateway", "namespace": "gateways"}], "hostnames": ["qwen.example.com"],
    "endpointPicker": {"stable": {"name": "qwen-epp"}, "canary": {"name": "qwen-canary-epp"}}}}


def test_switching_the_router_replaces_the_routes_on_the_api_server(api, operator, namespace):
    """spec.traffic.router on the real API server with the Gateway API and Inference Extension CRDs (issue 18): Istio's
    VirtualService and DestinationRules give way to an HTTPRoute over two InferencePools (admitted by their CRDs'
    schemas and CEL rules), the pools to the Services when the endpoint pickers go, and the HTTPRoute to Istio's
    objects again. The old objects stay until the new route carries the traffic: an HTTPRoute once its Gateway accepts
    it (the test stands in for the gateway controller), Istio's objects once they are live; status.router says which
    router routes."""
    doc = sample("llmdeployment-minimal")
    api.create(doc, namespace)

    def kinds():
        return {k for k, v in _children(api, namespace, "qwen-small").items() if v} - {"Deployment", "Service", "PodDisruptionBudget"}

    def router():
        return ((_llmd(api, namespace, "qwen-small") or {}).get("status") or {}).get("router")

    wait_for(lambda: kinds() == {"DestinationRule", "VirtualService"} and router() == "istio", 60, "Istio's routes")
    api.patch(*LLMD, namespace, "qwen-small", {"spec": {"traffic": GATEWAY_API}})
    wait_for(lambda: "HTTPRoute" in kinds(), 60, "the HTTPRoute applied")
    assert kinds() == {"HTTPRoute", "InferencePool", "DestinationRule", "VirtualService"} and router() == "istio"  # not accepted yet
    wait_for(lambda: api.accept_http_routes(namespace) and kinds() == {"HTTPRoute", "InferencePool"} and router() == "gatewayAPI",
             60, "Istio's objects gone once the Gateway accepted the HTTPRoute")
    children = _children(api, namespace, "qwen-small")
    for child in children["HTTPRoute"] + children["InferencePool"]:
        validate(child)
    (route,) = children["HTTPRoute"]
    assert route["spec"]["parentRefs"][0]["name"] == "inference-gateway" and route["spec"]["hostnames"] == ["qwen.example.com"]
    assert sorted(p["spec"]["endpointPickerRef"]["name"] for p in children["InferencePool"]) == ["qwen-canary-epp", "qwen-epp"]
    # The delete came after the apply of the new route: no moment without a route.
    mine = [r for r in api.requests() if r.user == OPERATOR_USER and r.namespace == namespace and r.verb in ("patch", "delete")]
    first_route = next(i for i, r in enumerate(mine) if r.resource == "httproutes")
    assert all(i > first_route for i, r in enumerate(mine) if r.verb == "delete" and r.resource == "virtualservices")
    api.patch(*LLMD, namespace, "qwen-small", {"spec": {"traffic": {"gatewayAPI": {"endpointPicker": None}}}})
    route = wait_for(lambda: api.accept_http_routes(namespace) and kinds() == {"HTTPRoute"}
                     and (r := api.get("gateway.networking.k8s.io/v1", "HTTPRoute", namespace, "qwen-small"))
                     and r["spec"]["rules"][0]["backendRefs"][0]["kind"] == "Service" and r, 60, "the Services as backends")
    assert [(r["name"], r["port"], r["weight"]) for r in route["spec"]["rules"][0]["backendRefs"]] == [
        ("qwen-small", 8000, 100), ("qwen-small-canary", 8000, 0)]
    api.patch(*LLMD, namespace, "qwen-small", {"spec": {"traffic": None}})
    wait_for(lambda: kinds() == {"DestinationRule", "VirtualService"} and router() == "istio", 60, "Istio's routes again")
    deleted = {r.resource for r in api.requests() if r.user == OPERATOR_USER and r.namespace == namespace and r.verb == "delete"}
    assert {"virtualservices", "destinationrules", "httproutes", "inferencepools"} <= deleted


def test_an_adapter_added_by_spec_edit_rolls_out_through_the_canary(api, operator, namespace):
    """Issue 19: a LoRA adapter is part of the revision: adding one by a spec edit rolls a new revision out through
    the canary steps (its pods get vLLM's LoRA flags and the adapters' contract), the stable revision's pods untouched,
    and the status names the adapters served once it is promoted."""
    doc = _held(sample("llmdeployment-minimal"))  # pods made ready by the test, one revision after the other
    doc["spec"]["rollout"] = {"steps": [{"setWeight": 50}, {"pause": {"duration": "2s"}}], "analyzeEveryStep": False,
                              "bakeDuration": "0s", "scaleDownDelaySeconds": 0}
    api.create(doc, namespace)
    first = wait_for(lambda: _reconciled(api, namespace, "qwen-small"), what="first reconcile")["status"]["stableRevision"]
    api.set_pods_ready(namespace, f"qwen-small-{first}", 1)
    adapters = [{"name": "sql", "uri": "s3://loras/sql"}, {"name": "support", "uri": "s3://loras/support", "baseModel": "Qwen/Qwen2.5-1.5B-Instruct"}]
    api.patch(*LLMD, namespace, "qwen-small", {"spec": {"adapters": adapters}})
    new = wait_for(lambda: (o := _reconciled(api, namespace, "qwen-small", 2)) and o["status"].get("canaryRevision"), what="a canary revision")
    rollout = wait_for(lambda: rollout_of(api, namespace, new), what="its rollout")
    assert rollout["spec"]["target"]["adapters"] == adapters
    canary = api.get("apps/v1", "Deployment", namespace, f"qwen-small-{new}")
    validate(canary)
    container = canary["spec"]["template"]["spec"]["containers"][0]
    args = container["args"]
    assert args[args.index("--enable-lora"):args.index("--enable-lora") + 2] == ["--enable-lora", "--lora-modules"]
    assert args[args.index("--max-loras") + 1] == "2"
    contract = next(e["value"] for e in container["env"] if e["name"] == "LLMOPS_ADAPTERS")
    assert [a["name"] for a in json.loads(contract)] == ["sql", "support"]
    stable = api.get("apps/v1", "Deployment", namespace, f"qwen-small-{first}")
    assert "--enable-lora" not in stable["spec"]["template"]["spec"]["containers"][0]["args"]
    api.set_pods_ready(namespace, f"qwen-small-{new}", 1)
    vs = wait_for(lambda: (v := api.get("networking.istio.io/v1", "VirtualService", namespace, "qwen-small"))
                  and v["spec"]["http"][0]["route"][1]["weight"] == 50 and v, 60, "the canary at 50%")
    assert vs["spec"]["http"][0]["route"][0]["weight"] == 50
    obj = wait_for(lambda: (o := _llmd(api, namespace, "qwen-small")) and o["status"]["stableRevision"] == new and o, 60, "promoted")
    assert [a["name"] for a in obj["status"]["adapters"]] == ["sql", "support"] and obj["status"]["adapterCount"] == 2
    # The rollout's status lands after the LLMDeployment's (by design: execute): awaited, not raced.
    wait_for(lambda: next(r for r in api.list("llmops.dev/v1alpha1", "LLMRollout", namespace) if r["metadata"]["name"] == rollout[
        "metadata"]["name"])["status"]["phase"] == "Succeeded", 30, "the rollout Succeeded")
