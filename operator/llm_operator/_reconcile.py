"""Reconciling an LLMDeployment: a pure planner and a thin executor.

:func:`plan_llmdeployment` takes the object, what is live in the cluster and the time, and returns the
objects to apply or delete, the Events to post and the complete new status. It does no I/O, so it is
table-tested. :func:`observe` reads the cluster and :func:`execute` carries a plan out through a
:class:`~llm_operator._kube.Kube`; neither decides anything.

Level-based: every pass recomputes everything from the present state, so a pass may be repeated or
skipped without harm, and a pass that finds nothing to do writes nothing.
"""

from __future__ import annotations

import copy
import hashlib
import json
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from typing import Any

import jsonpatch
from kubernetes.utils.quantity import parse_quantity

from . import _builders as b
from . import _conditions as cond
from . import _contract as c
from ._api import API_VERSION, LLMDeploymentSpec, ResolvedModel
from ._kube import Conflict, Kube, KubeError
from ._validation import InvalidSpec, parse_llmdeployment

log = logging.getLogger(__name__)

APPLIED_HASH = "llmops.dev/applied-hash"


# ------------------------------------------------------------------------------------- plan types


@dataclass(frozen=True)
class Apply:
    """Server-side apply ``obj`` (create or update) under the operator's field manager."""

    obj: dict[str, Any]
    created: bool


@dataclass(frozen=True)
class Delete:
    """Delete one object (background propagation)."""

    api_version: str
    kind: str
    name: str


@dataclass(frozen=True)
class Event:
    """A Kubernetes Event about the reconciled object."""

    type: str  # Normal | Warning
    reason: str
    message: str


@dataclass
class Observed:
    """What is live: the revision Deployments of this LLMDeployment (by revision id) and its other
    children (by kind; None when absent)."""

    deployments: dict[str, dict[str, Any]] = field(default_factory=dict)
    children: dict[str, dict[str, Any] | None] = field(default_factory=dict)


@dataclass
class Plan:
    """The outcome of one pass: actions in order, events, and the full new status."""

    actions: list[Apply | Delete]
    events: list[Event]
    status: dict[str, Any]


# ------------------------------------------------------------------------------------ comparison


def _equal_leaf(want: Any, have: Any) -> bool:
    if isinstance(want, bool) or isinstance(have, bool):
        return want is have  # True == 1 in Python, not in Kubernetes
    if want == have:
        return True
    if isinstance(want, (str, int, float)) and isinstance(have, (str, int, float)) and not isinstance(want, bool):
        try:  # the API server canonicalises quantities ("1024Mi" -> "1Gi")
            return parse_quantity(want) == parse_quantity(have)
        except (ValueError, TypeError, InvalidOperation):
            return False
    return False


def is_subset(want: Any, have: Any) -> bool:
    """True when every field set in ``want`` has the same value in ``have`` (which may hold more, such as
    fields the API server defaulted). Lists compare element-wise and must have the same length."""
    if isinstance(want, Mapping):
        return isinstance(have, Mapping) and all(k in have and is_subset(v, have[k]) for k, v in want.items())
    if isinstance(want, list):
        return isinstance(have, list) and len(want) == len(have) and all(is_subset(w, h) for w, h in zip(want, have))
    return _equal_leaf(want, have)


def _owned_view(obj: dict[str, Any]) -> dict[str, Any]:
    """``obj`` without the fields whose values others own: a Deployment's replicas (the autoscaler's,
    echoed back when autoscaling) and a VirtualService's weights and mirror (the rollout's)."""
    view = copy.deepcopy(obj)
    if view.get("kind") == "Deployment":
        view.get("spec", {}).pop("replicas", None)
    elif view.get("kind") == "VirtualService":
        for http in view.get("spec", {}).get("http", []):
            http.pop("mirror", None)
            http.pop("mirrorPercentage", None)
            for route in http.get("route", []):
                route.pop("weight", None)
    return view


def with_applied_hash(obj: dict[str, Any]) -> dict[str, Any]:
    """``obj`` with an annotation hashing what the LLMDeployment owns of it, so a field dropped from the
    desired object (which a subset check cannot see) still triggers an apply that removes it."""
    view = json.dumps(_owned_view(obj), sort_keys=True, separators=(",", ":"))
    out = copy.deepcopy(obj)
    out["metadata"].setdefault("annotations", {})[APPLIED_HASH] = hashlib.sha256(view.encode()).hexdigest()[:16]
    return out


def needs_apply(desired: dict[str, Any], live: dict[str, Any] | None) -> bool:
    """Whether applying ``desired`` (with its hash annotation) would change ``live``."""
    if live is None:
        return True
    live_hash = live.get("metadata", {}).get("annotations", {}).get(APPLIED_HASH)
    if live_hash != desired["metadata"]["annotations"][APPLIED_HASH]:
        return True
    desired_body = {k: v for k, v in desired.items() if k not in ("apiVersion", "kind")}
    return not is_subset(desired_body, live)


# ---------------------------------------------------------------------------------------- planner


def _int(value: Any) -> int:
    return int(value or 0)


def _deployment_ready(dep: dict[str, Any], want: int) -> bool:
    status = dep.get("status", {})
    current = _int(dep.get("metadata", {}).get("generation")) <= _int(status.get("observedGeneration"))
    return current and _int(status.get("readyReplicas")) >= max(want, 1)


def _deadline_exceeded(dep: dict[str, Any]) -> str | None:
    for item in dep.get("status", {}).get("conditions", []):
        if item.get("type") == "Progressing" and item.get("status") == "False" and item.get("reason") == "ProgressDeadlineExceeded":
            return item.get("message") or "progress deadline exceeded"
    return None


def _invalid(body: Mapping[str, Any], error: InvalidSpec, now: str) -> Plan:
    status = copy.deepcopy(dict(body.get("status") or {}))
    generation = body.get("metadata", {}).get("generation")
    old_conditions = status.get("conditions", [])
    message = str(error)
    conditions = cond.set_condition(old_conditions, cond.DEGRADED, "True", "InvalidSpec", message, now=now, generation=generation)
    conditions = cond.set_condition(conditions, cond.PROGRESSING, "False", "InvalidSpec", "the spec cannot be acted on; nothing was changed", now=now, generation=generation)
    if cond.get_condition(conditions, cond.READY) is None:
        conditions = cond.set_condition(conditions, cond.READY, "False", "InvalidSpec", "nothing is deployed", now=now, generation=generation)
    status.update(conditions=conditions, observedGeneration=generation)
    events = [Event("Warning", "InvalidSpec", message)] if cond.transitions(old_conditions, conditions) or status != body.get("status") else []
    return Plan(actions=[], events=events, status=status)


def plan_llmdeployment(
    body: Mapping[str, Any], observed: Observed, now: str, *, model: ResolvedModel | None = None,
    autoscaler_kinds: frozenset[str] = frozenset({"HorizontalPodAutoscaler"}),
) -> Plan:
    """Decide one reconcile pass for an LLMDeployment.

    Args:
        body: the LLMDeployment as read from the API (``metadata``, ``spec``, ``status``).
        observed: its live children.
        now: the current time, RFC 3339.
        model: the model as resolved from the registry; the spec's static reading when None.
        autoscaler_kinds: the autoscaler kinds the cluster serves (``ScaledObject`` needs KEDA).

    Returns:
        The :class:`Plan`. An invalid spec yields no actions and a ``Degraded``/``InvalidSpec`` status.

    Revision handling: the spec names one revision. While the stable revision differs (a new model or
    runtime), the new revision's Deployment comes up beside it and traffic is switched to it once all its
    pods are ready; the previous revision's Deployment is deleted on the next pass. (An LLMRollout, when
    one is in progress, moves weights step by step instead.)
    """
    meta = body["metadata"]
    name, namespace, generation = meta["name"], meta["namespace"], meta.get("generation")
    try:
        spec: LLMDeploymentSpec = parse_llmdeployment(body)
    except InvalidSpec as error:
        return _invalid(body, error, now)

    old_status: dict[str, Any] = dict(body.get("status") or {})
    model = model or b.static_model(spec)
    desired = b.make_revision(spec, model)

    stable_id = old_status.get("stableRevision")
    if stable_id is None or (stable_id not in observed.deployments and stable_id != desired.id):
        stable_id = desired.id
    canary_id = desired.id if desired.id != stable_id else None

    scaling = spec.autoscaling
    live_desired = observed.deployments.get(desired.id)
    if scaling is not None:
        # The autoscaler owns replicas: echo what is live so an apply never fights it.
        want = _int(live_desired["spec"].get("replicas")) if live_desired else max(scaling.min_replicas, 1)
    else:
        want = spec.replicas

    events: list[Event] = []
    if canary_id is not None and live_desired is not None and _deployment_ready(live_desired, want):
        events.append(Event("Normal", "RevisionPromoted", f"revision {desired.id} is ready; traffic moves from {stable_id} to it"))
        stable_id, canary_id = desired.id, None

    desired_objects: list[dict[str, Any]] = [b.build_deployment(name, namespace, spec, desired, want)]
    routes = b.routes_of(observed.children.get("VirtualService")) or b.Routes()
    desired_objects += [
        b.build_service(name, namespace, spec),
        b.build_destination_rule(name, namespace, stable_id, canary_id),
        b.build_virtual_service(name, namespace, spec, routes),
    ]
    stable_deployment = c.revision_deployment_name(name, stable_id)
    delete_kinds: list[tuple[str, str]] = []
    if scaling is not None and scaling.provider == "keda" and "ScaledObject" in autoscaler_kinds:
        desired_objects.append(b.build_scaled_object(name, namespace, spec, stable_deployment, stable_id))
        delete_kinds.append(("autoscaling/v2", "HorizontalPodAutoscaler"))
    elif scaling is not None:
        desired_objects.append(b.build_hpa(name, namespace, spec, stable_deployment))
        delete_kinds.append(("keda.sh/v1alpha1", "ScaledObject"))
    else:
        delete_kinds += [("autoscaling/v2", "HorizontalPodAutoscaler"), ("keda.sh/v1alpha1", "ScaledObject")]
    if spec.disruption_budget.enabled:
        desired_objects.append(b.build_pdb(name, namespace, spec))
    else:
        delete_kinds.append(("policy/v1", "PodDisruptionBudget"))

    actions: list[Apply | Delete] = []
    for obj in desired_objects:
        obj = with_applied_hash(obj)
        live = observed.deployments.get(desired.id) if obj["kind"] == "Deployment" else observed.children.get(obj["kind"])
        if needs_apply(obj, live):
            actions.append(Apply(obj, created=live is None))
    # The stable revision, when it is not the spec's, keeps its own pod template: only its size follows.
    if stable_id != desired.id and stable_id in observed.deployments and scaling is None:
        live_stable = observed.deployments[stable_id]
        if _int(live_stable["spec"].get("replicas")) != want:
            patch = {"apiVersion": "apps/v1", "kind": "Deployment",
                     "metadata": {"name": stable_deployment, "namespace": namespace}, "spec": {"replicas": want}}
            actions.insert(0, Apply(patch, created=False))
    for api_version, kind in delete_kinds:
        if observed.children.get(kind) is not None:
            actions.append(Delete(api_version, kind, name))
    keep = {stable_id, canary_id, old_status.get("stableRevision")} - {None}
    for revision, dep in sorted(observed.deployments.items()):
        if revision not in keep:
            actions.append(Delete("apps/v1", "Deployment", dep["metadata"]["name"]))

    # ---- status
    revisions = []
    for revision in sorted({stable_id, canary_id} - {None}):
        live = observed.deployments.get(revision)
        revisions.append({
            "revision": revision,
            "deployment": c.revision_deployment_name(name, revision),
            "role": "stable" if revision == stable_id else "canary",
            "modelUri": (live or {}).get("metadata", {}).get("annotations", {}).get("llmops.dev/model-uri", model.uri)
            if revision != desired.id else model.uri,
            "replicas": _int((live or {}).get("status", {}).get("replicas")),
            "readyReplicas": _int((live or {}).get("status", {}).get("readyReplicas")),
        })
    stable_live = observed.deployments.get(stable_id)
    replicas = _int((stable_live or {}).get("status", {}).get("replicas"))
    ready = _int((stable_live or {}).get("status", {}).get("readyReplicas"))

    conditions = old_status.get("conditions", [])

    def setc(type_: str, status: cond.Status, reason: str, message: str) -> None:
        nonlocal conditions
        conditions = cond.set_condition(conditions, type_, status, reason, message, now=now, generation=generation)

    if want == 0 and canary_id is None:
        setc(cond.READY, "True", "ScaledToZero", "scaled to zero replicas")
    elif ready >= 1:
        setc(cond.READY, "True", "Available", f"{ready}/{want} replicas of revision {stable_id} ready")
    else:
        setc(cond.READY, "False", "ReplicasNotReady", f"0/{want} replicas of revision {stable_id} ready (the model may still be loading)")
    if canary_id is not None:
        live = observed.deployments.get(canary_id, {})
        setc(cond.PROGRESSING, "True", "NewRevisionProgressing",
             f"revision {canary_id}: {_int(live.get('status', {}).get('readyReplicas'))}/{want} replicas ready")
    elif ready < want:
        setc(cond.PROGRESSING, "True", "ScalingUp", f"{ready}/{want} replicas of revision {stable_id} ready")
    else:
        setc(cond.PROGRESSING, "False", "RevisionAvailable", f"revision {stable_id} serves all traffic")
    stuck = [(dep["metadata"]["name"], msg) for dep in observed.deployments.values() if (msg := _deadline_exceeded(dep))]
    if stuck:
        setc(cond.DEGRADED, "True", "ProgressDeadlineExceeded", "; ".join(f"{n}: {m}" for n, m in stuck))
    else:
        setc(cond.DEGRADED, "False", "AsExpected", "")

    status: dict[str, Any] = {
        "observedGeneration": generation,
        "conditions": conditions,
        "model": model.to_wire(),
        "stableRevision": stable_id,
        "revisions": revisions,
        "replicas": replicas,
        "readyReplicas": ready,
        "endpoint": b.endpoint(name, namespace, spec),
    }
    if canary_id is not None:
        status["canaryRevision"] = canary_id
    status = {k: v for k, v in status.items() if v is not None}

    for action in actions:
        if isinstance(action, Apply):
            verb = "Created" if action.created else "Updated"
            events.append(Event("Normal", verb, f"{verb} {action.obj['kind']} {action.obj['metadata']['name']}"))
        else:
            events.append(Event("Normal", "Deleted", f"Deleted {action.kind} {action.name}"))
    for changed in cond.transitions(old_status.get("conditions", []), conditions):
        warning = changed["type"] == cond.DEGRADED and changed["status"] == "True"
        text = f"{changed['type']}={changed['status']}" + (f": {changed['message']}" if changed["message"] else "")
        events.append(Event("Warning" if warning else "Normal", changed["reason"], text))
    return Plan(actions=actions, events=events, status=status)


# ------------------------------------------------------------------------------- observe, execute


def observe(kube: Kube, body: Mapping[str, Any], autoscaler_kinds: frozenset[str]) -> Observed:
    """Read an LLMDeployment's live children: one list of Deployments and one get per other kind."""
    name, namespace = body["metadata"]["name"], body["metadata"]["namespace"]
    deployments = {}
    for dep in kube.list("apps/v1", "Deployment", namespace, f"{c.LABEL_DEPLOYMENT}={name}"):
        revision = dep.get("metadata", {}).get("labels", {}).get(c.LABEL_REVISION)
        if revision:
            deployments[revision] = dep
    kinds = [("v1", "Service"), ("networking.istio.io/v1", "DestinationRule"), ("networking.istio.io/v1", "VirtualService"),
             ("autoscaling/v2", "HorizontalPodAutoscaler"), ("policy/v1", "PodDisruptionBudget")]
    if "ScaledObject" in autoscaler_kinds:
        kinds.append(("keda.sh/v1alpha1", "ScaledObject"))
    children = {kind: kube.get(api_version, kind, namespace, name) for api_version, kind in kinds}
    return Observed(deployments=deployments, children=children)


def status_patch(body: Mapping[str, Any], status: dict[str, Any]) -> list[dict[str, Any]]:
    """A JSON patch turning ``body``'s status into ``status``, guarded by a resourceVersion test
    (empty when nothing changes: the pass then writes nothing)."""
    old = {"status": body.get("status") or {}}
    ops = jsonpatch.make_patch(old, {"status": status}).patch
    if not ops:
        return []
    if "status" not in (body or {}):
        ops = [{"op": "add", "path": "/status", "value": status}]
    rv = body.get("metadata", {}).get("resourceVersion")
    return ([{"op": "test", "path": "/metadata/resourceVersion", "value": rv}] if rv else []) + ops


def execute(
    kube: Kube, body: Mapping[str, Any], plan: Plan, *, now: str, post_event: Callable[[Event], None],
    owner: Callable[[dict[str, Any]], None],
) -> int:
    """Carry out ``plan``: apply and delete children in order, post its events, patch the status once.

    ``owner`` adds the owner reference to each applied object. Returns the number of API writes made.
    Raises :class:`KubeError` when a write fails (after recording the failure in status when it can).
    """
    writes = 0
    status = plan.status
    try:
        for action in plan.actions:
            if isinstance(action, Apply):
                obj = copy.deepcopy(action.obj)
                owner(obj)
                kube.apply(obj)
            else:
                kube.delete(action.api_version, action.kind, body["metadata"]["namespace"], action.name)
            writes += 1
    except KubeError as error:
        status = copy.deepcopy(status)
        status["conditions"] = cond.set_condition(
            status.get("conditions", []), cond.DEGRADED, "True", "ReconcileError", str(error),
            now=now, generation=body.get("metadata", {}).get("generation"),
        )
        post_event(Event("Warning", "ReconcileError", str(error)))
        _write_status(kube, body, status)
        raise
    for event in plan.events:
        post_event(event)
    return writes + _write_status(kube, body, status)


def _write_status(kube: Kube, body: Mapping[str, Any], status: dict[str, Any]) -> int:
    ops = status_patch(body, status)
    if not ops:
        return 0
    meta = body["metadata"]
    try:
        kube.patch_status(body.get("apiVersion", API_VERSION), body["kind"], meta["namespace"], meta["name"], ops)
    except Conflict:
        log.info("status of %s/%s changed while reconciling; the next pass retries", meta["namespace"], meta["name"])
        return 0
    return 1
