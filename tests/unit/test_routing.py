"""The traffic routers (issue 18): Istio's VirtualService and the Gateway API's HTTPRoute (over InferencePools or the
Services) behind one interface. The rendering of every strategy is validated against the upstream CRD schemas, and
the same rollout passes run through the planner with either router."""

import copy

import pytest

from llm_operator import _builders as b
from llm_operator._routing import GATEWAY_API, ISTIO, ROUTERS, observed_routers, router_for
from llm_operator._validation import parse_llmdeployment
from tests.schemas import validate
from tests.unit.test_reconcile import T0, T1, T2, Cluster, _all_ready, _rollouts

GATEWAY = {"parentRefs": [{"name": "inference-gateway", "namespace": "gateways", "sectionName": "https"}],
           "hostnames": ["llm.example.com"]}
PICKERS = {"stable": {"name": "qwen-epp"}, "canary": {"name": "qwen-canary-epp", "port": 9003}}
TRAFFIC = {
    "istio": {},
    "gatewayAPI services": {"router": "gatewayAPI", "gatewayAPI": GATEWAY},
    "gatewayAPI pools": {"router": "gatewayAPI", "gatewayAPI": {**GATEWAY, "endpointPicker": PICKERS}},
}


def _spec(samples, traffic: dict):
    doc = copy.deepcopy(samples["llmdeployment-minimal"])
    doc["spec"]["traffic"] = copy.deepcopy(traffic)
    return parse_llmdeployment(doc)


def _children(objects) -> dict:
    return {(o["kind"], o["metadata"]["name"]): o for o in objects}


ROUTES = [b.Routes(), b.Routes(75, 25, 0), b.Routes(100, 0, 30), b.Routes(0, 100, 0)]


@pytest.mark.parametrize("traffic", list(TRAFFIC), ids=list(TRAFFIC))
@pytest.mark.parametrize("routes", ROUTES, ids=[f"{r.stable_weight}-{r.canary_weight}-mirror{r.mirror_percent}" for r in ROUTES])
@pytest.mark.parametrize("preview", [None, "x-llmops-preview"], ids=["", "preview"])
def test_every_router_renders_valid_objects_and_reads_its_weights_back(samples, traffic, routes, preview):
    """Canary steps (weights), shadow (a mirror percent), blue-green's preview (a header route): each router's objects
    validate against their projects' CRD schemas, and the router reads back the weights it wrote."""
    spec = _spec(samples, TRAFFIC[traffic])
    router = router_for(spec.traffic.router)
    objects = router.build("qwen", "ml", spec, "aaaa", "bbbb", routes, preview)
    for obj in objects:
        validate(obj)
    assert set(_children(objects)) <= {(kind, name) for _, kind, name in router.children("qwen")}  # observed, cleaned up
    assert router.live_routes(_children(objects), "qwen") == routes
    assert router.live_routes({}, "qwen") is None


def test_the_http_route_splits_across_the_pools_mirrors_to_the_canary_service_and_previews_by_header(samples):
    spec = _spec(samples, TRAFFIC["gatewayAPI pools"])
    stable_pool, canary_pool, route = GATEWAY_API.build("qwen", "ml", spec, "aaaa", "bbbb", b.Routes(90, 10, 20), "x-preview")
    assert stable_pool["spec"]["selector"]["matchLabels"] == {"llmops.dev/deployment": "qwen", "llmops.dev/revision": "aaaa"}
    assert canary_pool["spec"]["selector"]["matchLabels"]["llmops.dev/revision"] == "bbbb"
    assert stable_pool["spec"]["targetPorts"] == [{"number": 8000}]  # vLLM's container port
    assert (stable_pool["spec"]["endpointPickerRef"], canary_pool["spec"]["endpointPickerRef"]["name"]) == (
        {"kind": "Service", "name": "qwen-epp", "port": {"number": 9002}, "failureMode": "FailClose"}, "qwen-canary-epp")
    preview, primary = route["spec"]["rules"]
    assert [(r["kind"], r["name"], r["weight"]) for r in primary["backendRefs"]] == [
        ("InferencePool", "qwen", 90), ("InferencePool", "qwen-canary", 10)]
    assert primary["filters"] == [{"type": "RequestMirror", "requestMirror": {
        "backendRef": {"group": "", "kind": "Service", "name": "qwen-canary", "port": 8000}, "percent": 20}}]
    assert preview["matches"][0]["headers"] == [{"type": "Exact", "name": "x-preview", "value": "true"}]
    assert [r["name"] for r in preview["backendRefs"]] == ["qwen-canary"]
    assert route["spec"]["parentRefs"] == [{"group": "gateway.networking.k8s.io", "kind": "Gateway", "name": "inference-gateway",
                                            "namespace": "gateways", "sectionName": "https"}]
    assert route["spec"]["hostnames"] == ["llm.example.com"] and primary["timeouts"] == {"request": "600s"}
    # Without endpoint pickers: the Services, which every Gateway API implementation routes to.
    (plain,) = GATEWAY_API.build("qwen", "ml", _spec(samples, TRAFFIC["gatewayAPI services"]), "aaaa", None, b.Routes(), None)
    assert [(r["kind"], r["name"], r.get("port")) for r in plain["spec"]["rules"][0]["backendRefs"]] == [
        ("Service", "qwen", 8000), ("Service", "qwen-canary", 8000)]


def test_observed_routers_include_the_one_the_status_records_until_it_is_replaced():
    assert observed_routers(None, {}) == (ISTIO,)
    assert observed_routers("gatewayAPI", {}) == (GATEWAY_API,)  # a new object: nothing of another router to find
    assert observed_routers("gatewayAPI", {"stableRevision": "a"}) == (GATEWAY_API, ISTIO)  # from before status.router
    assert observed_routers("gatewayAPI", {"stableRevision": "a", "router": "gatewayAPI"}) == (GATEWAY_API,)
    assert observed_routers("istio", {"router": "gatewayAPI"}) == (ISTIO, GATEWAY_API)
    assert set(ROUTERS) == {"istio", "gatewayAPI"}


# ------------------------------------------------------------------------ the same passes, either router


def _cluster(samples, traffic: str, **rollout) -> tuple[Cluster, str]:
    doc = copy.deepcopy(samples["llmdeployment-minimal"])
    doc["spec"]["traffic"] = copy.deepcopy(TRAFFIC[traffic])
    doc["spec"]["rollout"] = {"steps": [{"setWeight": 25}, {"pause": {}}, {"setWeight": 50}, {"pause": {}}],
                              "analyzeEveryStep": False, "bakeDuration": "0s", **rollout}
    cluster = Cluster(doc)
    cluster.reconcile(T0)
    _all_ready(cluster)
    cluster.reconcile(T0)
    return cluster, cluster.body["status"]["stableRevision"]


def _routes(cluster) -> b.Routes | None:
    router = router_for(cluster.body["spec"]["traffic"].get("router"))
    children = {(k[1], k[3]): v for k, v in cluster.kube.objects.items()}
    return router.live_routes(children, cluster.key[3])


def _to_model_b(cluster):
    """A new model in the spec, through its rollout's first step (its pods made ready): the canary at 25%."""
    cluster.edit_spec(model={"uri": "hf://org/model-b"})
    cluster.reconcile(T1)
    cluster.reconcile(T1)
    _all_ready(cluster)
    cluster.reconcile(T1)


def _kinds(cluster) -> set[str]:
    return {k[1] for k in cluster.kube.objects} - {"LLMDeployment", "LLMRollout", "Deployment", "Service", "PodDisruptionBudget"}


def _resume(cluster):
    (name, rollout), = _rollouts(cluster).items()
    obj = cluster.kube.objects[(rollout["apiVersion"], "LLMRollout", "default", name)]
    obj["spec"]["resume"] = obj["spec"].get("resume", 0) + 1
    obj["metadata"]["generation"] += 1


@pytest.mark.parametrize("traffic", list(TRAFFIC), ids=list(TRAFFIC))
def test_a_canary_moves_the_routers_weights_step_by_step_and_promotes(samples, traffic):
    cluster, a = _cluster(samples, traffic)
    assert cluster.body["status"]["router"] == (TRAFFIC[traffic].get("router") or "istio")
    assert _kinds(cluster) == ({"DestinationRule", "VirtualService"} if traffic == "istio" else
                               {"HTTPRoute", "InferencePool"} if "pools" in traffic else {"HTTPRoute"})
    assert _routes(cluster) == b.Routes(100, 0, 0) and cluster.reconcile(T0)[1] == []
    _to_model_b(cluster)
    assert _routes(cluster) == b.Routes(75, 25, 0)
    assert cluster.reconcile(T1)[1] == []  # paused: nothing written
    _resume(cluster)
    cluster.reconcile(T2)
    _all_ready(cluster)
    cluster.reconcile(T2)
    assert _routes(cluster) == b.Routes(50, 50, 0)
    # An edit of the route's structure mid-canary keeps the rollout's weights.
    cluster.edit_spec(traffic={**copy.deepcopy(TRAFFIC[traffic]), "timeout": "900s"})
    cluster.reconcile(T2)
    assert _routes(cluster) == b.Routes(50, 50, 0)
    _resume(cluster)
    for _ in range(3):  # past the last pause: the canary at full size, then the switch
        cluster.reconcile(T2)
        _all_ready(cluster)
    (rollout,) = _rollouts(cluster).values()
    assert rollout["status"]["phase"] == "Succeeded", rollout["status"].get("message")
    assert _routes(cluster) == b.Routes(100, 0, 0) and cluster.body["status"]["stableRevision"] != a


@pytest.mark.parametrize("traffic", list(TRAFFIC), ids=list(TRAFFIC))
def test_an_aborted_canary_puts_the_routers_canary_weight_back_to_zero(samples, traffic):
    cluster, a = _cluster(samples, traffic)
    _to_model_b(cluster)
    assert _routes(cluster) == b.Routes(75, 25, 0)
    (name, rollout), = _rollouts(cluster).items()
    cluster.kube.objects[(rollout["apiVersion"], "LLMRollout", "default", name)]["spec"]["abort"] = True
    cluster.reconcile(T2)
    assert _rollouts(cluster)[name]["status"]["phase"] == "Aborted"
    assert _routes(cluster) == b.Routes(100, 0, 0) and cluster.body["status"]["stableRevision"] == a


@pytest.mark.parametrize("traffic", ["gatewayAPI services", "gatewayAPI pools"])
def test_blue_green_and_shadow_through_the_http_route(samples, traffic):
    cluster, a = _cluster(samples, traffic, strategy="blueGreen", analysisDuration="1m")
    _to_model_b(cluster)
    route = cluster.child("HTTPRoute")
    preview, primary = route["spec"]["rules"]
    assert preview["matches"][0]["headers"] == [{"type": "Exact", "name": "x-llmops-preview", "value": "true"}]
    assert [r["weight"] for r in primary["backendRefs"]] == [100, 0]
    validate({k: v for k, v in route.items() if k != "status"})

    cluster, a = _cluster(samples, traffic, strategy="shadow", mirrorPercent=30)
    _to_model_b(cluster)
    assert _routes(cluster) == b.Routes(100, 0, 30)
    validate({k: v for k, v in cluster.child("HTTPRoute").items() if k != "status"})


def _accept(cluster, behind=0):
    """What a Gateway API implementation writes once it routes by the HTTPRoute: Accepted and ResolvedRefs (for the
    generation ``behind`` the current one)."""
    route = next(v for k, v in cluster.kube.objects.items() if k[1] == "HTTPRoute")
    gen = route["metadata"]["generation"] - behind
    route["status"] = {"parents": [{"parentRef": route["spec"]["parentRefs"][0], "controllerName": "example.com/gateway", "conditions": [
        {"type": t, "status": "True", "reason": t, "observedGeneration": gen, "lastTransitionTime": T0, "message": ""}
        for t in ("Accepted", "ResolvedRefs")]}]}


def test_switching_routers_deletes_the_old_ones_objects_once_the_new_route_carries_the_traffic(samples):
    cluster, a = _cluster(samples, "istio")
    assert _kinds(cluster) == {"DestinationRule", "VirtualService"}
    cluster.edit_spec(traffic=copy.deepcopy(TRAFFIC["gatewayAPI pools"]))
    plan, writes = cluster.reconcile(T1)
    assert [w for w in writes if w[1] != "LLMDeployment"] == [
        ("apply", "InferencePool", "qwen-small"), ("apply", "InferencePool", "qwen-small-canary"), ("apply", "HTTPRoute", "qwen-small")]
    assert cluster.body["status"]["router"] == "istio" and plan.requeue_after == 5.0
    routed = next(c for c in cluster.body["status"]["conditions"] if c["type"] == "TrafficRouted")
    assert (routed["status"], routed["reason"], routed["message"]) == ("False", "RouteNotAccepted", (
        "spec.traffic.router is gatewayAPI, but the istio router's objects still carry the traffic: InferencePool qwen-small "
        "is being applied"))
    assert [e.reason for e in plan.events].count("RouteNotAccepted") == 1  # the condition's transition
    # Not accepted by its Gateway yet (a wrong parentRef, say): the VirtualService keeps routing, nothing is written.
    plan, writes = cluster.reconcile(T1)
    assert [w for w in writes if w[1] != "LLMDeployment"] == [] and plan.requeue_after == 5.0
    assert _kinds(cluster) == {"DestinationRule", "VirtualService", "HTTPRoute", "InferencePool"}
    routed = next(c for c in cluster.body["status"]["conditions"] if c["type"] == "TrafficRouted")
    assert routed["message"].endswith("HTTPRoute qwen-small is not accepted yet by its parents (0 of 0 report Accepted and "
                                      "ResolvedRefs for generation 1)")
    assert cluster.reconcile(T1)[1] == []  # waiting writes nothing
    _accept(cluster, behind=1)  # accepted, but an older generation of it: not yet (the condition says 0 of 1)
    assert [w for w in cluster.reconcile(T1)[1] if w[1] != "LLMDeployment"] == [] and cluster.reconcile(T1)[1] == []
    _accept(cluster)
    plan, writes = cluster.reconcile(T1)
    assert [w for w in writes if w[1] != "LLMDeployment"] == [
        ("delete", "VirtualService", "qwen-small"), ("delete", "DestinationRule", "qwen-small"),
        ("delete", "DestinationRule", "qwen-small-canary")]
    assert _kinds(cluster) == {"HTTPRoute", "InferencePool"} and cluster.body["status"]["router"] == "gatewayAPI"
    assert "TrafficRouted" not in {c["type"] for c in cluster.body["status"]["conditions"]}
    assert cluster.reconcile(T1)[1] == []
    # Endpoint pickers removed: the Services are the backends, the pools go once that route is accepted.
    cluster.edit_spec(traffic=copy.deepcopy(TRAFFIC["gatewayAPI services"]))
    plan, writes = cluster.reconcile(T2)
    assert [w for w in writes if w[1] != "LLMDeployment"] == [("apply", "HTTPRoute", "qwen-small")]
    route = next(v for k, v in cluster.kube.objects.items() if k[1] == "HTTPRoute")
    route["metadata"]["generation"] += 1  # the API server's count of spec changes
    _accept(cluster)
    plan, writes = cluster.reconcile(T2)
    assert [w for w in writes if w[1] != "LLMDeployment"] == [
        ("delete", "InferencePool", "qwen-small"), ("delete", "InferencePool", "qwen-small-canary")]
    # And back to Istio: the HTTPRoute goes one pass after the VirtualService is live.
    cluster.edit_spec(traffic={})
    plan, writes = cluster.reconcile(T2)
    assert ("delete", "HTTPRoute", "qwen-small") not in writes and cluster.body["status"]["router"] == "gatewayAPI"
    plan, writes = cluster.reconcile(T2)
    assert ("delete", "HTTPRoute", "qwen-small") in writes and _kinds(cluster) == {"DestinationRule", "VirtualService"}
    assert _routes(cluster) == b.Routes(100, 0, 0) and cluster.body["status"]["router"] == "istio"
    assert cluster.reconcile(T2)[1] == []


def test_make_before_break_sees_the_canary_weight_on_any_routers_live_route(samples):
    """A newer rollout taking over mid-canary in the pass the router changes: the canary Service still has weight on
    the old router's route, so it is not re-pointed yet (issue 18 review)."""
    from llm_operator._planner import Apply, Observed, make_before_break

    spec = _spec(samples, TRAFFIC["istio"])
    vs = ISTIO.build("qwen", "ml", spec, "aaaa", "bbbb", b.Routes(50, 50, 0), None)[-1]
    old_canary = b.build_service("qwen", "ml", spec, "canary", "bbbb")
    new_canary = b.build_service("qwen", "ml", spec, "canary", "cccc")
    observed = Observed(children={("VirtualService", "qwen"): vs, ("Service", "qwen-canary"): old_canary})
    kept, held = make_before_break([Apply(new_canary, created=False)], observed, "qwen", GATEWAY_API)
    assert (kept, held) == ([], True)


def test_http_route_weights_are_shares_of_our_backends():
    route = {"metadata": {"name": "qwen"}, "spec": {"rules": [
        {"matches": [{"headers": [{"name": "x-llmops-preview", "value": "true"}]}], "backendRefs": [{"name": "qwen-canary", "weight": 1}]},
        {"backendRefs": [{"name": "qwen", "weight": 900}, {"name": "qwen-canary", "weight": 100}, {"name": "someone-else", "weight": 5000}],
         "filters": [{"type": "RequestMirror", "requestMirror": {"backendRef": {"name": "qwen-canary"}}}]}]}}
    assert b.http_routes_of(route) == b.Routes(90, 10, 100)  # a mirror with no percent mirrors everything
    route["spec"]["rules"][1] = {"backendRefs": [{"name": "qwen"}, {"name": "qwen-canary"}]}  # weight 1 each, as defaulted
    assert b.http_routes_of(route) == b.Routes(50, 50, 0)


def test_a_mesh_service_parent_gets_the_core_group(samples):
    parents = [{"kind": "Service", "name": "qwen"}, {"name": "gw", "sectionName": "https.internal"}]
    traffic = {"router": "gatewayAPI", "gatewayAPI": {"parentRefs": parents}}
    (route,) = GATEWAY_API.build("qwen", "ml", _spec(samples, traffic), "aaaa", None, b.Routes(), None)
    assert route["spec"]["parentRefs"] == [{"group": "", "kind": "Service", "name": "qwen"},
                                           {"group": "gateway.networking.k8s.io", "kind": "Gateway", "name": "gw", "sectionName": "https.internal"}]
    validate(route)


def test_a_router_switch_mid_canary_keeps_moving_the_route_that_carries_the_traffic(samples):
    """Review finding: while the new HTTPRoute waits for its Gateway, the VirtualService still routes everything; it
    keeps getting the rollout's weights (an abort puts them back on stable there too), not frozen at the switch."""
    cluster, a = _cluster(samples, "istio")
    _to_model_b(cluster)
    assert _routes(cluster) == b.Routes(75, 25, 0)
    cluster.edit_spec(traffic=copy.deepcopy(TRAFFIC["gatewayAPI services"]))
    cluster.reconcile(T1)  # the HTTPRoute applied, not accepted: the VirtualService still carries the traffic
    vs = b.routes_of(cluster.child("VirtualService"))
    assert vs == b.Routes(75, 25, 0) and _routes(cluster) == b.Routes(75, 25, 0)
    _resume(cluster)
    cluster.reconcile(T2)
    _all_ready(cluster)
    cluster.reconcile(T2)
    assert b.routes_of(cluster.child("VirtualService")) == b.Routes(50, 50, 0) == _routes(cluster)
    (name, rollout), = _rollouts(cluster).items()
    cluster.kube.objects[(rollout["apiVersion"], "LLMRollout", "default", name)]["spec"]["abort"] = True
    cluster.reconcile(T2)
    assert b.routes_of(cluster.child("VirtualService")) == b.Routes(100, 0, 0) == _routes(cluster)
