"""Reconciling an LLMDeployment: reading the cluster and carrying a plan out.

:func:`observe` reads an LLMDeployment's live children, :func:`execute` carries out a
:class:`~llm_operator._planner.Plan` through a :class:`~llm_operator._kube.Kube` and writes the status once;
neither decides anything (:mod:`llm_operator._planner` does).
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Callable, Mapping
from typing import Any

import jsonpatch

from . import _builders as b
from . import _conditions as cond
from . import _contract as c
from . import _registry as reg
from ._api import API_VERSION
from ._events import Event
from ._kube import Conflict, Kube, KubeError
from ._planner import Apply, Create, Observed, Plan, RecordOutcome, Scale, WriteStatus, as_stored

log = logging.getLogger(__name__)




def observe(kube: Kube, body: Mapping[str, Any], autoscaler_kinds: frozenset[str]) -> Observed:
    """Read an LLMDeployment's live children: one list of Deployments and one get per other child."""
    name, namespace = body["metadata"]["name"], body["metadata"]["namespace"]
    deployments = {}
    for dep in kube.list("apps/v1", "Deployment", namespace, f"{c.LABEL_DEPLOYMENT}={name}"):
        revision = dep.get("metadata", {}).get("labels", {}).get(c.LABEL_REVISION)
        if revision:
            deployments[revision] = dep
    routed = [b.service_name(name, role) for role in b.ROLES]  # the Service clients call, and the canary's
    kinds = [("v1", "Service", n) for n in routed] + [("networking.istio.io/v1", "DestinationRule", n) for n in routed] + [
        ("networking.istio.io/v1", "VirtualService", name), ("autoscaling/v2", "HorizontalPodAutoscaler", name),
        ("policy/v1", "PodDisruptionBudget", name)]
    if "ScaledObject" in autoscaler_kinds:
        kinds.append(("keda.sh/v1alpha1", "ScaledObject", name))
    children = {(kind, n): kube.get(api_version, kind, namespace, n) for api_version, kind, n in kinds}
    every = kube.list(API_VERSION, "LLMRollout", namespace, "")
    rollouts = [r for r in every if r.get("spec", {}).get("deploymentName") == name]
    others = frozenset(r["metadata"]["name"] for r in every if r.get("spec", {}).get("deploymentName") != name)
    return Observed(deployments=deployments, children=children, rollouts=rollouts, other_rollout_names=others)


def status_patch(body: Mapping[str, Any], status: dict[str, Any]) -> list[dict[str, Any]]:
    """A JSON patch turning ``body``'s status into ``status``, guarded by a resourceVersion test
    (empty when nothing changes: the pass then writes nothing).

    ``status`` is compared and sent as the API server stores it (:func:`as_stored`): a whole-number float equals
    the integer read back, so an unchanged status is not rewritten on every pass, and a NaN or infinity (which
    would make the whole body invalid JSON, refused with a 400) is left out and logged."""
    old = {"status": body.get("status") or {}}
    status, dropped = as_stored(status, "status")
    if dropped:
        meta = body.get("metadata", {})
        log.warning("%s %s/%s: not finite, left out of the status (JSON has no NaN or infinity): %s",
                    body.get("kind", "object"), meta.get("namespace"), meta.get("name"), ", ".join(dropped))
    ops = jsonpatch.make_patch(old, {"status": status}).patch
    if not ops:
        return []
    if "status" not in (body or {}):
        ops = [{"op": "add", "path": "/status", "value": status}]
    rv = body.get("metadata", {}).get("resourceVersion")
    return ([{"op": "test", "path": "/metadata/resourceVersion", "value": rv}] if rv else []) + ops


def execute(
    kube: Kube, body: Mapping[str, Any], plan: Plan, *, now: str, post_event: Callable[[Event], None],
    owner: Callable[[dict[str, Any]], None], record: Callable[[reg.Outcome], None] | None = None,
) -> int:
    """Carry out ``plan``: apply, scale, create and delete in its order, write the rollout's status after the
    routes it records, post the events, and patch the LLMDeployment's status once.

    ``owner`` adds the owner reference to each applied object; ``record`` writes a rollout's outcome to the
    model registry (:class:`RecordOutcome` actions are skipped without it). Returns the number of API writes.
    Raises :class:`KubeError` when a write fails, after recording only the failure in status (``Degraded=True``,
    reason ``ReconcileError``, and the generation seen): nothing the pass planned is recorded as done, so the
    next pass plans it again.
    """
    writes = 0
    status = plan.status
    namespace = body["metadata"]["namespace"]
    rollout_statuses = [a for a in plan.actions if isinstance(a, WriteStatus)]
    try:
        for action in plan.actions:
            if isinstance(action, Apply):
                obj = copy.deepcopy(action.obj)
                owner(obj)
                kube.apply(obj)
            elif isinstance(action, Create):
                # The planner creates only what it did not observe: a 409 is a name taken since (a failure).
                obj = copy.deepcopy(action.obj)
                owner(obj)
                kube.create(obj)
            elif isinstance(action, Scale):
                kube.scale(namespace, action.name, action.replicas)
            elif isinstance(action, (WriteStatus, RecordOutcome)):
                continue
            else:
                kube.delete(action.api_version, action.kind, namespace, action.name)
            writes += 1
    except KubeError as error:
        # The plan's status records what the pass meant to do (a new spec revision, a promotion): none of it is
        # recorded when an action failed, or the next pass would take it as done (a revision whose LLMRollout was
        # never created would never get one). The status as read, with the failure and the generation seen.
        generation = body.get("metadata", {}).get("generation")
        status = copy.deepcopy(dict(body.get("status") or {}))
        status["conditions"] = cond.set_condition(
            status.get("conditions", []), cond.DEGRADED, "True", "ReconcileError", str(error), now=now, generation=generation)
        if generation is not None:
            status["observedGeneration"] = generation
        post_event(Event("Warning", "ReconcileError", str(error)))
        _write_status(kube, body, status)
        raise
    # The LLMDeployment's status (which revision is stable) lands before a rollout's (Succeeded, Aborted): if it
    # does not, the pass is redone from the same state rather than leaving a rollout claiming what is not true.
    written = _write_status(kube, body, status)
    if written is None:
        return writes
    for action in rollout_statuses:
        writes += _write_status(kube, action.body, action.status) or 0
    for event in plan.events:
        post_event(event)
    for outcome in (a for a in plan.actions if isinstance(a, RecordOutcome) and record is not None):
        writes += _record_outcome(kube, outcome, record, now, post_event)
    return writes + written


def _record_outcome(kube: Kube, action: RecordOutcome, record: Callable[[reg.Outcome], None], now: str,
                    post_event: Callable[[Event], None]) -> int:
    """Write one rollout outcome to the registry, then note it (or the failure, retried later) in its status."""
    out = action.outcome
    status = copy.deepcopy(action.status)
    try:
        record(out)
    except reg.RegistryError as error:
        status["registry"] = {"outcome": out.outcome, "error": str(error)[:300]}
        if status != action.body.get("status"):
            post_event(Event("Warning", "RegistryWriteFailed", f"{out.name} version {out.version}: {error}", about=action.body))
    else:
        status["registry"] = {"outcome": out.outcome, "recordedAt": now}
        moved = f"; alias {out.alias} -> {out.version}" if out.alias else f"; stage {out.stage}" if out.stage else ""
        post_event(Event("Normal", "RegistryUpdated", f"{out.name} version {out.version} tagged {reg.TAG_ROLLOUT}={out.outcome}{moved}",
                         about=action.body))
    return _write_status(kube, action.body, status) or 0


def _write_status(kube: Kube, body: Mapping[str, Any], status: dict[str, Any]) -> int | None:
    """Patch ``body``'s status to ``status``: 1 when written, 0 when nothing changed, None on a conflict
    (the object moved on since it was read; the next pass starts over from what is there)."""
    ops = status_patch(body, status)
    if not ops:
        return 0
    meta = body["metadata"]
    try:
        kube.patch_status(body.get("apiVersion", API_VERSION), body.get("kind", "LLMDeployment"), meta["namespace"], meta["name"], ops)
    except Conflict:
        log.info("status of %s/%s changed while reconciling; the next pass retries", meta["namespace"], meta["name"])
        return None
    return 1
