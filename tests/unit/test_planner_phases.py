"""The planner's phases, each table-tested on its own.

:func:`~llm_operator._planner.plan_llmdeployment` is a chain of pure phases; here each is called directly with a
hand-made :class:`~llm_operator._planner._Pass` (the minimal sample, what is live, the time) and hand-made frozen
results of the phases before it, and each row pins one decision. Revisions are written as symbols: A is the
minimal sample's model, B and C other URIs, v4 and v5 MLflow versions; :func:`_sym` turns ids back into symbols.
"""

import copy
import datetime

import pytest

from llm_operator import _builders as b
from llm_operator import _contract as c
from llm_operator import _progressive as p
from llm_operator import _registry as reg
from llm_operator._api import ResolvedModel
from llm_operator._planner import (
    Apply,
    Create,
    Delete,
    Observed,
    Scale,
    WriteStatus,
    _advance_rollout,
    _Desired,
    _desired,
    _order,
    _Ordered,
    _Pass,
    _replica_target,
    _retain,
    _Retained,
    _Serving,
    _Size,
    _start_or_supersede,
    _Started,
    _status,
    _Target,
    _target,
    with_applied_hash,
)
from llm_operator._validation import parse_llmdeployment
from llm_operator._vocabulary import parse_rfc3339, rfc3339
from tests.conftest import load_samples

NOW = "2026-11-21T10:00:00Z"
MINIMAL = load_samples()["llmdeployment-minimal"]  # qwen-small in default, one replica, no autoscaler
NAME = MINIMAL["metadata"]["name"]
URIS = {"A": MINIMAL["spec"]["model"]["uri"], "B": "hf://org/model-b", "C": "hf://org/model-c"}
MLFLOW = {"name": "support-assistant", "alias": "champion"}
HPA = {"minReplicas": 2, "maxReplicas": 6}
KEDA = {"provider": "keda", "minReplicas": 0, "maxReplicas": 6, "keda": {"serverAddress": "http://prometheus:9090"}}


def _doc(model: str = "A", status: dict | None = None, **spec) -> dict:
    """The minimal LLMDeployment naming ``model`` (a symbol of URIS, or an ``mlflow`` reference), with ``spec``'s
    fields set and ``status`` (revision symbols in it turned into ids)."""
    doc = copy.deepcopy(MINIMAL)
    doc["metadata"]["generation"] = 1
    doc["spec"]["model"] = {"uri": URIS[model]} if isinstance(model, str) else {"mlflow": model}
    doc["spec"].update(spec)
    doc["status"] = _ids(status or {})
    return doc


def _revision(model: str) -> b.Revision:
    """The revision a first pass makes of the minimal sample naming ``model`` (a URI symbol, or v<N>)."""
    doc = _doc(model) if model in URIS else _doc({"name": MLFLOW["name"], "version": model.removeprefix("v")})
    spec = parse_llmdeployment(doc)
    return b.make_revision(spec, b.static_model(spec))


def _sym(text: str) -> str:
    for sym, revision in REV.items():
        text = text.replace(revision, sym)
    return text


def _ids(value):
    """``value`` with revision symbols turned into ids (recursively, in strings that are a symbol or end in -<symbol>)."""
    if isinstance(value, dict):
        return {k: _ids(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_ids(v) for v in value]
    if isinstance(value, str):
        head, _, tail = value.rpartition("-")
        if value in REV:
            return REV[value]
        if head and tail in REV:
            return f"{head}-{REV[tail]}"
    return value


REV = {sym: _revision(sym).id for sym in ("A", "B", "C", "v4", "v5")}


def _pass(doc: dict, observed: Observed | None = None, now: str = NOW, registry: reg.Resolution | None = None) -> _Pass:
    """The pass's snapshot, as plan_llmdeployment takes it."""
    spec, observed = parse_llmdeployment(doc), observed or Observed()
    meta = doc["metadata"]
    return _Pass(meta["name"], meta["namespace"], meta.get("generation"), meta.get("uid"), dict(doc.get("status") or {}),
                 spec, observed, registry, now, parse_rfc3339(now), p.resolve(spec, observed.rollouts))


def _at(seconds: float) -> str:
    return rfc3339(parse_rfc3339(NOW) + datetime.timedelta(seconds=seconds))


# ------------------------------------------------------------------------------ hand-made live objects


def _deployment(sym: str, replicas: int, ready: int | None = None) -> dict:
    """A revision's Deployment as the operator applies it; with ``ready``, as read back (its status caught up)."""
    obj = with_applied_hash({"apiVersion": "apps/v1", "kind": "Deployment",
                             "metadata": {"name": f"{NAME}-{REV[sym]}", "labels": {c.LABEL_REVISION: REV[sym]}},
                             "spec": {"replicas": replicas}})
    if ready is not None:
        obj["metadata"]["generation"] = 1
        obj["status"] = {"observedGeneration": 1, "replicas": replicas, "readyReplicas": ready}
    return obj


def _deployments(**live: tuple[int, int]) -> dict[str, dict]:
    """Live revision Deployments by revision id: symbol=(replicas, ready)."""
    return {REV[sym]: _deployment(sym, replicas, ready) for sym, (replicas, ready) in live.items()}


def _virtual_service(canary_weight: int) -> dict:
    route = [{"destination": {"host": f"{NAME}.default.svc.cluster.local"}, "weight": 100 - canary_weight},
             {"destination": {"host": f"{NAME}-canary.default.svc.cluster.local"}, "weight": canary_weight}]
    return with_applied_hash({"apiVersion": "networking.istio.io/v1", "kind": "VirtualService", "metadata": {"name": NAME},
                              "spec": {"http": [{"name": "primary", "route": route}]}})


def _service(name: str, sym: str) -> dict:
    return with_applied_hash({"apiVersion": "v1", "kind": "Service", "metadata": {"name": name},
                              "spec": {"selector": {c.LABEL_REVISION: REV[sym]}}})


def _destination_rule(name: str) -> dict:
    return with_applied_hash({"apiVersion": "networking.istio.io/v1", "kind": "DestinationRule", "metadata": {"name": name},
                              "spec": {"host": f"{name}.default.svc.cluster.local"}})


def _children(*objs: dict) -> dict[tuple[str, str], dict]:
    return {(o["kind"], o["metadata"]["name"]): o for o in objs}


def _observed(live: tuple[dict, ...] = (), rollouts: tuple[dict, ...] = ()) -> Observed:
    """What is live: Deployments by revision, the other children by kind and name, the LLMRollouts."""
    deployments = {o["metadata"]["labels"][c.LABEL_REVISION]: o for o in live if o["kind"] == "Deployment"}
    return Observed(deployments, _children(*(o for o in live if o["kind"] != "Deployment")), list(rollouts))


def _rollout(sym: str, created: str = NOW, status: dict | None = None, **spec) -> dict:
    """An LLMRollout the operator made for revision ``sym`` (named <deployment>-<revision>)."""
    body = {"apiVersion": "llmops.dev/v1alpha1", "kind": "LLMRollout",
            "metadata": {"name": f"{NAME}-{REV[sym]}", "namespace": "default", "creationTimestamp": created,
                         "generation": 1,
                         "labels": {c.LABEL_DEPLOYMENT: NAME, c.LABEL_REVISION: REV[sym], p.AUTO_LABEL: c.MANAGER}},
            "spec": {"deploymentName": NAME, "target": {"model": {"uri": URIS[sym]}}, **spec}}
    if status is not None:
        body["status"] = _ids(status)
    return body


IN_FLIGHT = {"phase": "Progressing", "toRevision": "B", "fromRevision": "A", "startedAt": NOW, "canaryWeight": 50}


def _summary(actions) -> list[str]:
    """The actions as short lines, revision ids written as symbols."""
    def line(action) -> str:
        if isinstance(action, Apply):
            return f"apply {action.obj['kind']} {action.obj['metadata']['name']}"
        if isinstance(action, Create):
            return f"create {action.obj['metadata']['name']}"
        if isinstance(action, Delete):
            return f"delete {action.kind} {action.name}"
        if isinstance(action, Scale):
            return f"scale {action.name} to {action.replicas}"
        if isinstance(action, WriteStatus):
            return f"status {action.status.get('phase')} {action.body['metadata']['name']}"
        return type(action).__name__
    return [_sym(line(a)) for a in actions]


def _target_of(pass_: _Pass, stable: str) -> _Target:
    """Phase 1's result, by hand: the spec's model and revision, and the stable revision ``stable``."""
    model = b.static_model(pass_.spec)
    return _Target(model, b.make_revision(pass_.spec, model), REV[stable])


# ---------------------------------------------------------------------------------------- _target

RESOLVED_V5 = reg.Resolution(model=ResolvedModel(name="support-assistant", source="mlflow", uri="models:/support-assistant/5",
                                                 version="5", alias="champion"))
REGISTRY_DOWN = reg.Resolution(problem=("RegistryUnavailable", "connection refused"), retry_in=30.0)
HELD_V4 = {"name": "support-assistant", "source": "mlflow", "uri": "models:/support-assistant/4", "version": "4", "alias": "champion"}

TARGET_CASES = [
    # id, model, status, live revisions, registry -> (the spec's revision, the stable revision) or None
    ("uri-first-pass-stable-is-the-spec-revision", "A", {}, (), None, ("A", "A")),
    ("uri-edited-the-recorded-stable-is-kept", "B", {"stableRevision": "A"}, ("A",), None, ("B", "A")),
    ("recorded-stable-vanished-the-spec-revision-serves", "B", {"stableRevision": "A"}, (), None, ("B", "B")),
    ("recorded-stable-is-the-spec-revision-not-built-yet", "A", {"stableRevision": "A"}, (), None, ("A", "A")),
    ("alias-resolved-by-the-registry", MLFLOW, {}, (), RESOLVED_V5, ("v5", "v5")),
    ("alias-registry-down-the-version-resolved-before-is-held", MLFLOW, {"stableRevision": "v4", "model": HELD_V4}, ("v4",),
     REGISTRY_DOWN, ("v4", "v4")),
    ("alias-registry-has-named-no-version-yet", MLFLOW, {}, (), REGISTRY_DOWN, None),
    ("alias-registry-down-what-was-resolved-was-another-alias", MLFLOW,
     {"stableRevision": "v4", "model": {**HELD_V4, "alias": "staging"}}, ("v4",), REGISTRY_DOWN, None),
    ("pinned-version-needs-no-registry", {"name": "support-assistant", "version": "4"}, {}, (), REGISTRY_DOWN, ("v4", "v4")),
]


@pytest.mark.parametrize("model,status,live,registry,expected", [row[1:] for row in TARGET_CASES], ids=[row[0] for row in TARGET_CASES])
def test_target(model, status, live, registry, expected):
    observed = _observed(tuple(_deployment(sym, 1, 1) for sym in live))
    target = _target(_pass(_doc(model, status), observed, registry=registry))
    assert (None if target is None else (_sym(target.revision.id), _sym(target.stable_id))) == expected


# ------------------------------------------------------------------------------- _start_or_supersede

START_CASES = [
    # id, the spec's model, status, rollouts -> (status.specRevision as the pass leaves it, the actions)
    ("first-pass-starts-nothing", "A", {}, (), ("A", [])),
    ("same-revision-nothing-to-start", "A", {"stableRevision": "A", "specRevision": "A"}, (), ("A", [])),
    ("new-revision-creates-a-rollout-named-after-it", "B", {"stableRevision": "A", "specRevision": "A"}, (),
     ("B", ["create qwen-small-B"])),
    ("its-rollout-already-active-nothing", "B", {"stableRevision": "A", "specRevision": "B"},
     (_rollout("B", status=IN_FLIGHT),), ("B", [])),
    ("its-rollout-created-but-not-recorded-no-second-create", "B", {"stableRevision": "A", "specRevision": "A"},
     (_rollout("B"),), ("B", [])),
    ("another-revision-while-one-is-active-supersedes-it", "C", {"stableRevision": "A", "specRevision": "B"},
     (_rollout("B", status=IN_FLIGHT),), ("C", ["status Aborted qwen-small-B", "create qwen-small-C"])),
    ("back-to-stable-mid-rollout-supersedes-and-creates-nothing", "A", {"stableRevision": "A", "specRevision": "B"},
     (_rollout("B", status=IN_FLIGHT),), ("A", ["status Aborted qwen-small-B"])),
    ("back-to-an-earlier-finished-revision-a-new-rollout-with-a-distinct-name", "B",
     {"stableRevision": "C", "specRevision": "C"},
     (_rollout("B", created="2026-11-21T09:00:00Z", status={"phase": "Succeeded", "toRevision": "B"}),
      _rollout("C", created="2026-11-21T09:30:00Z", status={"phase": "Succeeded", "toRevision": "C"})),
     ("B", ["create qwen-small-B-2"])),
    ("a-rollout-people-wrote-is-never-superseded", "A", {"stableRevision": "A", "specRevision": "A"},
     ({**_rollout("B", status=IN_FLIGHT), "metadata": {"name": "by-hand", "namespace": "default"}},), ("A", [])),
]


@pytest.mark.parametrize("model,status,rollouts,expected", [row[1:] for row in START_CASES], ids=[row[0] for row in START_CASES])
def test_start_or_supersede(model, status, rollouts, expected):
    pass_ = _pass(_doc(model, status), _observed(tuple(_deployments(A=(1, 1)).values()), rollouts))
    started = _start_or_supersede(pass_, _target_of(pass_, status.get("stableRevision") or "A"))
    assert (_sym(started.spec_revision), _summary(started.actions)) == expected
    assert started.superseded == any(line.startswith("status Aborted") for line in expected[1])


def test_start_or_supersede_starts_and_supersedes_nothing_while_the_registry_cannot_say():
    pass_ = _pass(_doc(MLFLOW, {"stableRevision": "v4", "specRevision": "B", "model": HELD_V4}),
                  _observed(rollouts=(_rollout("B", status=IN_FLIGHT),)), registry=REGISTRY_DOWN)
    started = _start_or_supersede(pass_, _target_of(pass_, "v4"))
    assert (_sym(started.spec_revision), started.actions, started.superseded) == ("B", (), False)


# --------------------------------------------------------------------------------- _replica_target

REPLICA_CASES = [
    # id, spec fields, live (stable replicas, autoscaler minimum, canary weight) -> (want, floor, full)
    ("fixed-replicas-are-the-spec", {"replicas": 3}, (1, None, 0), (3, None, None)),
    ("autoscaled-nothing-live-starts-at-the-minimum", {"autoscaling": HPA}, (None, None, 0), (2, 2, 2)),
    ("scale-to-zero-nothing-live-starts-at-one", {"autoscaling": KEDA}, (None, None, 0), (1, 1, 1)),
    ("autoscaled-the-live-size-is-echoed", {"autoscaling": HPA}, (5, 2, 0), (5, 5, 5)),
    ("no-traffic-on-a-canary-the-floor-is-what-stable-has-now", {"autoscaling": HPA}, (4, 2, 0), (4, 4, 4)),
    ("canary-takes-traffic-the-held-hpa-floor-stays", {"autoscaling": HPA}, (2, 4, 50), (2, 4, 4)),
    ("stable-grew-under-the-canary-promoted-size-grows-up-to-max", {"autoscaling": HPA}, (5, 4, 50), (5, 4, 6)),
    ("stable-grew-a-little-promoted-size-proportional", {"autoscaling": HPA}, (3, 2, 25), (3, 2, 4)),
]


@pytest.mark.parametrize("spec,live,expected", [row[1:] for row in REPLICA_CASES], ids=[row[0] for row in REPLICA_CASES])
def test_replica_target(spec, live, expected):
    stable, minimum, weight = live
    objs = [_virtual_service(weight)] + ([_deployment("A", stable, stable)] if stable is not None else [])
    if minimum is not None:
        objs.append({"kind": "HorizontalPodAutoscaler", "metadata": {"name": NAME}, "spec": {"minReplicas": minimum}})
    size = _replica_target(_pass(_doc("A", **spec), _observed(tuple(objs))), REV["A"])
    assert (size.want, size.floor, size.full) == expected


def test_replica_target_reads_a_scaled_objects_minimum_as_the_floor():
    objs = (_deployment("A", 1, 1), _virtual_service(50),
            {"kind": "ScaledObject", "metadata": {"name": NAME}, "spec": {"minReplicaCount": 3}})
    size = _replica_target(_pass(_doc("A", autoscaling={**KEDA, "minReplicas": 1}), _observed(objs)), REV["A"])
    assert (size.want, size.floor, size.full) == (1, 3, 3)


# --------------------------------------------------------------------------------- _advance_rollout

ADVANCE_CASES = [
    # id, the spec's model, rollout template, live (symbol=(replicas, ready)), rollouts
    #   -> (stable, canary, canary replicas, (stable %, canary %), previous, draining, actions)
    ("no-rollout-stable-serves-alone", "A", {}, {"A": (1, 1)}, (), ("A", None, 0, (100, 0), None, {}, [])),
    ("new-rollout-canary-not-ready-full-size-no-traffic", "B", {"strategy": "none"}, {"A": (1, 1)}, (_rollout("B"),),
     ("A", "B", 1, (100, 0), None, {}, ["status Progressing qwen-small-B"])),
    ("canary-ready-first-step-takes-its-weight", "B", {"steps": [{"setWeight": 50}, {"pause": {}}], "analyzeEveryStep": False},
     {"A": (1, 1), "B": (1, 1)}, (_rollout("B"),), ("A", "B", 1, (50, 50), None, {}, ["status Paused qwen-small-B"])),
    ("ready-after-waiting-promoted-old-stable-kept-as-previous", "B", {"strategy": "none"}, {"A": (1, 1), "B": (1, 1)},
     (_rollout("B", status={"phase": "Progressing", "toRevision": "B", "fromRevision": "A", "startedAt": NOW,
                            "currentStepIndex": 0, "canaryWeight": 0}),),
     ("B", None, 0, (100, 0), "A", {}, ["status Succeeded qwen-small-B"])),
    ("aborted-by-the-user-no-canary-its-pods-drain", "B", {"steps": [{"setWeight": 50}, {"pause": {}}], "analyzeEveryStep": False},
     {"A": (1, 1), "B": (1, 1)}, (_rollout("B", status=IN_FLIGHT, abort=True),),
     ("A", None, 0, (100, 0), None, {"B": 30}, ["status Aborted qwen-small-B"])),
    ("its-revision-is-already-stable-it-succeeds", "A", {}, {"A": (1, 1)}, (_rollout("A", status={"phase": "Progressing"}),),
     ("A", None, 0, (100, 0), None, {}, ["status Succeeded qwen-small-A"])),
]


@pytest.mark.parametrize("model,template,live,rollouts,expected", [row[1:] for row in ADVANCE_CASES], ids=[row[0] for row in ADVANCE_CASES])
def test_advance_rollout(model, template, live, rollouts, expected):
    pass_ = _pass(_doc(model, {"stableRevision": "A", "specRevision": model}, rollout=template),
                  _observed(tuple(_deployments(**live).values()), copy.deepcopy(rollouts)))
    serving = _advance_rollout(pass_, _target_of(pass_, "A"), _Started(tuple(pass_.observed.rollouts), REV[model]), _Size(1),
                               run=None)
    routes = (serving.routes.stable_weight, serving.routes.canary_weight)
    assert (_sym(serving.stable_id), serving.canary_id and _sym(serving.canary_id), serving.canary_replicas, routes,
            serving.previous and _sym(serving.previous), {_sym(k): v for k, v in serving.drain.items()},
            _summary(serving.actions)) == expected
    if serving.previous:  # kept for scaleDownDelaySeconds (300 by default) from the promotion
        assert serving.previous_at == _at(300)


# ----------------------------------------------------------------------------------------- _retain

RETAIN_CASES = [
    # id, status, serving (stable, canary, previous, previousScaleDownAt, drain), now
    #   -> (revisions kept, previous, requeue, draining)
    ("stable-alone", {"stableRevision": "A"}, ("A", None, None, None, {}), NOW, ("A", None, (), ())),
    ("a-canary-is-kept", {"stableRevision": "A"}, ("A", "B", None, None, {}), NOW, ("A B", None, (), ())),
    ("previous-kept-for-scale-down-delay", {"stableRevision": "B"}, ("B", None, "A", _at(300), {}), NOW,
     ("A B", "A", (300.0,), ())),
    ("previous-kept-until-a-second-before", {"stableRevision": "B"}, ("B", None, "A", _at(300), {}), _at(299),
     ("A B", "A", (1.0,), ())),
    ("previous-deleted-at-its-scale-down-time", {"stableRevision": "B"}, ("B", None, "A", _at(300), {}), _at(300),
     ("B", None, (), ())),
    ("the-stable-the-status-records-survives-the-pass-that-switches", {"stableRevision": "A"},
     ("B", None, "A", NOW, {}), NOW, ("A B", None, (), ())),
    ("an-aborted-canary-drains-for-its-delay", {"stableRevision": "A"}, ("A", None, None, None, {"B": 30.0}), NOW,
     ("A B", None, (30.0,), ())),
    ("a-canary-whose-rollout-was-deleted-in-flight-drains",
     {"stableRevision": "A", "canaryRevision": "B", "rollout": "qwen-small-B"}, ("A", None, None, None, {}), NOW,
     ("A B", None, (30.0,), (("B", _at(30)),))),
    ("its-drain-over-it-goes", {"stableRevision": "A", "draining": [{"revision": "B", "scaleDownAt": _at(30)}]},
     ("A", None, None, None, {}), _at(30), ("A", None, (), ())),
]


@pytest.mark.parametrize("status,serving,now,expected", [row[1:] for row in RETAIN_CASES], ids=[row[0] for row in RETAIN_CASES])
def test_retain(status, serving, now, expected):
    stable, canary, previous, previous_at, drain = serving
    pass_ = _pass(_doc("A", status), _observed(tuple(_deployments(A=(1, 1), B=(1, 1)).values())), now=now)
    retained = _retain(pass_, _Serving(REV[stable], None, canary=_revision(canary) if canary else None,
                                       previous=previous and REV[previous], previous_at=previous_at,
                                       drain={REV[k]: v for k, v in drain.items()}))
    assert (" ".join(sorted(_sym(k) for k in retained.keep)), retained.previous and _sym(retained.previous), retained.requeue,
            tuple((_sym(d["revision"]), d["scaleDownAt"]) for d in retained.draining)) == expected
    deleted_in_flight = [e.reason for e in retained.events]
    assert deleted_in_flight == (["RolloutDeleted"] if "canaryRevision" in status else [])


# ------------------------------------------------------------------------------------------ _desired

DESIRED_CASES = [
    # id, spec fields, serving (stable, canary, canary replicas, canary weight, promoted replicas), size floor -> objects
    ("stable-only", {}, ("A", None, 0, 0, 1), None,
     ["Deployment qwen-small-A x1", "Service qwen-small", "Service qwen-small-canary", "DestinationRule qwen-small",
      "DestinationRule qwen-small-canary", "VirtualService qwen-small 100/0", "PodDisruptionBudget qwen-small"]),
    ("a-canary-adds-its-deployment-at-the-rollouts-size", {"disruptionBudget": {"enabled": False}}, ("A", "B", 2, 50, 1), None,
     ["Deployment qwen-small-A x1", "Deployment qwen-small-B x2", "Service qwen-small", "Service qwen-small-canary",
      "DestinationRule qwen-small", "DestinationRule qwen-small-canary", "VirtualService qwen-small 50/50"]),
    ("the-hpa-minimum-is-held-at-the-floor-while-a-canary-runs",
     {"autoscaling": HPA, "disruptionBudget": {"enabled": False}}, ("A", "B", 2, 50, 4), 4,
     ["Deployment qwen-small-A x4", "Deployment qwen-small-B x2", "Service qwen-small", "Service qwen-small-canary",
      "DestinationRule qwen-small", "DestinationRule qwen-small-canary", "VirtualService qwen-small 50/50",
      "HorizontalPodAutoscaler qwen-small min 4"]),
    ("without-a-canary-the-hpa-minimum-is-the-specs", {"autoscaling": HPA, "disruptionBudget": {"enabled": False}},
     ("A", None, 0, 0, 4), 4,
     ["Deployment qwen-small-A x4", "Service qwen-small", "Service qwen-small-canary", "DestinationRule qwen-small",
      "DestinationRule qwen-small-canary", "VirtualService qwen-small 100/0", "HorizontalPodAutoscaler qwen-small min 2"]),
    ("a-stable-the-spec-no-longer-names-is-not-rendered", {"disruptionBudget": {"enabled": False}}, ("C", None, 0, 0, 1), None,
     ["Service qwen-small", "Service qwen-small-canary", "DestinationRule qwen-small", "DestinationRule qwen-small-canary",
      "VirtualService qwen-small 100/0"]),
]


def _object_line(obj: dict) -> str:
    line = f"{obj['kind']} {obj['metadata']['name']}"
    if obj["kind"] == "Deployment":
        line += f" x{obj['spec']['replicas']}"
    elif obj["kind"] == "VirtualService":
        routes = b.routes_of(obj)
        line += f" {routes.stable_weight}/{routes.canary_weight}"
    elif obj["kind"] == "HorizontalPodAutoscaler":
        line += f" min {obj['spec']['minReplicas']}"
    return _sym(line)


@pytest.mark.parametrize("spec,serving,floor,expected", [row[1:] for row in DESIRED_CASES], ids=[row[0] for row in DESIRED_CASES])
def test_desired(spec, serving, floor, expected):
    stable, canary, canary_replicas, weight, promoted = serving
    pass_ = _pass(_doc("A", {"stableRevision": stable}, **spec))
    state = _Serving(REV[stable], None, canary=_revision(canary) if canary else None, canary_replicas=canary_replicas,
                     routes=b.Routes(100 - weight, weight), promoted_replicas=promoted)
    desired = _desired(pass_, _target_of(pass_, stable), state, _Size(promoted, floor), frozenset({"HorizontalPodAutoscaler"}))
    assert [_object_line(o) for o in desired.objects] == expected


# -------------------------------------------------------------------------------------------- _order

ABORTED_B = WriteStatus(_rollout("B", status=IN_FLIGHT), _ids({**IN_FLIGHT, "phase": "Aborted", "canaryWeight": 0}))
CREATE_C = Create(_rollout("C"))
ROUTES = (_service(NAME, "A"), _destination_rule(NAME))

ORDER_CASES = [
    # id, desired, live, stable, revisions kept, stable size, actions planned by earlier phases -> (actions, requeue)
    ("nothing-changed-nothing-to-do", (_deployment("A", 1), _virtual_service(0)),
     (_deployment("A", 1, 1), _virtual_service(0)), "A", "A", 1, (), ([], ())),
    ("routing-created-service-then-destination-rule-then-virtual-service",
     (_virtual_service(0), _destination_rule(NAME), _service(NAME, "A")), (), "A", "A", 1, (),
     (["apply Service qwen-small", "apply DestinationRule qwen-small", "apply VirtualService qwen-small"], ())),
    ("canary-scaled-up-before-the-weight-moves-to-it",
     (_deployment("A", 1), _deployment("B", 2), _virtual_service(50)),
     (_deployment("A", 1, 1), _deployment("B", 1, 1), _virtual_service(0)), "A", "A B", 1, (),
     (["apply Deployment qwen-small-B", "apply VirtualService qwen-small"], ())),
    ("weight-moves-away-before-the-canary-scales-down",
     (_deployment("A", 1), _deployment("B", 1), _virtual_service(0)),
     (_deployment("A", 1, 1), _deployment("B", 2, 2), _virtual_service(50)), "A", "A B", 1, (),
     (["apply VirtualService qwen-small", "apply Deployment qwen-small-B"], ())),
    ("promotion-new-stable-up-then-routes-then-the-old-one-deleted",
     (_deployment("B", 3), _service(NAME, "B"), _virtual_service(0)),
     (_deployment("A", 3, 3), _deployment("B", 1, 1), _service(NAME, "A"), _virtual_service(50)), "B", "B", 3, (),
     (["apply Deployment qwen-small-B", "apply Service qwen-small", "apply VirtualService qwen-small",
       "delete Deployment qwen-small-A"], ())),
    ("abort-routes-back-first-the-rollout-status-after-them-pods-kept",
     (_deployment("A", 1), _virtual_service(0)), (_deployment("A", 1, 1), _deployment("B", 1, 1), _virtual_service(50)),
     "A", "A B", 1, (ABORTED_B,), (["apply VirtualService qwen-small", "status Aborted qwen-small-B"], ())),
    ("abort-drained-the-canary-deleted", (_deployment("A", 1), _virtual_service(0)),
     (_deployment("A", 1, 1), _deployment("B", 1, 1), _virtual_service(0)), "A", "A", 1, (),
     (["delete Deployment qwen-small-B"], ())),
    ("canary-service-not-repointed-while-it-takes-traffic", (_service(f"{NAME}-canary", "A"), _virtual_service(0)),
     (_deployment("A", 1, 1), _service(f"{NAME}-canary", "B"), _virtual_service(50)), "A", "A", 1, (),
     (["apply VirtualService qwen-small"], (1.0,))),
    ("canary-service-repointed-once-the-traffic-left", (_service(f"{NAME}-canary", "A"), _virtual_service(0)),
     (_deployment("A", 1, 1), _service(f"{NAME}-canary", "B"), _virtual_service(0)), "A", "A", 1, (),
     (["apply Service qwen-small-canary"], ())),
    ("creates-first-status-writes-last", (_deployment("A", 1), _virtual_service(0)),
     (_deployment("A", 1, 1), _deployment("B", 1, 1), _virtual_service(50)), "A", "A B", 1, (ABORTED_B, CREATE_C),
     (["create qwen-small-C", "apply VirtualService qwen-small", "status Aborted qwen-small-B"], ())),
    ("a-stable-the-spec-no-longer-describes-scaled-up-before-routes", (*ROUTES, _virtual_service(0)),
     (_deployment("A", 1, 1), *ROUTES, _virtual_service(50)), "A", "A", 3, (),
     (["scale qwen-small-A to 3", "apply VirtualService qwen-small"], ())),
    ("a-stable-the-spec-no-longer-describes-scaled-down-after-routes", (*ROUTES, _virtual_service(0)),
     (_deployment("A", 5, 5), *ROUTES, _virtual_service(50)), "A", "A", 3, (),
     (["apply VirtualService qwen-small", "scale qwen-small-A to 3"], ())),
]


@pytest.mark.parametrize("desired,live,stable,keep,want,planned,expected", [row[1:] for row in ORDER_CASES], ids=[row[0] for row in ORDER_CASES])
def test_order(desired, live, stable, keep, want, planned, expected):
    pass_ = _pass(_doc("A", {"stableRevision": stable}), _observed(live))
    retained = _Retained((), frozenset(REV[k] for k in keep.split()), None, None)
    ordered = _order(pass_, _Serving(REV[stable], None), retained, _Size(want), _Desired(desired, ()), planned, REV["A"])
    assert (_summary(ordered.actions), ordered.requeue) == expected


# ---------------------------------------------------------------------------------- _status, _conditions

CREATE_B = Create(_rollout("B"))
ABORTED = {"phase": "Aborted", "toRevision": "B", "fromRevision": "A", "finishedAt": NOW, "message": "aborted by spec.abort",
           "conditions": [{"type": "Degraded", "status": "True", "reason": "AbortedByUser"}]}
FAILED = {**ABORTED, "phase": "Failed", "message": "no ready pod in 600s",
          "conditions": [{"type": "Degraded", "status": "True", "reason": "ProgressDeadlineExceeded"}]}


def _stuck(deployment: dict) -> dict:
    """``deployment`` past its progress deadline, as the Deployment controller says it."""
    deployment["status"]["conditions"] = [{"type": "Progressing", "status": "False", "reason": "ProgressDeadlineExceeded",
                                           "message": "ReplicaSet has timed out progressing."}]
    return deployment


def _status_of(model: str, old: dict, live: tuple, rollouts: tuple, serving: tuple[str, int], want: int = 1,
               floor: int | None = None, previous: str | None = None, ordered: tuple = ()) -> dict:
    """Phase 8 over hand-made results: the spec names ``model``; ``serving`` = (stable, canary weight), with the
    active rollout's revision as the canary when a weight is given (None: no canary); ``previous`` kept 300 s."""
    pass_ = _pass(_doc(model, old, replicas=want), _observed(live, rollouts))
    stable, weight = serving
    active = pass_.resolved[0]
    state = _Serving(REV[stable], active, canary=active.revision if weight is not None else None,
                     canary_replicas=1 if weight is not None else 0, routes=b.Routes(100 - (weight or 0), weight or 0))
    retained = _Retained((), frozenset(), previous and REV[previous], previous and _at(300))
    return _status(pass_, _target_of(pass_, stable), _Started(tuple(rollouts), REV[model]), _Size(want, floor), state, retained,
                   _Ordered(ordered))


SERVING_A = {"stableRevision": "A", "specRevision": "A"}
SPEC_B = {"stableRevision": "A", "specRevision": "B"}

CONDITION_CASES = [
    # id, spec's model, old status, live, rollouts, (stable, canary weight), want, floor, planned actions
    #   -> (Ready, Progressing, Degraded) as "status reason", and (a condition, the start of its message)
    ("all-ready", "A", SERVING_A, (_deployment("A", 1, 1),), (), ("A", None), 1, None, (),
     ("True Available", "False RevisionAvailable", "False AsExpected"), ("Ready", "1/1 replicas of revision A ready")),
    ("first-pass-nothing-ready-yet", "A", {}, (), (), ("A", None), 1, None, (),
     ("False ReplicasNotReady", "True ScalingUp", "False AsExpected"),
     ("Ready", "0/1 replicas of revision A ready (the model may still be loading)")),
    ("scaling-up-some-ready", "A", SERVING_A, (_deployment("A", 3, 1),), (), ("A", None), 3, None, (),
     ("True Available", "True ScalingUp", "False AsExpected"), ("Progressing", "1/3 replicas of revision A ready")),
    ("scaled-to-zero", "A", SERVING_A, (_deployment("A", 0, 0),), (), ("A", None), 0, None, (),
     ("True ScaledToZero", "False RevisionAvailable", "False AsExpected"), ("Ready", "scaled to zero replicas")),
    ("rollout-created-not-started", "B", SPEC_B, (_deployment("A", 1, 1),), (), ("A", None), 1, None, (CREATE_B,),
     ("True Available", "True RolloutPending", "False AsExpected"),
     ("Progressing", "LLMRollout qwen-small-B created for revision B; revision A serves meanwhile")),
    ("rollout-in-flight", "B", SPEC_B, (_deployment("A", 1, 1), _deployment("B", 1, 1)), (_rollout("B", status=IN_FLIGHT),),
     ("A", 50), 1, None, (), ("True Available", "True RolloutInProgress", "False AsExpected"),
     ("Progressing", "LLMRollout qwen-small-B: 50% to revision B, 1/1 pods ready")),
    ("rollout-in-flight-stable-held-at-the-floor", "B", SPEC_B, (_deployment("A", 2, 2), _deployment("B", 1, 0)),
     (_rollout("B", status=IN_FLIGHT),), ("A", 50), 2, 4, (), ("True Available", "True RolloutInProgress", "False AsExpected"),
     ("Progressing", "LLMRollout qwen-small-B: 50% to revision B, 0/1 pods ready; stable kept at >= 4 replicas")),
    ("aborted-degraded-naming-the-revision-that-serves", "B", SPEC_B, (_deployment("A", 1, 1),),
     (_rollout("B", status=ABORTED),), ("A", None), 1, None, (),
     ("True Available", "False RolloutAborted", "True RolloutAborted"),
     ("Degraded", "revision A serves, not the spec's revision B: LLMRollout qwen-small-B aborted (AbortedByUser): "
                  "aborted by spec.abort; increment its spec.retry")),
    ("failed-degraded-rollout-failed", "B", SPEC_B, (_deployment("A", 1, 1),), (_rollout("B", status=FAILED),), ("A", None), 1,
     None, (), ("True Available", "False RolloutFailed", "True RolloutFailed"),
     ("Degraded", "revision A serves, not the spec's revision B: LLMRollout qwen-small-B failed (ProgressDeadlineExceeded)")),
    ("spec-back-on-what-serves-after-an-abort-healthy", "A", SERVING_A, (_deployment("A", 1, 1),),
     (_rollout("B", status=ABORTED),), ("A", None), 1, None, (),
     ("True Available", "False RevisionAvailable", "False AsExpected"), ("Progressing", "revision A serves all traffic")),
    ("progress-deadline-exceeded", "A", SERVING_A, (_stuck(_deployment("A", 1, 0)),), (), ("A", None), 1, None, (),
     ("False ReplicasNotReady", "True ScalingUp", "True ProgressDeadlineExceeded"),
     ("Degraded", "qwen-small-A: ReplicaSet has timed out progressing.")),
]


@pytest.mark.parametrize("model,old,live,rollouts,serving,want,floor,ordered,expected,says", [row[1:] for row in CONDITION_CASES],
                         ids=[row[0] for row in CONDITION_CASES])
def test_conditions(model, old, live, rollouts, serving, want, floor, ordered, expected, says):
    status = _status_of(model, old, live, rollouts, serving, want, floor, ordered=ordered)
    conditions = {cnd["type"]: cnd for cnd in status["conditions"]}
    assert tuple(f"{conditions[t]['status']} {conditions[t]['reason']}" for t in ("Ready", "Progressing", "Degraded")) == expected
    condition, message = says
    assert _sym(conditions[condition]["message"]).startswith(message)
    assert all(cnd["lastTransitionTime"] == NOW and cnd["observedGeneration"] == 1 for cnd in status["conditions"])


STATUS_CASES = [
    # id, spec's model, old status, live, rollouts, (stable, canary weight), previous kept
    #   -> (stable, canary, spec's revision, rollout, previous, revisions by role, (replicas, ready))
    ("first-pass", "A", {}, (), (), ("A", None), None, ("A", None, "A", None, None, "A:stable", (0, 0))),
    ("serving", "A", SERVING_A, (_deployment("A", 1, 1),), (), ("A", None), None, ("A", None, "A", None, None, "A:stable", (1, 1))),
    ("rollout-in-flight", "B", SPEC_B, (_deployment("A", 2, 2), _deployment("B", 1, 0)), (_rollout("B", status=IN_FLIGHT),),
     ("A", 50), None, ("A", "B", "B", "qwen-small-B", None, "A:stable B:canary", (2, 2))),
    ("promoted-previous-kept", "B", {"stableRevision": "A", "specRevision": "B"},
     (_deployment("A", 1, 1), _deployment("B", 1, 1)), (), ("B", None), "A",
     ("B", None, "B", None, "A", "B:stable A:previous", (1, 1))),
]


@pytest.mark.parametrize("model,old,live,rollouts,serving,previous,expected", [row[1:] for row in STATUS_CASES],
                         ids=[row[0] for row in STATUS_CASES])
def test_status(model, old, live, rollouts, serving, previous, expected):
    status = _status_of(model, old, live, rollouts, serving, previous=previous)
    assert (_sym(status["stableRevision"]), status.get("canaryRevision") and _sym(status["canaryRevision"]),
            _sym(status["specRevision"]), status.get("rollout") and _sym(status["rollout"]),
            status.get("previousRevision") and _sym(status["previousRevision"]),
            " ".join(f"{_sym(r['revision'])}:{r['role']}" for r in status["revisions"]),
            (status["replicas"], status["readyReplicas"])) == expected
    assert status.get("previousScaleDownAt") == (previous and _at(300))
    assert status["observedGeneration"] == 1 and status["endpoint"] == "http://qwen-small.default.svc.cluster.local:8000/v1"
