"""Planning one reconcile pass of an LLMDeployment: pure.

:func:`plan_llmdeployment` takes the object, what is live in the cluster and the time, and returns the
objects to apply or delete, the Events to post and the complete new status. It does no I/O, so it is
table-tested; :mod:`llm_operator._reconcile` reads the cluster and carries a plan out. The planner is an
orchestrator over named phases (the model and revision, the rollouts started or superseded, the replica target,
the rollout advanced, the revisions retained, the desired children, the ordered actions, the status, the Events),
each a function of the pass's one snapshot (:class:`_Pass`) and the frozen results of the phases before it.

Level-based: every pass recomputes everything from the present state, so a pass may be repeated or
skipped without harm, and a pass that finds nothing to do writes nothing.
"""

from __future__ import annotations

import copy
import dataclasses
import datetime
import hashlib
import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import InvalidOperation
from typing import Any

from . import _builders as b
from . import _conditions as cond
from . import _contract as c
from . import _progressive as p
from . import _registry as reg
from ._api import API_VERSION, Analysis, LLMDeploymentSpec, ResolvedModel, Slo
from ._measure import Context, Guard, Run
from ._quantity import quantity
from ._rollout import Decision, bake_lost, bake_recovered, baking, decide, guarded, promotion_size, stable_floor
from ._rollout import Observed as RolloutObserved
from ._routing import ISTIO, ROUTERS, Router, router_for
from ._validation import InvalidSpec, parse_llmdeployment
from ._vocabulary import TERMINAL, Event, Phase, Reason, parse_rfc3339, rfc3339

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
class Scale:
    """Set a Deployment's replicas (a merge patch of ``spec.replicas``, leaving the rest as it is)."""

    name: str
    replicas: int


@dataclass(frozen=True)
class Create:
    """Create ``obj`` unless it exists (used for the LLMRollouts the operator starts); ``taken``: the names this
    deployment's rollouts hold, which a create that meets a 409 skips."""

    obj: dict[str, Any]
    taken: frozenset[str] = frozenset()


@dataclass(frozen=True)
class WriteStatus:
    """Patch another object's status (an LLMRollout's) from ``body``'s to ``status``."""

    body: Mapping[str, Any]
    status: dict[str, Any]


@dataclass(frozen=True)
class RecordOutcome:
    """Write a finished rollout's outcome to the model registry, then ``status`` onto the rollout
    (``status.registry`` says it was recorded, so it is written once)."""

    body: Mapping[str, Any]
    outcome: reg.Outcome
    status: dict[str, Any]


#: One step of a plan, carried out by :func:`llm_operator._reconcile.execute`.
Action = Apply | Delete | Create | WriteStatus | Scale | RecordOutcome


@dataclass
class Observed:
    """What is live: the revision Deployments of this LLMDeployment (by revision id), its other children
    (by kind and name; None when absent), and the LLMRollouts that name it (the API server filters them: a name
    another deployment's rollout holds is met at the create, :func:`~._reconcile.execute`)."""

    deployments: dict[str, dict[str, Any]] = field(default_factory=dict)
    children: dict[tuple[str, str], dict[str, Any] | None] = field(default_factory=dict)
    rollouts: list[dict[str, Any]] = field(default_factory=list)

    @property
    def rollout_names(self) -> frozenset[str]:
        """The names this deployment's LLMRollouts hold (a new one must not take any of them)."""
        return frozenset(r["metadata"]["name"] for r in self.rollouts)


@dataclass
class Plan:
    """The outcome of one pass: actions in safe order, events, the full new status, and when to look again
    (seconds; None: on the next watch event or resync)."""

    actions: list[Action]
    events: list[Event]
    status: dict[str, Any]
    requeue_after: float | None = None


# ------------------------------------------------------------------------------------ comparison


def _equal_leaf(want: Any, have: Any) -> bool:
    if isinstance(want, bool) or isinstance(have, bool):
        return want is have  # True == 1 in Python, not in Kubernetes
    if want == have:
        return True
    if isinstance(want, (str, int, float)) and isinstance(have, (str, int, float)) and not isinstance(want, bool):
        try:  # the API server canonicalises quantities ("1024Mi" -> "1Gi")
            return quantity(want) == quantity(have)
        except (ValueError, TypeError, InvalidOperation):
            return False
    return False


def is_subset(want: Any, have: Any) -> bool:
    """True when every field set in ``want`` has the same value in ``have`` (which may hold more, such as
    fields the API server defaulted). Lists compare element-wise and must have the same length."""
    if isinstance(want, Mapping):
        return isinstance(have, Mapping) and all(k in have and is_subset(v, have[k]) for k, v in want.items())
    if isinstance(want, list):
        return isinstance(have, list) and len(want) == len(have) and all(is_subset(w, h) for w, h in zip(want, have, strict=True))
    return _equal_leaf(want, have)


def _owned_view(obj: dict[str, Any]) -> dict[str, Any]:
    """``obj`` without the fields whose values others own: a Deployment's replicas (the autoscaler's,
    echoed back when autoscaling) and a VirtualService's or HTTPRoute's weights and mirror (the rollout's)."""
    view = copy.deepcopy(obj)
    if view.get("kind") == "Deployment":
        view.get("spec", {}).pop("replicas", None)
    elif view.get("kind") == "VirtualService":
        for http in view.get("spec", {}).get("http", []):
            http.pop("mirror", None)
            http.pop("mirrorPercentage", None)
            for route in http.get("route", []):
                route.pop("weight", None)
    elif view.get("kind") == "HTTPRoute":
        for rule in view.get("spec", {}).get("rules", []):
            rule["filters"] = [f for f in rule.get("filters", []) if f.get("type") != "RequestMirror"]
            if not rule["filters"]:
                del rule["filters"]
            for ref in rule.get("backendRefs", []):
                ref.pop("weight", None)
    return view


def with_applied_hash(obj: dict[str, Any]) -> dict[str, Any]:
    """``obj`` with an annotation hashing what the LLMDeployment owns of it, so a field dropped from the
    desired object (which a subset check cannot see) still triggers an apply that removes it."""
    view = json.dumps(_owned_view(obj), sort_keys=True, separators=(",", ":"))
    out = copy.deepcopy(obj)
    out["metadata"].setdefault("annotations", {})[APPLIED_HASH] = hashlib.sha256(view.encode()).hexdigest()[:16]
    return out


def needs_apply(desired: dict[str, Any], live: dict[str, Any] | None, owner_uid: str | None = None) -> bool:
    """Whether applying ``desired`` (with its hash annotation) would change ``live``, or ``live`` is not owned by
    the object with uid ``owner_uid`` (the owner reference is added when the apply is executed, so it is not in
    ``desired``): a child orphaned by ``kubectl delete --cascade=orphan`` is adopted by the object recreated under
    the same name, and a later deletion collects it."""
    if live is None:
        return True
    if owner_uid and not any(ref.get("uid") == owner_uid and ref.get("controller")
                             for ref in live.get("metadata", {}).get("ownerReferences") or []):
        return True
    live_hash = live.get("metadata", {}).get("annotations", {}).get(APPLIED_HASH)
    if live_hash != desired["metadata"]["annotations"][APPLIED_HASH]:
        return True
    desired_body = {k: v for k, v in desired.items() if k not in ("apiVersion", "kind")}
    return not is_subset(desired_body, live)


def as_stored(value: Any, path: str = "") -> tuple[Any, list[str]]:
    """``value`` as kube-apiserver stores and returns it, and what it could not hold.

    A custom resource is stored as JSON and decoded into ``int64`` where it can be (sigs.k8s.io/json), and Go's
    encoding/json writes a ``float64`` below 1e21 with no fractional part without one: ``3.0`` comes back as
    ``3``. JSON has no NaN or infinity (the server answers 400): such a number is left out of its object (or
    written as null in a list) and named in the returned notes as ``"path=value"`` (``path`` dotted, under the
    given prefix), so the caller can say why it is missing.
    """
    if isinstance(value, float):
        if not math.isfinite(value):
            return None, [f"{path}={value}"]
        return (int(value) if value.is_integer() and abs(value) < 1e21 else value), []
    notes: list[str] = []
    if isinstance(value, Mapping):
        out = {}
        for key, item in value.items():
            item_stored, item_notes = as_stored(item, f"{path}.{key}" if path else str(key))
            notes += item_notes
            if item_stored is not None or item is None:
                out[key] = item_stored
        return out, notes
    if isinstance(value, (list, tuple)):
        items = []
        for i, item in enumerate(value):
            item_stored, item_notes = as_stored(item, f"{path}[{i}]")
            notes += item_notes
            items.append(item_stored)
        return items, notes
    return value, notes


# ---------------------------------------------------------------------------------------- planner


def _int(value: Any) -> int:
    return int(value or 0)


def _deadline_exceeded(dep: dict[str, Any]) -> str | None:
    for item in dep.get("status", {}).get("conditions", []):
        # the Deployment controller's own condition and reason, the same words as the operator's
        if item.get("type") == cond.PROGRESSING and item.get("status") == "False" and item.get("reason") == Reason.PROGRESS_DEADLINE_EXCEEDED:
            return item.get("message") or "progress deadline exceeded"
    return None


def _invalid(body: Mapping[str, Any], error: InvalidSpec, now: str) -> Plan:
    status = copy.deepcopy(dict(body.get("status") or {}))
    generation = body.get("metadata", {}).get("generation")
    old_conditions = status.get("conditions", [])
    message = str(error)
    conditions = cond.set_condition(old_conditions, cond.DEGRADED, "True", Reason.INVALID_SPEC, message, now=now, generation=generation)
    conditions = cond.set_condition(conditions, cond.PROGRESSING, "False", Reason.INVALID_SPEC, "the spec cannot be acted on; nothing was changed",
                                    now=now, generation=generation)
    if cond.get_condition(conditions, cond.READY) is None:
        conditions = cond.set_condition(conditions, cond.READY, "False", Reason.INVALID_SPEC, "nothing is deployed", now=now, generation=generation)
    status.update(conditions=conditions, observedGeneration=generation)
    events = [Event("Warning", Reason.INVALID_SPEC, message)] if cond.transitions(old_conditions, conditions) or status != body.get("status") else []
    return Plan(actions=[], events=events, status=status)


def _replicas(dep: Mapping[str, Any] | None) -> int:
    return _int((dep or {}).get("spec", {}).get("replicas"))


def _ready(dep: Mapping[str, Any] | None) -> int:
    """Ready pods of a Deployment, counted only when its status reflects its current spec."""
    if not dep:
        return 0
    status = dep.get("status") or {}
    if _int(dep.get("metadata", {}).get("generation")) > _int(status.get("observedGeneration")):
        return 0
    return _int(status.get("readyReplicas"))


def spec_or_error(body: Mapping[str, Any]) -> LLMDeploymentSpec | InvalidSpec:
    """``body``'s spec parsed and validated (:func:`~llm_operator._validation.parse_llmdeployment`), or the
    :class:`InvalidSpec` naming what is wrong: what a pass hands :func:`plan_llmdeployment`, parsed once."""
    try:
        return parse_llmdeployment(body)
    except InvalidSpec as error:
        return error


def plan_llmdeployment(
    body: Mapping[str, Any], observed: Observed, now: str, *, spec: LLMDeploymentSpec | InvalidSpec,
    resolved: p.Resolved | None, registry: reg.Resolution | None = None,
    autoscaler_kinds: frozenset[str] = frozenset({"HorizontalPodAutoscaler"}), run: Run | None = None,
    guard: Guard | None = None,
) -> Plan:
    """Decide one reconcile pass for an LLMDeployment, including its active LLMRollout's step.

    Args:
        body: the LLMDeployment as read from the API (``metadata``, ``spec``, ``status``).
        observed: its live children and the LLMRollouts that name it.
        now: the current time, RFC 3339.
        registry: what the model registry said in this pass (for an ``mlflow`` model): the version the alias
            or stage names, the rollout targets' run metrics, or why it could not say. None: the registry was not
            asked (``render``), and the spec is read as it stands (``models:/name@alias``).
        autoscaler_kinds: the autoscaler kinds the cluster serves (``ScaledObject`` needs KEDA).
        run: the analysis measured in this pass for the active rollout (see :func:`measurement_due`).
        guard: the fail-fast check measured in this pass for the active rollout (likewise).
        spec: ``body``'s spec as the caller parsed it once (:func:`spec_or_error`), or why it is invalid.
        resolved: the active rollout among ``observed.rollouts`` as the caller resolved it once
            (:func:`~llm_operator._progressive.resolve`); None only with an invalid spec.

    Returns:
        The :class:`Plan`. An invalid spec yields no actions and a ``Degraded``/``InvalidSpec`` status.

    Registry: a model that follows an alias or stage is served at the version the registry names; when the
    registry cannot answer, the last resolved version keeps serving, no rollout starts, and ``ModelResolved``
    says why. A rollout to an MLflow version is gated on ``qualityGate`` before any traffic, and its outcome
    is written back (:class:`RecordOutcome`) once it has finished.

    Revisions: the first revision the spec names becomes stable directly. Later, when the spec names a new
    revision, the pass creates an LLMRollout for it from ``spec.rollout``; the active LLMRollout's decision
    (``_rollout.decide``) sizes the new revision's Deployment, sets the route weights and, at the end, makes it
    the stable revision. The previous revision is kept for ``scaleDownDelaySeconds``, then deleted.

    The pass is a chain of pure phases, each handing a small frozen result to the next (docs/design.md):
    target -> started -> size -> serving -> retained -> desired -> ordered -> status -> events.
    """
    if isinstance(spec, InvalidSpec):
        return _invalid(body, spec, now)
    if resolved is None:
        raise ValueError("plan_llmdeployment: a valid spec needs the active rollout resolved (progressive.resolve)")
    pass_ = _Pass(body["metadata"]["name"], body["metadata"]["namespace"], body["metadata"].get("generation"),
                  body["metadata"].get("uid"), dict(body.get("status") or {}), spec, observed, registry, now, parse_rfc3339(now),
                  resolved)
    target = _target(pass_)
    if target is None:  # the registry has not named a version yet: nothing to serve, nothing touched
        return _unresolved(body, spec, registry, now)
    started = _start_or_supersede(pass_, target)
    size = _replica_target(pass_, target.stable_id)
    serving = _advance_rollout(pass_, target, started, size, run, guard)
    retained = _retain(pass_, serving)
    desired = _desired(pass_, target, serving, size, autoscaler_kinds)
    ordered = _order(pass_, serving, retained, size, desired, started.actions + serving.actions + _outcomes(pass_),
                     target.revision.id)
    status = _status(pass_, target, started, size, serving, retained, ordered)
    events = started.events + serving.events + retained.events + _action_events(ordered.actions) + ordered.events + _condition_events(
        pass_.old_status.get("conditions", []), status["conditions"])
    requeue = serving.requeue + retained.requeue + ordered.requeue + (
        (registry.retry_in,) if registry is not None and registry.retry_in is not None else ())
    return Plan(actions=list(ordered.actions), events=list(events), status=status,
                requeue_after=min(requeue) if requeue else None)


# ------------------------------------------------------------------------------------ the phases


@dataclass(frozen=True)
class _Pass:
    """What every phase of one pass reads: the object as read (parsed once), what is live, the registry's word and
    the time. Nothing in it changes during the pass."""

    name: str
    namespace: str
    generation: int | None
    uid: str | None
    old_status: dict[str, Any]
    spec: LLMDeploymentSpec
    observed: Observed
    registry: reg.Resolution | None
    now: str
    now_dt: datetime.datetime
    resolved: p.Resolved  # the active rollout among observed.rollouts, and the invalid ones

    @property
    def names_revision(self) -> bool:
        return _names_revision(self.spec, self.registry)

    @property
    def router(self) -> Router:
        return router_for(self.spec.traffic.router)


@dataclass(frozen=True)
class _Target:
    """The model the spec names now, its revision, and the stable revision the pass starts from (the one the
    status records, or the spec's own when there is none yet or it vanished)."""

    model: ResolvedModel
    revision: b.Revision
    stable_id: str


def _target(pass_: _Pass) -> _Target | None:
    """Phase 1: the model and revision; None when the registry names no version and none was resolved before (of the
    model, or of an adapter that follows an alias or stage)."""
    model = _registry_model(pass_.spec, pass_.old_status, pass_.registry)
    if model is None:
        return None
    revision = b.spec_revision(pass_.spec, model, pass_.observed.deployments)  # a live revision keeps the defaults it was built with
    stable_id = pass_.old_status.get("stableRevision")
    if stable_id is None or (stable_id not in pass_.observed.deployments and stable_id != revision.id):
        if pass_.registry is not None and reg.unpinned(pass_.spec.adapters):
            return None  # an adapter's alias not resolved: no revision is made with it unpinned (render: as written)
        stable_id = revision.id  # the first revision (or a stable one that vanished) is served directly
    return _Target(model, revision, stable_id)


@dataclass(frozen=True)
class _Started:
    """The LLMRollouts as this pass leaves them (superseded ones with their new status), the revision the spec
    names as far as this pass knows (``status.specRevision``), and the writes and Events that got there."""

    rollouts: tuple[dict[str, Any], ...]
    spec_revision: str
    actions: tuple[Action, ...] = ()
    events: tuple[Event, ...] = ()
    superseded: bool = False  # a rollout's status changed in this pass: the active one is resolved anew


def _start_or_supersede(pass_: _Pass, target: _Target) -> _Started:
    """Phase 2: rollouts started or superseded for the spec.

    An operator-made rollout to a revision the spec no longer names is superseded: aborted, all traffic on stable,
    never promoted. Level-based (any pass, not only the one that saw the edit), so one whose status write failed is
    caught by the next pass. A revision the spec names anew (a new one, or one served before: A -> B -> C -> B) is
    rolled out like any other, by an LLMRollout of its own, unless one of the operator's is already carrying it
    (created by an earlier pass whose status write did not land: a create is never repeated). Nothing is started
    or superseded while the registry cannot say which revision the spec names."""
    rollouts = list(pass_.observed.rollouts)
    spec_revision = pass_.old_status.get("specRevision") or target.stable_id
    if not pass_.names_revision:
        return _Started(tuple(rollouts), spec_revision)
    actions: list[Action] = []
    events: list[Event] = []
    wanted = target.revision.id
    for i, old in enumerate(rollouts):
        if p.is_auto(old) and p.wants_pass(old) and p.revision_of(old) != wanted:
            superseded = p.supersede(old, wanted, pass_.now)
            rollouts[i] = {**old, "status": superseded}
            actions.append(WriteStatus(old, superseded))
            events.append(Event("Normal", Reason.SUPERSEDED, superseded["message"], about=old))
    carried = any(p.is_auto(r) and p.wants_pass(r) and p.revision_of(r) == wanted for r in rollouts)
    if wanted != spec_revision and wanted != target.stable_id and not carried:
        rollout = p.auto_rollout(pass_.name, pass_.namespace, pass_.spec, target.model, wanted, taken=pass_.observed.rollout_names,
                                 served_adapters=pass_.old_status.get("adapters") or ())
        actions.append(Create(rollout, pass_.observed.rollout_names))
        events.append(Event("Normal", Reason.ROLLOUT_CREATED, f"the spec names revision {wanted}: created LLMRollout {rollout['metadata']['name']}"))
    return _Started(tuple(rollouts), wanted, tuple(actions), tuple(events), superseded=any(isinstance(a, WriteStatus) for a in actions))


@dataclass(frozen=True)
class _Size:
    """The stable revision's replica target, and while a canary runs with an autoscaler, the floor stable may not
    go below (:func:`~llm_operator._rollout.stable_floor`) and the size the promoted revision gets
    (:func:`~llm_operator._rollout.promotion_size`); both None without an autoscaler."""

    want: int
    floor: int | None = None
    full: int | None = None


def _replica_target(pass_: _Pass, stable_id: str) -> _Size:
    """Phase 3: the replica target. The autoscaler owns replicas when there is one: what is live is echoed so an
    apply never fights it; while a canary runs, stable keeps what it needs to take all the traffic back."""
    scaling = pass_.spec.autoscaling
    if scaling is None:
        return _Size(pass_.spec.replicas)
    stable_live = pass_.observed.deployments.get(stable_id)
    want = _replicas(stable_live) if stable_live else max(scaling.min_replicas, 1)
    live_routes = pass_.router.live_routes(pass_.observed.children, pass_.name) or b.Routes()
    floor = stable_floor(scaling.min_replicas, scaling.max_replicas, want, _autoscaler_minimum(pass_.observed, pass_.name),
                         live_routes.canary_weight)
    return _Size(want, floor, promotion_size(floor, want, live_routes.canary_weight, scaling.max_replicas))


@dataclass(frozen=True)
class _Serving:
    """What serves after the active rollout's step: the stable revision (the promoted one after a promotion), the
    canary and the spec its pods run, their sizes, the route weights, whether the preview header route is on, the
    previous revision kept after a promotion (and until when), the revisions whose pods drain after an abort
    (revision -> seconds left), and the writes, Events and requeue delays (seconds) the step asks for."""

    stable_id: str
    active: p.Active | None  # None also when the active rollout waits for (or failed) its quality gate
    canary: b.Revision | None = None
    canary_spec: LLMDeploymentSpec | None = None
    canary_replicas: int = 0
    promoted_replicas: int = 0
    routes: b.Routes = field(default_factory=b.Routes)
    preview: bool = False
    previous: str | None = None
    previous_at: str | None = None
    drain: Mapping[str, float] = field(default_factory=dict)
    actions: tuple[Action, ...] = ()
    events: tuple[Event, ...] = ()
    requeue: tuple[float, ...] = ()

    @property
    def canary_id(self) -> str | None:
        return self.canary.id if self.canary is not None else None


def _advance_rollout(pass_: _Pass, target: _Target, started: _Started, size: _Size, run: Run | None,
                     guard: Guard | None = None) -> _Serving:
    """Phase 4: the rollouts advanced. Invalid rollouts are failed on their own status; the active one is held at
    its quality gate, closed when its revision is already stable, or stepped by :func:`~llm_operator._rollout.decide`
    (promoted, ended, or still carrying a canary: :func:`_decided`)."""
    active, invalid = p.resolve(pass_.spec, list(started.rollouts), pass_.old_status.get("adapters") or []) if started.superseded \
        else pass_.resolved
    measured = pass_.resolved[0]
    if active is not None and (measured is None or measured.body["metadata"]["name"] != active.body["metadata"]["name"]):
        run = guard = None  # measured for the rollout this pass superseded, not for this one
    failed = tuple(_fail_invalid(pass_, invalid))
    base = _Serving(stable_id=target.stable_id, active=None, promoted_replicas=size.want,
                    drain=dict(p.draining(started.rollouts, pass_.spec.rollout.abort_scale_down_delay_seconds, pass_.now_dt)),
                    previous=pass_.old_status.get("previousRevision"), previous_at=pass_.old_status.get("previousScaleDownAt"),
                    actions=failed, events=tuple(Event("Warning", Reason.INVALID_SPEC, str(error), about=rollout)
                                                 for rollout, error in invalid if any(a.body is rollout for a in failed)))
    if active is None:
        return base
    read_status = dict(active.body.get("status") or {})
    gate, rollout_status = (_quality_gate(active, read_status, pass_.registry, target.stable_id, pass_.now)
                            if active.revision.id != target.stable_id else (None, read_status))
    if gate is not None:  # waiting for the registry, or failed the gate: no pods, no traffic
        failed_gate = (Event("Warning", Reason.QUALITY_GATE_FAILED, gate["message"], about=active.body),) if (
            gate != read_status and gate.get("phase") == Phase.FAILED) else ()
        return dataclasses.replace(base, actions=(*base.actions, *((WriteStatus(active.body, gate),) if gate != read_status else ())),
                                   events=(*base.events, *failed_gate))
    kept = _without_steps(pass_, base.previous, active, rollout_status, target.stable_id)
    if kept is not None:  # no step to take: the rollout's status is only brought up to date
        write, carried = kept
        return dataclasses.replace(base, active=active if carried else None,
                                   actions=(*base.actions, *((write,) if write is not None else ())))
    deployments, revision = pass_.observed.deployments, active.revision
    decision = decide(active.plan, rollout_status, RolloutObserved(
        stable_revision=target.stable_id, target_revision=revision.id, stable_replicas=max(size.want, size.floor or 0, 1),
        canary_ready=_ready(deployments.get(revision.id)), generation=active.body["metadata"].get("generation"),
        full_replicas=size.full, previous_revision=base.previous if base.previous in deployments else None,
        previous_ready=_ready(deployments.get(base.previous or "")),
        canary_serving=_int(((deployments.get(revision.id) or {}).get("status") or {}).get("readyReplicas")),
        scales_to_zero=pass_.spec.autoscaling is not None and pass_.spec.autoscaling.min_replicas == 0),
        run, pass_.now_dt, guard)
    return _decided(pass_, base, active, read_status, decision)


def _decided(pass_: _Pass, base: _Serving, active: p.Active, read_status: Mapping[str, Any], decision: Decision) -> _Serving:
    """What serves after ``decision`` (the active rollout's step; ``read_status``: its status as read): promoted (the
    previous stable kept for the scale-down delay and the bake), rolled back after a failed bake, baking, ended (the
    canary drains), or carrying a canary at the decision's weights."""
    revision, stable_id = active.revision, base.stable_id
    stepped = dataclasses.replace(
        base, active=active,
        actions=(*base.actions, *((WriteStatus(active.body, decision.status),) if decision.status != read_status else ())),
        events=(*base.events, *(dataclasses.replace(e, about=active.body) for e in decision.events)),
        requeue=(decision.requeue_after,) if decision.requeue_after is not None else ())
    if decision.promote:
        promoted = Event("Normal", Reason.REVISION_PROMOTED, f"revision {revision.id} replaces {stable_id} as stable")
        keep = active.plan.scale_down_delay_seconds + (active.plan.bake_seconds if baking(decision.status) else 0.0)
        return dataclasses.replace(stepped, stable_id=revision.id, promoted_replicas=decision.canary_replicas, previous=stable_id,
                                   previous_at=rfc3339(pass_.now_dt + datetime.timedelta(seconds=keep)),
                                   events=(*stepped.events, promoted))
    if decision.rollback and base.previous:  # a failed bake: the previous revision is stable again, routes first
        return _rolled_back(pass_, stepped, active, base.previous, decision.status.get("message", ""))
    if revision.id == stable_id:  # baking, or the bake just ended: it serves as stable, with no canary
        return stepped
    if decision.status.get("phase") in TERMINAL:
        return dataclasses.replace(stepped, drain={**stepped.drain, revision.id: active.plan.abort_scale_down_delay_seconds})
    if base.previous == revision.id:  # the spec went back to the previous revision: it is the canary now
        stepped = dataclasses.replace(stepped, previous=None, previous_at=None)
    routes = b.Routes(100 - decision.traffic.canary_weight, decision.traffic.canary_weight, decision.traffic.mirror_percent)
    return dataclasses.replace(stepped, canary=revision, canary_spec=active.spec, canary_replicas=decision.canary_replicas,
                               routes=routes, preview=decision.traffic.preview)


def _without_steps(pass_: _Pass, previous: str | None, active: p.Active, rollout_status: dict[str, Any],
                   stable_id: str) -> tuple[WriteStatus | None, bool] | None:
    """The active rollout's status when it has no step to take, as (the write, or None; whether it stays the active
    rollout of the pass), else None (:func:`~llm_operator._rollout.decide` steps it):

    - it says it bakes a revision that is not stable: stale (its rollback, or another rollout's switch, was recorded
      on the LLMDeployment but not on it): Aborted;
    - its revision is stable but it does not bake although it should: its switch was recorded on the LLMDeployment
      only (the evidence: ``status.rollout`` names it, and the previous revision is the one it came from): its
      bake starts now;
    - its revision is stable already: Succeeded (a pending retry consumed)."""
    revision, name = active.revision.id, active.body["metadata"]["name"]
    if baking(rollout_status) and revision != stable_id:
        return WriteStatus(active.body, bake_lost(rollout_status, stable_id, pass_.now_dt)), False
    if revision != stable_id or baking(rollout_status):
        return None
    terminal = rollout_status.get("phase") in TERMINAL
    if (not terminal and active.plan.bake_seconds > 0 and previous and rollout_status.get("fromRevision") == previous
            and previous in pass_.observed.deployments and pass_.old_status.get("rollout") == name):
        return WriteStatus(active.body, bake_recovered(active.plan, rollout_status, previous, pass_.now_dt)), True
    if terminal and active.plan.retry > (rollout_status.get("observedRetry") or 0):
        return WriteStatus(active.body, {**rollout_status, "observedRetry": active.plan.retry,  # consumed, or the retry
                                         "message": f"{revision} is already stable: nothing to retry"}), True  # would pend forever
    if not terminal:
        return WriteStatus(active.body, {**rollout_status, "phase": Phase.SUCCEEDED, "toRevision": revision, "fromRevision": stable_id,
                                         "finishedAt": pass_.now, "message": f"{revision} is already stable"}), True
    return None, True


def _rolled_back(pass_: _Pass, stepped: _Serving, active: p.Active, previous: str, why: str) -> _Serving:
    """A failed bake: ``previous`` is stable again in this pass (routes first), the baked revision drains as after an
    abort, and under an autoscaler the previous revision comes back at the size the new one grew to (without one,
    :func:`_order` scales it to the spec's size, as any stable revision the spec no longer describes; either way
    before the routes, after ``warmReplicas`` kept fewer)."""
    revision = active.revision.id
    drain = {**stepped.drain, revision: active.plan.abort_scale_down_delay_seconds}
    grown = _replicas(pass_.observed.deployments.get(revision))
    scale: tuple[Action, ...] = ()
    if pass_.spec.autoscaling is not None and grown > _replicas(pass_.observed.deployments.get(previous)):
        scale = (Scale(c.revision_deployment_name(pass_.name, previous), grown),)
    back = Event("Warning", Reason.REVISION_ROLLED_BACK, f"revision {revision} rolled back to {previous}: {why}")
    return dataclasses.replace(stepped, stable_id=previous, previous=None, previous_at=None, drain=drain,
                               actions=(*stepped.actions, *scale), events=(*stepped.events, back))


def _fail_invalid(pass_: _Pass, invalid: list[tuple[Mapping[str, Any], InvalidSpec]]) -> list[WriteStatus]:
    """``Failed`` with ``Degraded=True``/``InvalidSpec`` on each invalid rollout whose status does not say so yet."""
    writes = []
    for rollout, error in invalid:
        status = dict(rollout.get("status") or {})
        if status.get("phase") != Phase.FAILED or status.get("message") != str(error):
            status.update(phase=Phase.FAILED, message=str(error))
            status["conditions"] = cond.set_condition(status.get("conditions", []), cond.DEGRADED, "True", Reason.INVALID_SPEC,
                                                      str(error), now=pass_.now, generation=rollout["metadata"].get("generation"))
            writes.append(WriteStatus(rollout, status))
    return writes


def _outcomes(pass_: _Pass) -> tuple[RecordOutcome, ...]:
    """The outcomes of finished rollouts still to write to the registry, from the rollouts as read (an outcome is
    written only once the API holds it), and only while the registry answers."""
    ref, registry = pass_.spec.model.mlflow, pass_.registry
    if registry is None or registry.problem is not None:
        return ()
    rollouts, revisions = pass_.observed.rollouts, pass_.old_status.get("revisions") or []
    return tuple(RecordOutcome(finished, *pending) for finished in rollouts
                 if (pending := p.pending_outcome(ref, finished, rollouts, revisions)) is not None)


@dataclass(frozen=True)
class _Retained:
    """Revisions whose pods stay although they serve no traffic: the draining entries of ``status.draining``, the
    set of revision ids not to delete, the previous revision while its scale-down time has not come (else None),
    and the Events and requeue delays (seconds) that follow from them."""

    draining: tuple[dict[str, Any], ...]
    keep: frozenset[str]
    previous: str | None
    previous_at: str | None
    events: tuple[Event, ...] = ()
    requeue: tuple[float, ...] = ()


def _retain(pass_: _Pass, serving: _Serving) -> _Retained:
    """Phase 5: what is kept. A canary whose LLMRollout was deleted in flight drains as after an abort; the stable
    revision the status records survives until a pass has recorded the switch away from it; the previous revision
    stays until ``previousScaleDownAt``."""
    old_status, now_dt = pass_.old_status, pass_.now_dt
    drain = dict(serving.drain)
    draining = _draining(old_status, pass_.observed, serving.stable_id, serving.canary_id, drain,
                         pass_.spec.rollout.abort_scale_down_delay_seconds, now_dt)
    for item in draining:
        drain[item["revision"]] = (parse_rfc3339(item["scaleDownAt"]) - now_dt).total_seconds()
    events = []
    if old_status.get("canaryRevision") in {item["revision"] for item in draining} - {d["revision"] for d in old_status.get("draining", [])}:
        events.append(Event("Warning", Reason.ROLLOUT_DELETED,
                            f"LLMRollout {old_status.get('rollout')} was deleted in flight: all traffic on {serving.stable_id}; "
                            f"revision {old_status['canaryRevision']}'s pods go at {draining[-1]['scaleDownAt']}"))
    keep = {serving.stable_id, serving.canary_id, old_status.get("stableRevision")} | {rev for rev, left in drain.items() if left > 0}
    requeue = [left for left in drain.values() if left > 0]
    previous, previous_at = serving.previous, serving.previous_at
    if previous and previous_at and now_dt < parse_rfc3339(previous_at):
        keep.add(previous)
        requeue.append((parse_rfc3339(previous_at) - now_dt).total_seconds())
    else:
        previous = previous_at = None
    return _Retained(tuple(draining), frozenset(k for k in keep if k), previous, previous_at, tuple(events), tuple(requeue))


@dataclass(frozen=True)
class _Desired:
    """The children this pass wants (with their applied-hash annotation) and the optional kinds to delete."""

    objects: tuple[dict[str, Any], ...]
    delete_kinds: tuple[tuple[str, str], ...]
    #: Another router's objects, live but no longer wanted (a change of ``spec.traffic.router``, endpoint pickers
    #: removed), in the order they are deleted: the route first, then what it routed through; empty while the spec's
    #: route does not carry the traffic yet (``waiting`` says why).
    delete_objects: tuple[tuple[str, str, str], ...] = ()
    #: Why the stale routing objects are kept in this pass (None: none are, or they go).
    waiting: str | None = None
    #: The router whose objects route the traffic when this pass is done (``status.router``).
    router: str = "istio"


def _desired(pass_: _Pass, target: _Target, serving: _Serving, size: _Size, autoscaler_kinds: frozenset[str]) -> _Desired:
    """Phase 6: the desired children: the stable revision's Deployment while the spec (or the rollout promoted in this
    pass) describes it, the canary's, the routing, the autoscaler (its minimum held at the floor while a canary runs)
    and the PodDisruptionBudget."""
    name, namespace, spec = pass_.name, pass_.namespace, pass_.spec
    objects: list[dict[str, Any]] = []
    active, stable_id = serving.active, serving.stable_id
    if stable_id == target.revision.id:
        objects.append(b.build_deployment(name, namespace, spec, target.revision, serving.promoted_replicas))
    elif active is not None and stable_id == active.revision.id:  # promoted in this pass
        objects.append(b.build_deployment(name, namespace, active.spec, active.revision, serving.promoted_replicas))
    if serving.canary is not None:
        objects.append(b.build_deployment(name, namespace, serving.canary_spec or spec, serving.canary, serving.canary_replicas))
    routes = serving.routes if serving.canary is not None else b.Routes()  # no canary Deployment: only stable carries traffic
    revisions = {c.SUBSET_STABLE: stable_id, c.SUBSET_CANARY: serving.canary_id or stable_id}
    objects += [b.build_service(name, namespace, spec, role, revisions[role]) for role in b.ROLES]
    objects += pass_.router.build(name, namespace, spec, stable_id, serving.canary_id, routes,
                                  spec.rollout.preview_header if serving.preview else None)
    stable_deployment = c.revision_deployment_name(name, stable_id)
    scaling, floor = spec.autoscaling, size.floor if serving.canary is not None else None
    delete_kinds: list[tuple[str, str]] = []
    if scaling is not None and scaling.provider == "keda" and "ScaledObject" in autoscaler_kinds:
        objects.append(_held(b.build_scaled_object(name, namespace, spec, stable_deployment, stable_id), "minReplicaCount", floor))
        delete_kinds.append(("autoscaling/v2", "HorizontalPodAutoscaler"))
    elif scaling is not None:
        objects.append(_held(b.build_hpa(name, namespace, spec, stable_deployment), "minReplicas", floor))
        delete_kinds.append(("keda.sh/v1alpha1", "ScaledObject"))
    else:
        delete_kinds += [("autoscaling/v2", "HorizontalPodAutoscaler"), ("keda.sh/v1alpha1", "ScaledObject")]
    if spec.disruption_budget.enabled:
        objects.append(b.build_pdb(name, namespace, spec))
    else:
        delete_kinds.append(("policy/v1", "PodDisruptionBudget"))
    security = b.build_auth(name, namespace, spec)
    objects += security
    delete_kinds += [kind for kind in b.SECURITY_KINDS_DELETE_ORDER if kind[1] not in {o["kind"] for o in security}]
    hashed = tuple(with_applied_hash(obj) for obj in objects)
    wanted = {(o["kind"], o["metadata"]["name"]) for o in objects}
    stale = [(api_version, kind, n) for router in ROUTERS.values() for api_version, kind, n in router.children(name)
             if (kind, n) not in wanted and pass_.observed.children.get((kind, n)) is not None]
    stale.sort(key=lambda ref: -ROUTING_ORDER.get(ref[1], 0))
    waiting = _route_not_carrying(pass_, hashed) if stale else None
    recorded = pass_.old_status.get("router") or pass_.router.name
    switching = waiting is not None and any(kind in ("VirtualService", "HTTPRoute") for _, kind, _ in stale)
    if switching and recorded != pass_.router.name:
        # The recorded router's route still carries the traffic: it keeps getting this pass's weights, mirror and
        # preview until the spec's carries it (an HTTPRoute with no gatewayAPI left in the spec cannot be built: it stays).
        old_router = router_for(recorded)
        if old_router.name == "istio" or spec.traffic.gateway_api is not None:
            hashed += tuple(with_applied_hash(obj) for obj in old_router.build(
                name, namespace, spec, stable_id, serving.canary_id, routes, spec.rollout.preview_header if serving.preview else None))
    return _Desired(hashed, tuple(delete_kinds), () if waiting else tuple(stale), waiting, recorded if switching else pass_.router.name)


def _route_not_carrying(pass_: _Pass, desired: tuple[dict[str, Any], ...]) -> str | None:
    """Why the spec's router does not carry the traffic yet, so the routing objects it replaces must stay (None: it
    does). Its objects (in ``desired``) must be live as this pass wants them (applied by an earlier pass: an apply in
    this one has not reached any proxy yet), and an HTTPRoute accepted by every parent that reports on it, for its current generation
    (``Accepted`` and ``ResolvedRefs`` True in ``status.parents``: the Gateway API's own word that it routes by it)."""
    routing = {(kind, n) for _, kind, n in pass_.router.children(pass_.name)}
    for obj in desired:
        if (obj["kind"], obj["metadata"]["name"]) not in routing:
            continue
        live = pass_.observed.children.get((obj["kind"], obj["metadata"]["name"]))
        if needs_apply(obj, live, pass_.uid):
            return f"{obj['kind']} {obj['metadata']['name']} is being applied"
        if obj["kind"] == "HTTPRoute":
            generation = (live or {}).get("metadata", {}).get("generation")
            parents = ((live or {}).get("status") or {}).get("parents") or []
            accepted = [p for p in parents if all(any(
                x.get("type") == kind and x.get("status") == "True" and x.get("observedGeneration", generation) == generation
                for x in p.get("conditions") or []) for kind in ("Accepted", "ResolvedRefs"))]
            if not parents or len(accepted) < len(parents):
                return (f"HTTPRoute {obj['metadata']['name']} is not accepted yet by its parents "
                        f"({len(accepted)} of {len(parents)} report Accepted and ResolvedRefs for generation {generation})")
    return None


@dataclass(frozen=True)
class _Ordered:
    """Every action of the pass in the order it is safe to carry out, and the requeue delays (seconds) it asks for."""

    actions: tuple[Action, ...]
    requeue: tuple[float, ...] = ()
    #: The router whose objects route the traffic once these actions are done (``status.router``; None: the spec's).
    router: str | None = None
    events: tuple[Event, ...] = ()
    #: Why the other router's objects stay (see :class:`_Desired`).
    waiting: str | None = None


#: Seconds between passes while the routing objects of another router wait for the spec's route to carry the
#: traffic (a Gateway's acceptance is not watched).
ROUTE_WAIT_SECONDS = 5.0

#: Routing objects are applied in this order: a Service before the DestinationRule over it (or the InferencePool
#: beside it), both before the VirtualService (or HTTPRoute) that routes to them; the security policies after, a
#: token's verification before the policy that asks for one (:data:`~llm_operator._builders.SECURITY_KINDS`); the
#: rest last.
ROUTING_ORDER = {"Service": 0, "DestinationRule": 1, "InferencePool": 1, "VirtualService": 2, "HTTPRoute": 2,
                 **{kind: 3 + i for i, (_, kind) in enumerate(b.SECURITY_KINDS)}}


def _order(pass_: _Pass, serving: _Serving, retained: _Retained, size: _Size, desired: _Desired,
           planned: tuple[Action, ...], spec_revision: str) -> _Ordered:
    """Phase 7: the ordered actions. Order is safety: pods up before traffic moves to them (DestinationRule before
    VirtualService), traffic away before pods go down, deletions last, and nothing traffic still flows to changes
    under it (:func:`make_before_break`). A rollout's status is written after the routes it records (and, by the
    executor, after this LLMDeployment's status); the creates and registry outcomes of ``planned`` go first.
    Finished LLMRollouts beyond ``spec.rollout.historyLimit`` are deleted with the rest
    (:func:`~llm_operator._progressive.pruned`; ``spec_revision`` is the revision the spec names)."""
    observed, uid = pass_.observed, pass_.uid
    grow: list[Apply] = []
    routing: list[Apply] = []
    shrink: list[Apply] = []
    for obj in desired.objects:
        if obj["kind"] == "Deployment":
            live = observed.deployments.get(obj["metadata"]["labels"][c.LABEL_REVISION])
            if needs_apply(obj, live, uid):
                (shrink if live and obj["spec"]["replicas"] < _replicas(live) else grow).append(Apply(obj, created=live is None))
        else:
            live = observed.children.get((obj["kind"], obj["metadata"]["name"]))
            if needs_apply(obj, live, uid):
                routing.append(Apply(obj, created=live is None))
    routing.sort(key=lambda a: ROUTING_ORDER.get(a.obj["kind"], len(ROUTING_ORDER)))
    routing, deferred = make_before_break(routing, observed, pass_.name, pass_.router)
    # A stable revision the spec no longer describes keeps its pod template: only its size follows, through a
    # plain scale (an apply of just the replicas would drop every other field the operator's manager owns).
    stable_id = serving.stable_id
    stable_deployment = c.revision_deployment_name(pass_.name, stable_id)
    built = {o["metadata"]["name"] for o in desired.objects}
    live_size = _replicas(observed.deployments.get(stable_id))
    scale = (Scale(stable_deployment, size.want) if stable_id in observed.deployments and stable_deployment not in built
             and pass_.spec.autoscaling is None and live_size != size.want else None)
    up, down = ([scale], []) if scale and scale.replicas > live_size else ([], [scale] if scale else [])
    down += _warm(pass_, serving)
    deletes = [Delete(api_version, kind, pass_.name) for api_version, kind in desired.delete_kinds
               if observed.children.get((kind, pass_.name)) is not None]
    deletes += [Delete(api_version, kind, n) for api_version, kind, n in desired.delete_objects]
    deletes += [Delete("apps/v1", "Deployment", dep["metadata"]["name"]) for revision, dep in sorted(observed.deployments.items())
                if revision not in retained.keep]
    if pass_.names_revision:  # not while the registry cannot say which revision the spec names (nothing is pruned blind)
        protected = {spec_revision, pass_.old_status.get("specRevision"), *(d["revision"] for d in retained.draining), *serving.drain}
        deletes += [Delete(API_VERSION, "LLMRollout", r["metadata"]["name"]) for r in p.pruned(
            list(observed.rollouts), pass_.spec.rollout.history_limit, {x for x in protected if x}, pass_.spec.model.mlflow,
            current=spec_revision)]
    first = [a for a in planned if not isinstance(a, WriteStatus)]
    status_writes = [a for a in planned if isinstance(a, WriteStatus)]
    actions = (*first, *grow, *up, *routing, *shrink, *down, *deletes, *status_writes)
    requeue = ((1.0,) if deferred else ()) + ((ROUTE_WAIT_SECONDS,) if desired.waiting else ())
    # A deferred change follows once the routes it waited for landed; TrafficRouted says why the old router waits.
    return _Ordered(actions, requeue, desired.router, (), desired.waiting)


def _warm(pass_: _Pass, serving: _Serving) -> list[Scale]:
    """The previous revision kept to roll back to during the active rollout's bake, scaled down to
    ``spec.rollout.warmReplicas`` when it has more, once ``abortScaleDownDelaySeconds`` have passed since the switch
    (the routes left it then; the proxies converge and long generations on its pods finish meanwhile)."""
    warm, active = pass_.spec.rollout.warm_replicas, serving.active
    bake = ((active.body.get("status") or {}).get("bake") or {}) if active is not None else {}
    previous, started = bake.get("previousRevision"), bake.get("startedAt")
    if warm is None or not previous or not started or previous != serving.previous or previous == serving.stable_id:
        return []
    if active is None or (pass_.now_dt - parse_rfc3339(started)).total_seconds() < active.plan.abort_scale_down_delay_seconds:
        return []
    if _replicas(pass_.observed.deployments.get(previous)) <= warm:
        return []
    return [Scale(c.revision_deployment_name(pass_.name, previous), warm)]


def _status(pass_: _Pass, target: _Target, started: _Started, size: _Size, serving: _Serving, retained: _Retained,
            ordered: _Ordered) -> dict[str, Any]:
    """Phase 8: the status and its conditions, computed whole (the executor writes the difference once)."""
    name, observed = pass_.name, pass_.observed
    stable_id, canary, active = serving.stable_id, serving.canary, serving.active
    revisions = []
    roles = {stable_id: "stable", **({canary.id: "canary"} if canary else {}),
             **({retained.previous: "previous"} if retained.previous else {})}
    for revision, role in sorted(roles.items(), key=lambda kv: ("stable", "canary", "previous").index(kv[1])):
        live = observed.deployments.get(revision)
        uri = (live or {}).get("metadata", {}).get("annotations", {}).get("llmops.dev/model-uri")
        if uri is None:
            uri = canary.model.uri if canary and revision == canary.id else (
                active.revision.model.uri if active and revision == active.revision.id else target.model.uri)
        pinned = uri.removeprefix("models:/").rpartition("/")[2] if uri.startswith("models:/") else ""
        revisions.append({"revision": revision, "deployment": c.revision_deployment_name(name, revision), "role": role,
                          "modelUri": uri, **({"modelVersion": pinned} if pinned.isdigit() else {}),
                          "replicas": _int((live or {}).get("status", {}).get("replicas")), "readyReplicas": _ready(live)})
    stable_live = observed.deployments.get(stable_id)
    serving_model = _serving_model(pass_, target, serving, stable_live)
    model_wire, unstorable = as_stored(serving_model.to_wire()) if serving_model else (None, [])
    conditions = _conditions(pass_, target, started, size, serving, ordered, _ready(stable_live), unstorable)
    status: dict[str, Any] = {
        "observedGeneration": pass_.generation,
        "conditions": conditions,
        "model": model_wire,
        "stableRevision": stable_id,
        "canaryRevision": canary.id if canary else None,
        "specRevision": started.spec_revision,
        "previousRevision": retained.previous,
        "previousScaleDownAt": retained.previous_at,
        "rollout": active.body["metadata"]["name"] if active and (canary or baking(_this_pass(active.body, ordered.actions)))
        else None,
        "revisions": revisions,
        "draining": list(retained.draining) or None,
        "replicas": _int((stable_live or {}).get("status", {}).get("replicas")),
        "readyReplicas": _ready(stable_live),
        "endpoint": b.endpoint(name, pass_.namespace, pass_.spec),
        "router": ordered.router or pass_.spec.traffic.router,
        "adapters": _served_adapters(serving, target, pass_) or None,
        "adapterCount": len(_served_adapters(serving, target, pass_)) or None,
    }
    return {k: v for k, v in status.items() if v is not None}


def _served_adapters(serving: _Serving, target: _Target, pass_: _Pass) -> list[dict[str, Any]]:
    """``status.adapters``: the LoRA adapters of the stable revision (the spec's when it serves the spec's revision,
    the promoted rollout's after a promotion, else the ones recorded before)."""
    active = serving.active
    if serving.stable_id == target.revision.id:
        adapters = target.revision.adapters
    elif active is not None and serving.stable_id == active.revision.id:
        adapters = active.revision.adapters
    else:
        return list(pass_.old_status.get("adapters") or [])
    return [{k: v for k, v in {"name": a.name, "uri": b.adapter_uri(a), "model": a.mlflow.name if a.mlflow else None,
                               "version": a.mlflow.version if a.mlflow else None, "alias": a.mlflow.alias if a.mlflow else None,
                               "stage": a.mlflow.stage if a.mlflow else None, "baseModel": a.base_model}.items() if v is not None}
            for a in adapters]


def _serving_model(pass_: _Pass, target: _Target, serving: _Serving, stable_live: Mapping[str, Any] | None) -> ResolvedModel | None:
    """The model the stable revision serves: the promoted rollout's, the spec's, or the one recorded before; with
    its run from the registry when the record lacks it."""
    active, stable_id = serving.active, serving.stable_id
    model = (active.revision.model if active and stable_id == active.revision.id
             else target.model if stable_id == target.revision.id else _model_of(pass_.old_status, stable_live))
    ref, registry = pass_.spec.model.mlflow, pass_.registry
    if (model is not None and model.version is not None and ref is not None and registry is not None
            and model.version in registry.versions and model.run_id is None):
        model = reg.resolved_model(ref, registry.versions[model.version])
    return model


def _conditions(pass_: _Pass, target: _Target, started: _Started, size: _Size, serving: _Serving, ordered: _Ordered,
                ready: int, unstorable: list[str]) -> list[dict[str, Any]]:
    """``Ready``, ``Progressing``, ``ModelResolved`` and ``Degraded``, from what this pass decided."""
    now, generation, observed = pass_.now, pass_.generation, pass_.observed
    stable_id, canary, want = serving.stable_id, serving.canary, size.want
    conditions = pass_.old_status.get("conditions", [])

    def setc(conditions: list[dict[str, Any]], type_: str, status: cond.Status, reason: str, message: str) -> list[dict[str, Any]]:
        return cond.set_condition(conditions, type_, status, reason, message, now=now, generation=generation)

    pending, behind = _spec_not_served(target.revision.id, stable_id, serving.canary_id, list(started.rollouts),
                                       list(ordered.actions), pass_.old_status) if pass_.names_revision else (None, None)
    if want == 0 and canary is None:
        conditions = setc(conditions, cond.READY, "True", Reason.SCALED_TO_ZERO, "scaled to zero replicas")
    elif ready >= 1:
        conditions = setc(conditions, cond.READY, "True", Reason.AVAILABLE, f"{ready}/{want} replicas of revision {stable_id} ready")
    else:
        conditions = setc(conditions, cond.READY, "False", Reason.REPLICAS_NOT_READY,
                          f"0/{want} replicas of revision {stable_id} ready (the model may still be loading)")
    if canary is not None:
        held = f"; stable kept at >= {size.floor} replicas" if size.floor else ""
        rollout = serving.active.body["metadata"]["name"] if serving.active else None
        conditions = setc(conditions, cond.PROGRESSING, "True", Reason.ROLLOUT_IN_PROGRESS,
                          f"LLMRollout {rollout}: {serving.routes.canary_weight}% to revision {canary.id}, "
                          f"{_ready(observed.deployments.get(canary.id))}/{serving.canary_replicas} pods ready{held}")
    elif serving.active is not None and baking(active_status := _this_pass(serving.active.body, ordered.actions)) \
            and stable_id == serving.active.revision.id:
        bake = active_status.get("bake") or {}
        conditions = setc(conditions, cond.PROGRESSING, "True", Reason.BAKING,
                          f"LLMRollout {serving.active.body['metadata']['name']}: revision {stable_id} serves all traffic, baking "
                          f"until {bake.get('endsAt')}; revision {bake.get('previousRevision')} is kept to roll back to")
    elif pending is not None:
        conditions = setc(conditions, cond.PROGRESSING, "True", Reason.ROLLOUT_PENDING, pending)
    elif behind is not None:
        conditions = setc(conditions, cond.PROGRESSING, "False", *behind)
    elif ready < want:
        conditions = setc(conditions, cond.PROGRESSING, "True", Reason.SCALING_UP, f"{ready}/{want} replicas of revision {stable_id} ready")
    else:
        conditions = setc(conditions, cond.PROGRESSING, "False", Reason.REVISION_AVAILABLE, f"revision {stable_id} serves all traffic")
    if ordered.waiting is not None and ordered.router != pass_.spec.traffic.router:
        conditions = setc(conditions, cond.TRAFFIC_ROUTED, "False", Reason.ROUTE_NOT_ACCEPTED,
                          f"spec.traffic.router is {pass_.spec.traffic.router}, but the {ordered.router} router's objects still "
                          f"carry the traffic: {ordered.waiting}")
    else:
        conditions = [c for c in conditions if c.get("type") != cond.TRAFFIC_ROUTED]
    conditions = _model_condition(conditions, pass_.spec, pass_.registry, target.model, now, generation,
                                  note=f"; left out of status.model, as JSON has no NaN or infinity: {', '.join(unstorable)}"
                                  if unstorable else "")
    stuck = [(dep["metadata"]["name"], msg) for dep in observed.deployments.values() if (msg := _deadline_exceeded(dep))]
    if stuck:
        return setc(conditions, cond.DEGRADED, "True", Reason.PROGRESS_DEADLINE_EXCEEDED, "; ".join(f"{n}: {m}" for n, m in stuck))
    if behind is not None:  # stable serves, but not the model the spec names: not Healthy in Argo CD
        return setc(conditions, cond.DEGRADED, "True", *behind)
    return setc(conditions, cond.DEGRADED, "False", Reason.AS_EXPECTED, "")


def _this_pass(rollout: Mapping[str, Any], actions: tuple[Action, ...]) -> dict[str, Any]:
    """``rollout``'s status as this pass writes it (as read when the pass writes none)."""
    written = [a.status for a in actions if isinstance(a, WriteStatus) and a.body is rollout]
    return dict(written[-1] if written else rollout.get("status") or {})


def _action_events(actions: tuple[Action, ...]) -> tuple[Event, ...]:
    """Phase 9a: the children created, updated, scaled or deleted, one Normal Event per verb and pass ("Created
    Deployment x, Service y, ..."), at most 1,000 characters (events.k8s.io's limit for a note). One Event per child
    made Events 56% of the operator's writes at 1,000 LLMDeployments (issue 15's baseline)."""
    done: dict[str, list[str]] = {}
    for action in actions:
        if isinstance(action, Apply):
            verb = Reason.CREATED if action.created else Reason.UPDATED
            done.setdefault(verb, []).append(f"{action.obj['kind']} {action.obj['metadata']['name']}")
        elif isinstance(action, Delete):
            done.setdefault(Reason.DELETED, []).append(f"{action.kind} {action.name}")
        elif isinstance(action, Scale):
            done.setdefault(Reason.SCALED, []).append(f"Deployment {action.name} to {action.replicas}")
    return tuple(Event("Normal", verb, _clip(f"{verb} " + ", ".join(what), 1000)) for verb, what in done.items())


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _condition_events(old: list[dict[str, Any]], new: list[dict[str, Any]]) -> tuple[Event, ...]:
    """Phase 9b: one Event per condition whose status or reason changed (Warning for ``Degraded=True``)."""
    events = []
    for changed in cond.transitions(old, new):
        warning = changed["type"] == cond.DEGRADED and changed["status"] == "True"
        text = f"{changed['type']}={changed['status']}" + (f": {changed['message']}" if changed["message"] else "")
        events.append(Event("Warning" if warning else "Normal", changed["reason"], text))
    return tuple(events)


def make_before_break(routing: list[Apply], observed: Observed, name: str, router: Router = ISTIO) -> tuple[list[Apply], bool]:
    """Hold back the routing changes that would pull endpoints from under traffic that still flows to them, as
    Istio's make-before-break rule asks (update the VirtualService, let it propagate, then what it stopped using).
    Returns the applies for this pass and whether any was held for a later one.

    - The canary Service (and the canary InferencePool) is not re-pointed to another revision while the live
      VirtualService or HTTPRoute (``router``'s) still sends it weight or mirrored traffic (a newer rollout taking
      over mid-canary): this pass moves the weight, the next re-points.
    - A DestinationRule is not stripped of the ``stable``/``canary`` subsets while the live VirtualService still
      routes to them (the first pass after upgrading from the release that split by subsets).
    """
    live_vs = observed.children.get(("VirtualService", name))
    # Any router's live route: the one the spec names, and the one it replaces while both are live.
    live_routes = [r for r in (router.live_routes(observed.children, name), *(
        other.live_routes(observed.children, name) for other in ROUTERS.values() if other is not router)) if r]
    canary_flowing = any(r.canary_weight > 0 or r.mirror_percent > 0 for r in live_routes)
    subsets_in_use = any(r.get("destination", {}).get("subset") for http in (live_vs or {}).get("spec", {}).get("http", [])
                         for r in http.get("route", []) + ([http["mirror"]] if http.get("mirror") else []))
    canary_service = b.service_name(name, c.SUBSET_CANARY)
    kept, held = [], False
    for action in routing:
        obj = action.obj
        live = observed.children.get((obj["kind"], obj["metadata"]["name"]))
        if (obj["kind"] in ("Service", "InferencePool") and obj["metadata"]["name"] == canary_service and live is not None
                and canary_flowing and _selected(live) != _selected(obj)):
            held = True
            continue
        if obj["kind"] == "DestinationRule" and subsets_in_use and (live or {}).get("spec", {}).get("subsets"):
            held = True
            continue
        kept.append(action)
    return kept, held



def _selected(obj: Mapping[str, Any]) -> str | None:
    """The revision a Service or an InferencePool selects."""
    selector = obj.get("spec", {}).get("selector") or {}
    return (selector.get("matchLabels", selector) if obj.get("kind") == "InferencePool" else selector).get(c.LABEL_REVISION)


def _registry_model(spec: LLMDeploymentSpec, old_status: Mapping[str, Any], registry: reg.Resolution | None) -> ResolvedModel | None:
    """The model the spec names now: the registry's answer; when the registry could not answer, the version
    last resolved for the same reference (the stable revision keeps serving); None when there is none."""
    ref = spec.model.mlflow
    if ref is None or registry is None:
        return b.static_model(spec)
    if registry.model is not None:
        return registry.model
    if ref.version is not None:
        return b.static_model(spec)  # a pinned version needs no look-up to be served
    last = old_status.get("model") or {}
    if last.get("name") == ref.name and last.get("alias") == ref.alias and last.get("stage") == ref.stage and last.get("version"):
        return ResolvedModel.model_validate(last)
    return None


def _autoscaler_minimum(observed: Observed, name: str) -> int | None:
    """The live autoscaler's minimum (HPA ``minReplicas``, ScaledObject ``minReplicaCount``): the floor an earlier
    pass of the rollout set, or the spec's minimum; None without one."""
    for kind, key in (("HorizontalPodAutoscaler", "minReplicas"), ("ScaledObject", "minReplicaCount")):
        value = ((observed.children.get((kind, name)) or {}).get("spec") or {}).get(key)
        if value is not None:
            return int(value)
    return None


def _held(autoscaler: dict[str, Any], key: str, floor: int | None) -> dict[str, Any]:
    """``autoscaler`` with its minimum raised to ``floor`` (while a canary runs), else as built."""
    if floor is not None:
        autoscaler["spec"][key] = max(autoscaler["spec"][key], floor)
    return autoscaler


def _draining(old_status: Mapping[str, Any], observed: Observed, stable_id: str, canary_id: str | None,
              drain: Mapping[str, float], delay: float, now: datetime.datetime) -> list[dict[str, Any]]:
    """Revisions kept after their LLMRollout was deleted in flight, as for an abort: the routes go back to stable in
    the pass that sees the rollout gone, the pods stay ``delay`` seconds (``abortScaleDownDelaySeconds``: the rollout
    that said otherwise is gone) while the proxies converge, and then go (Argo Rollouts keeps such a deadline as the
    ``scale-down-deadline`` annotation of the ReplicaSet; here it is ``status.draining``).

    The canary the last pass recorded (``status.canaryRevision``) is orphaned when its Deployment is still there and
    nothing carries it any more: not stable, not the active rollout's canary, not draining after an abort. Returns
    the entries still to wait for (``{"revision", "scaleDownAt"}``, RFC 3339), the new one included."""
    items = [dict(d) for d in old_status.get("draining", []) if d.get("revision") in observed.deployments]
    orphan = old_status.get("canaryRevision")
    carried = {stable_id, canary_id, *drain, *(d["revision"] for d in items)}
    if orphan and orphan in observed.deployments and orphan not in carried:
        items.append({"revision": orphan, "scaleDownAt": rfc3339(now + datetime.timedelta(seconds=delay))})
    return [d for d in items if parse_rfc3339(d["scaleDownAt"]) > now and d["revision"] not in (stable_id, canary_id)]


def _spec_not_served(spec_id: str, stable_id: str, canary_id: str | None, rollouts: list[Mapping[str, Any]],
                     actions: list[Any], old_status: Mapping[str, Any]) -> tuple[str | None, tuple[str, str] | None]:
    """When the spec's revision is neither stable nor the canary: (a message when a rollout to it is about to start
    or waits for its quality gate, None), else (None, (reason, message)) when the last rollout to it ended without
    promotion: reason ``RolloutAborted`` or ``RolloutFailed`` (after Argo Rollouts' ``RolloutAborted``),
    ``RolloutDeleted`` when it was deleted in flight, or ``RolledBack`` when a later rollout brought an earlier
    revision back, the message naming the revision that serves. (None, None)
    when the spec's revision serves or no rollout was made for it."""
    if spec_id in (stable_id, canary_id):
        return None, None
    after = {a.body["metadata"]["name"]: a.status for a in actions if isinstance(a, WriteStatus)}  # this pass's word
    created = [a.obj["metadata"]["name"] for a in actions if isinstance(a, Create)]
    if created:
        return f"LLMRollout {created[0]} created for revision {spec_id}; revision {stable_id} serves meanwhile", None
    toward = [(r, after.get(r["metadata"]["name"], r.get("status") or {})) for r in rollouts
              if not r["metadata"].get("deletionTimestamp")]
    toward = [(r, st) for r, st in toward if st.get("toRevision") == spec_id or (p.is_auto(r) and p.revision_of(r) == spec_id)]
    waiting = [(r, st) for r, st in toward if st.get("phase") not in TERMINAL]
    if waiting:
        r, st = p.newest(waiting)
        return (f"LLMRollout {r['metadata']['name']} for revision {spec_id}: {st.get('message') or 'not started yet'}; "
                f"revision {stable_id} serves meanwhile"), None
    # Rolled back (kubectl llm rollback): the newest finished rollout brought back the revision that serves, after the
    # spec's own had succeeded. Stable serves, not what the spec names: Degraded, until the spec names it again.
    back = [(r, after.get(r["metadata"]["name"], r.get("status") or {})) for r in rollouts if not r["metadata"].get("deletionTimestamp")]
    back = [(r, st) for r, st in back if st.get("phase") == Phase.SUCCEEDED and st.get("toRevision") == stable_id]
    finished = [(r, st) for r, st in toward if st.get("phase") in TERMINAL]
    if back and finished and p.newest(back + finished) in back:
        r, _ = p.newest(back)
        return None, (Reason.ROLLED_BACK, f"revision {stable_id} serves, not the spec's revision {spec_id}: LLMRollout "
                                    f"{r['metadata']['name']} rolled back to it; change the spec (or move the MLflow alias) "
                                    f"to roll out again, or to {stable_id} to make it the spec's")
    ended = [(r, st) for r, st in toward if st.get("phase") in (Phase.ABORTED, Phase.FAILED)]
    if not ended:
        degraded = cond.get_condition(old_status.get("conditions", []), cond.DEGRADED) or {}
        if degraded.get("reason") == Reason.ROLLOUT_DELETED and not toward:  # still so: nothing rolls the spec out
            return None, (Reason.ROLLOUT_DELETED, degraded.get("message") or "")
        if old_status.get("canaryRevision") == spec_id and not toward:
            return None, (Reason.ROLLOUT_DELETED, f"revision {stable_id} serves, not the spec's revision {spec_id}: LLMRollout "
                                            f"{old_status.get('rollout')} was deleted before it promoted {spec_id}; change the spec "
                                            f"to roll out again")
        return None, None
    r, st = p.newest(ended)
    why = (cond.get_condition(st.get("conditions", []), cond.DEGRADED) or {}).get("reason") or st["phase"]
    reason = Reason.ROLLOUT_ABORTED if st["phase"] == Phase.ABORTED else Reason.ROLLOUT_FAILED  # ended: Aborted or Failed
    return None, (reason,
                  f"revision {stable_id} serves, not the spec's revision {spec_id}: LLMRollout {r['metadata']['name']} "
                  f"{st['phase'].lower()} ({why}): {st.get('message') or ''}; increment its spec.retry to try again, or change the spec")


def _names_revision(spec: LLMDeploymentSpec, registry: reg.Resolution | None) -> bool:
    """Whether this pass knows which revision the spec names: not when it follows an alias or stage the registry
    could not resolve in this pass (the version held then is what serves, not what the spec may name by now), so
    no rollout is started or superseded on a registry outage."""
    followed = [a.name for a in spec.adapters if a.mlflow is not None and (a.mlflow.alias or a.mlflow.stage)]
    if followed and registry is not None and any(name not in registry.adapters for name in followed):
        return False  # an adapter's alias the registry did not resolve in this pass (pinned to what is served, at best)
    ref = spec.model.mlflow
    return ref is None or registry is None or registry.model is not None or ref.version is not None


def _model_condition(conditions: list[dict[str, Any]], spec: LLMDeploymentSpec, registry: reg.Resolution | None,
                     model: ResolvedModel | None, now: str, generation: int | None, note: str = "") -> list[dict[str, Any]]:
    """``ModelResolved``: how the registry resolved the spec's model, or why it could not; ``note`` is appended
    (what of the served model's record status cannot carry)."""
    followed = [a for a in spec.adapters if a.mlflow is not None and (a.mlflow.alias or a.mlflow.stage)]
    if (spec.model.mlflow is None and not followed) or registry is None:
        return conditions
    if registry.problem is not None:
        reason, message = registry.problem
        held = f"; still serving version {model.version}" if model is not None and model.version else ""
        return cond.set_condition(conditions, cond.MODEL_RESOLVED, "False", reason, message + held + note, now=now, generation=generation)
    ref = spec.model.mlflow
    said = []
    if ref is not None:
        assert model is not None
        by = f"alias {ref.alias}" if ref.alias else f"stage {ref.stage}" if ref.stage else "a pinned version"
        said.append(f"{ref.name} version {model.version} (by {by}), run {model.run_id or 'none'}")
    for adapter in followed:
        ref_a = adapter.mlflow
        assert ref_a is not None
        by = f"alias {ref_a.alias}" if ref_a.alias else f"stage {ref_a.stage}"
        said.append(f"adapter {adapter.name}: {ref_a.name} version {ref_a.version} (by {by})")
    return cond.set_condition(conditions, cond.MODEL_RESOLVED, "True", Reason.RESOLVED, "; ".join(said) + note,
                              now=now, generation=generation)


def _unresolved(body: Mapping[str, Any], spec: LLMDeploymentSpec, registry: reg.Resolution | None, now: str) -> Plan:
    """The registry names no version and none was resolved before: report it, touch nothing."""
    assert registry is not None and registry.problem is not None
    status = copy.deepcopy(dict(body.get("status") or {}))
    generation = body["metadata"].get("generation")
    conditions = _model_condition(status.get("conditions", []), spec, registry, None, now, generation)
    if cond.get_condition(conditions, cond.READY) is None or not status.get("stableRevision"):
        conditions = cond.set_condition(conditions, cond.READY, "False", registry.problem[0],
                                        "no model version to serve yet", now=now, generation=generation)
    events = [Event("Warning", c["reason"], c["message"]) for c in cond.transitions(status.get("conditions", []), conditions)
              if c["type"] == cond.MODEL_RESOLVED]
    status.update(conditions=conditions, observedGeneration=generation)
    return Plan(actions=[], events=events, status=status, requeue_after=registry.retry_in)


def _quality_gate(active: p.Active, status: dict[str, Any], registry: reg.Resolution | None, stable: str,
                  now: str) -> tuple[dict[str, Any] | None, dict[str, Any]]:
    """Gate an MLflow version on its run metrics before its rollout sends it any traffic.

    Returns (a status that holds the rollout back, None) when it waits for the registry or failed the gate,
    else (None, the status to carry on from, with the verdict recorded)."""
    thresholds = active.plan.quality_gate
    version = active.revision.model.version
    record = status.get("qualityGate")
    retried = status.get("phase") in (Phase.ABORTED, Phase.FAILED) and active.plan.retry > (status.get("observedRetry") or 0)
    if not thresholds or active.revision.model.source != "mlflow" or version is None or (record and record.get("passed") and not retried):
        return None, status
    generation = active.body["metadata"].get("generation")
    st = copy.deepcopy(status)
    info = registry.versions.get(version) if registry is not None else None
    if info is None:
        why = registry.problem[1] if registry is not None and registry.problem else "the registry was not consulted"
        st.update(phase=Phase.PENDING, toRevision=active.revision.id, fromRevision=stable,
                  message=f"waiting for the registry to check the quality gate of version {version}: {why}")
        return st, status
    passed, detail = reg.evaluate_gate(list(thresholds), info.metrics)
    st["qualityGate"] = {"passed": passed, "message": detail, "evaluatedAt": now}
    if passed:
        return None, st
    message = f"quality gate: version {version}: {detail}; no traffic was sent to {active.revision.id}"
    st.update(phase=Phase.FAILED, message=message, finishedAt=now, toRevision=active.revision.id, fromRevision=stable,
              canaryWeight=0, mirrorWeight=0, canaryReplicas=0, observedRetry=active.plan.retry)
    st.pop("waitingSince", None)
    st["conditions"] = cond.set_condition(st.get("conditions", []), cond.PROGRESSING, "False", Reason.QUALITY_GATE_FAILED, message,
                                          now=now, generation=generation)
    st["conditions"] = cond.set_condition(st["conditions"], cond.DEGRADED, "True", Reason.QUALITY_GATE_FAILED, message,
                                          now=now, generation=generation)
    if generation is not None:
        st["observedGeneration"] = generation
    return st, status


def _model_of(old_status: Mapping[str, Any], live: Mapping[str, Any] | None) -> ResolvedModel | None:
    """The model a stable revision that the spec no longer names was serving (from status or its annotation)."""
    if old_status.get("model"):
        return ResolvedModel.model_validate(old_status["model"])
    uri = (live or {}).get("metadata", {}).get("annotations", {}).get("llmops.dev/model-uri")
    return ResolvedModel(name=uri.split("://", 1)[-1], source="uri", uri=uri) if uri else None


@dataclass(frozen=True)
class Due:
    """What a pass measures for the active rollout, over one :class:`~._measure.Context`: an analysis run
    (``run``), the fail-fast guard (``guard``), or both."""

    analysis: Analysis
    context: Context
    slo: Slo
    run: bool
    guard: bool
    since_seconds: float | None = None  # since this attempt of the rollout started (the guard looks no further back)


def measurement_due(body: Mapping[str, Any], observed: Observed, now: str, *, spec: LLMDeploymentSpec,
                    resolved: p.Resolved) -> Due | None:
    """What this pass should measure for the active rollout (:class:`Due`), or None: nothing. Pure; the caller
    measures and hands the Run and the Guard to :func:`plan_llmdeployment`. ``spec``: ``body``'s, as the pass
    parsed it; ``resolved``: the active rollout, as the pass resolved it."""
    active, _ = resolved
    if active is None:
        return None
    rollout_status = dict(active.body.get("status") or {})
    run, guard = p.due(active, parse_rfc3339(now)), guarded(active.plan, rollout_status)
    if not (run or guard):
        return None
    # With no stable revision known, a label value no revision has ("" would match series without the label).
    stable = str((body.get("status") or {}).get("stableRevision") or rollout_status.get("fromRevision") or "unknown")
    if baking(rollout_status):  # the new revision is stable now: compare against the one kept to roll back to
        stable = (rollout_status.get("bake") or {}).get("previousRevision") or stable
    context = p.measurement_context(body["metadata"]["name"], body["metadata"]["namespace"], active, stable,
                                    _ready(observed.deployments.get(active.revision.id)), active.plan.analysis)
    started = rollout_status.get("startedAt")
    since = (parse_rfc3339(now) - parse_rfc3339(started)).total_seconds() if started else None
    return Due(active.plan.analysis, context, spec.slo, run, guard, since)

