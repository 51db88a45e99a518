"""Reconciling an LLMDeployment: reading the cluster and carrying a plan out.

:func:`observe` reads an LLMDeployment's live children, :func:`execute` carries out a
:class:`~llm_operator._planner.Plan` through a :class:`~llm_operator._kube.Kube` and writes the status once;
neither decides anything (:mod:`llm_operator._planner` does).
"""

from __future__ import annotations

import copy
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from typing import Any

import jsonpatch

from . import _builders as b
from . import _conditions as cond
from . import _contract as c
from . import _registry as reg
from ._api import API_VERSION, LLMDeploymentSpec
from ._cache import ApiReader, Reader
from ._kube import Conflict, Kube, KubeError
from ._measure import guard as fail_fast
from ._measure import measure
from ._metrics import MetricsError, MetricsProvider
from ._planner import (
    Apply,
    Create,
    Observed,
    Plan,
    RecordOutcome,
    Scale,
    WriteStatus,
    as_stored,
    measurement_due,
    plan_llmdeployment,
    spec_or_error,
)
from ._progressive import resolve as resolve_active
from ._routing import observed_routers
from ._telemetry import Telemetry
from ._vocabulary import Event, Reason

log = logging.getLogger(__name__)




def observe(reader: Reader, body: Mapping[str, Any], autoscaler_kinds: frozenset[str]) -> Observed:
    """Read an LLMDeployment's live children through ``reader``: its revision Deployments, its other children by
    name, and its LLMRollouts (a name another deployment's rollout holds is found when a create meets it:
    :func:`execute`)."""
    name, namespace = body["metadata"]["name"], body["metadata"]["namespace"]
    deployments = {}
    for dep in reader.revisions(namespace, name):
        revision = dep.get("metadata", {}).get("labels", {}).get(c.LABEL_REVISION)
        if revision:
            deployments[revision] = dep
    routed = [b.service_name(name, role) for role in b.ROLES]  # the Service clients call, and the canary's
    routers = observed_routers(((body.get("spec") or {}).get("traffic") or {}).get("router"), body.get("status") or {})
    kinds = [("v1", "Service", n) for n in routed] + [ref for router in routers for ref in router.children(name)] + [
        ("autoscaling/v2", "HorizontalPodAutoscaler", name),
        ("policy/v1", "PodDisruptionBudget", name)] + [(api_version, kind, name) for api_version, kind in b.SECURITY_KINDS]
    if "ScaledObject" in autoscaler_kinds:
        kinds.append(("keda.sh/v1alpha1", "ScaledObject", name))
    children = {(kind, n): reader.child(api_version, kind, namespace, n) for api_version, kind, n in kinds}
    return Observed(deployments=deployments, children=children, rollouts=reader.rollouts(namespace, name))


def _create_rollout(kube: Kube, obj: dict[str, Any], taken: frozenset[str] = frozenset(), tries: int = 20) -> str:
    """Create the LLMRollout ``obj``. The planner names it after what this deployment's rollouts hold (it sees only
    those: the LIST is filtered by the API server); a 409 is a name an LLMRollout of another deployment holds, and
    the next name of the same sequence (``<deployment>-<revision>``, then ``-2``, ``-3``...) is taken instead.
    Returns the name created.

    Raises:
        Conflict: the name is held by this revision's own rollout (it appeared since the pass read them: the next
            pass sees it), or ``tries`` names in a row are held by other rollouts.
    """
    meta, spec = obj["metadata"], obj["spec"]
    base = f"{spec['deploymentName']}-{meta['labels'][c.LABEL_REVISION]}"
    suffix = meta["name"].removeprefix(base).removeprefix("-")
    first = int(suffix) if suffix.isdigit() else 1
    for n in range(first, first + tries):
        meta["name"] = base if n == 1 else f"{base}-{n}"
        if meta["name"] in taken:  # one of this deployment's, as the pass read them
            continue
        try:
            kube.create(obj)
            return str(meta["name"])
        except Conflict:  # a LIST by name: the role grants no get on LLMRollouts (the watch needs list anyway)
            found = kube.list(obj["apiVersion"], obj["kind"], meta["namespace"], "", field_selector=f"metadata.name={meta['name']}")
            held = found[0] if found else None
            ours = held is not None and (held.get("spec") or {}).get("deploymentName") == spec["deploymentName"]
            if held is None or (ours and held["metadata"].get("labels", {}).get(c.LABEL_REVISION) == meta["labels"][c.LABEL_REVISION]):
                raise  # gone again, or this revision's own rollout appeared since the pass read them: the next pass sees it
    raise Conflict(f"LLMRollout names {base}-{first} to {base}-{first + tries - 1} are held by other rollouts")


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
    renamed: dict[str, str] = {}  # a planned LLMRollout name -> the one created (a 409 took the next of the sequence)
    try:
        for action in plan.actions:
            if isinstance(action, Apply):
                obj = copy.deepcopy(action.obj)
                owner(obj)
                kube.apply(obj)
            elif isinstance(action, Create):
                obj = copy.deepcopy(action.obj)
                owner(obj)
                planned = obj["metadata"]["name"]
                created = _create_rollout(kube, obj, action.taken)
                if created != planned:
                    renamed[planned] = created
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
            status.get("conditions", []), cond.DEGRADED, "True", Reason.RECONCILE_ERROR, str(error), now=now, generation=generation)
        if generation is not None:
            status["observedGeneration"] = generation
        post_event(Event("Warning", Reason.RECONCILE_ERROR, str(error)))
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
        if event.reason == Reason.ROLLOUT_CREATED:
            for planned, created in renamed.items():
                event = replace(event, message=event.message.replace(f"LLMRollout {planned}", f"LLMRollout {created}"))
        post_event(event)
    if record is not None:
        for outcome in (a for a in plan.actions if isinstance(a, RecordOutcome)):
            writes += _record_outcome(kube, outcome, record, now, post_event)
    return writes + written


def _record_outcome(kube: Kube, action: RecordOutcome, record: Callable[[reg.Outcome], None], now: str,
                    post_event: Callable[[Event], None]) -> int:
    """Write one rollout outcome to the registry, then note it (or the failure, retried later) in its status."""
    out = action.outcome
    what = ", ".join([*([f"{out.name} version {out.version}"] if out.name else []), *(f"adapter {n} version {v}" for n, v in out.adapters)])
    status = copy.deepcopy(action.status)
    try:
        record(out)
    except reg.RegistryError as error:
        status["registry"] = {"outcome": out.outcome, "error": str(error)[:300]}
        if status != action.body.get("status"):
            post_event(Event("Warning", Reason.REGISTRY_WRITE_FAILED, f"{what}: {error}", about=action.body))
    else:
        status["registry"] = {"outcome": out.outcome, "recordedAt": now}
        moved = f"; alias {out.alias} -> {out.version}" if out.alias else f"; stage {out.stage}" if out.stage else ""
        post_event(Event("Normal", Reason.REGISTRY_UPDATED, f"{what} tagged {reg.TAG_ROLLOUT}={out.outcome}{moved}", about=action.body))
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


# ------------------------------------------------------------------------------------- one pass


#: ``(body, spec, rollouts) -> (resolution, record)``: what the model registry says about an LLMDeployment's MLflow
#: model (None for a URI model) and a function writing a finished rollout's outcome back (None when there is none).
Resolve = Callable[[Mapping[str, Any], LLMDeploymentSpec, list[dict[str, Any]]],
                   tuple[reg.Resolution | None, Callable[[reg.Outcome], None] | None]]


@dataclass(frozen=True)
class Deps:
    """What one pass needs of the world, built once at start-up (the handlers) or from fakes (the unit tests).

    Attributes:
        kube: the Kubernetes boundary (reads and writes).
        resolve: the model registry, behind its cache (:data:`Resolve`).
        provider: the metrics provider for a Prometheus address (None: the operator's default); raises
            :class:`~llm_operator._metrics.MetricsError` when there is none.
        post: posts one Event about an object (``about``: the object as read, with apiVersion and kind).
        owner: adds the owner reference of ``body`` to a child about to be applied.
        clock: the current time, RFC 3339 (UTC, seconds).
        telemetry: the operator's own metrics, or None.
        autoscaler_kinds: the autoscaler kinds the cluster serves (``ScaledObject`` needs KEDA).
        reader: how the children are read (:class:`~._cache.CachedReader` from the watches); None: by requests
            to the API server through ``kube``.
    """

    kube: Kube
    resolve: Resolve
    provider: Callable[[str | None], MetricsProvider]
    post: Callable[[Mapping[str, Any], Event, str], None]
    owner: Callable[[Mapping[str, Any], dict[str, Any]], None]
    clock: Callable[[], str]
    telemetry: Telemetry | None = None
    autoscaler_kinds: frozenset[str] = frozenset({"HorizontalPodAutoscaler"})
    reader: Reader | None = None


@dataclass(frozen=True)
class PassResult:
    """What a pass did: the plan it carried out (None when the object is gone or being deleted), the API writes it
    made, and when it wants the next pass (seconds; None: on the next watch event or resync)."""

    plan: Plan | None
    writes: int = 0
    requeue_after: float | None = None


def run_pass(deps: Deps, namespace: str, name: str) -> PassResult:
    """One level-based pass over one LLMDeployment, kopf-free: read it once, parse it once, observe its children,
    ask the registry, measure the active rollout's analysis when it is due, plan, execute, and record telemetry.

    Raises:
        KubeError: a read or write failed (the status records the failure when it could be written); the caller
            retries after its back-off.
    """
    started = time.monotonic()  # the whole pass: reads, registry, measurement, plan and writes
    body = deps.kube.get(API_VERSION, "LLMDeployment", namespace, name)
    if body is None or body["metadata"].get("deletionTimestamp"):
        return PassResult(None)
    now = deps.clock()
    parsed = spec_or_error(body)  # once per pass; an invalid spec is the planner's to report (nothing to resolve or measure)
    spec = parsed if isinstance(parsed, LLMDeploymentSpec) else None
    observed = observe(deps.reader or ApiReader(deps.kube), body, deps.autoscaler_kinds)
    resolution, record = deps.resolve(body, spec, observed.rollouts) if spec is not None else (None, None)
    if spec is not None and spec.adapters:  # followed adapters pinned to the versions named now (or served): once
        parsed = spec = spec.model_copy(update={"adapters": reg.pin_adapters(
            spec.adapters, resolution.adapters if resolution is not None else {}, (body.get("status") or {}).get("adapters") or [])})
    served = (body.get("status") or {}).get("adapters") or []
    resolved = resolve_active(spec, observed.rollouts, served) if spec is not None else None  # once per pass
    due = measurement_due(body, observed, now, spec=spec, resolved=resolved) if spec is not None and resolved is not None else None
    run = guard = None
    if due is not None:
        try:
            provider = deps.provider(due.analysis.prometheus_address)
        except MetricsError as error:
            provider = _Unavailable(error)
        run = measure(provider, due.analysis, due.slo, due.context) if due.run else None
        guard = fail_fast(provider, due.analysis.fail_fast, due.slo, due.context, due.since_seconds) if due.guard else None
    plan = plan_llmdeployment(body, observed, now, spec=parsed, resolved=resolved, registry=resolution,
                              autoscaler_kinds=deps.autoscaler_kinds, run=run, guard=guard)

    def post(event: Event) -> None:
        about = dict(event.about or body)
        about.setdefault("apiVersion", API_VERSION)
        about.setdefault("kind", "LLMRollout" if event.about is not None else "LLMDeployment")
        if about.get("metadata", {}).get("uid"):
            deps.post(about, event, now)

    writes = execute(deps.kube, body, plan, now=now, post_event=post, owner=lambda obj: deps.owner(body, obj), record=record)
    if deps.telemetry is not None:
        after = {r.body["metadata"]["name"]: r.status for r in plan.actions if isinstance(r, WriteStatus)}
        rollouts = [(r, after.get(r["metadata"]["name"], r.get("status") or {})) for r in observed.rollouts
                    if r.get("metadata", {}).get("uid")]
        slo = spec.slo if spec is not None else None
        deps.telemetry.observe_pass(body, slo.availability if slo else None, rollouts, time.monotonic() - started, writes,
                                    latency_p99_seconds=slo.latency_p99_seconds if slo else None,
                                    ttft_p95_seconds=slo.time_to_first_token_p95_seconds if slo else None)
    return PassResult(plan, writes, plan.requeue_after)


class _Unavailable:
    """A provider whose every query fails with the same error (no address configured)."""

    def __init__(self, error: MetricsError):
        self.error = error

    def query(self, promql: str) -> Any:
        raise self.error
