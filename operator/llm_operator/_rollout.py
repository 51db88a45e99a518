"""The rollout state machine: ``decide(plan, status, observed, run, now) -> Decision``. Pure.

A rollout is a list of effective steps (canary steps as written; blue-green and shadow expand to steps too)
walked with a cursor held in status, after Argo Rollouts. Each pass re-reads the present (the canary's ready
pods, the stable size, the manual controls) and moves the cursor as far as the present allows, so a pass may
be repeated, skipped or replayed after a restart with the same outcome.

Safety rules built in:

* traffic (weight, mirror, preview) reaches the new revision only once its pods are ready, and the canary is
  sized for the traffic it is about to get: ``ceil(weight/100 x stable replicas)`` pods, at least 1;
* going back (abort, failure) routes everything to stable first; the executor applies routes before it
  scales the canary down;
* a rollout is never promoted on missing data: an analysis step needs a passing run, and no data, too few
  requests, or too few for a verdict on the error counts (``_analysis.ratio_evidence``) is Inconclusive, which
  pauses after ``inconclusiveLimit`` runs;
* an unreachable metrics backend aborts after ``consecutiveErrorLimit`` consecutive errors
  (``MetricsUnavailable``), never promotes.
"""

from __future__ import annotations

import dataclasses
import datetime
import hashlib
import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from . import _conditions as cond
from ._api import (
    DEFAULT_CANARY_WEIGHTS,
    Analysis,
    AnalysisStatus,
    BakeStatus,
    CanaryStep,
    Condition,
    GateThreshold,
    LLMRolloutSpec,
    LLMRolloutStatus,
    MetricStatus,
    RolloutTemplate,
    parse_duration,
)
from ._measure import Guard, Run
from ._vocabulary import TERMINAL, Event, Phase, Reason, parse_rfc3339, rfc3339

StepKind = Literal["weight", "mirror", "preview", "pause", "analysis"]


@dataclass(frozen=True)
class Step:
    """One effective step: a weight/mirror percent (0..100), the blue-green preview, or a pause/analysis of
    ``seconds`` (None: a pause waits for a manual resume or promote; an analysis needs one passing run)."""

    kind: StepKind
    value: int | None = None
    seconds: float | None = None


@dataclass(frozen=True)
class RolloutPlan:
    """An LLMRollout's spec with the LLMDeployment's template filled in, and its steps expanded."""

    strategy: str
    steps: tuple[Step, ...]
    analysis: Analysis
    progress_deadline_seconds: float
    scale_down_delay_seconds: float
    preview_header: str
    abort_scale_down_delay_seconds: float = 30.0
    bake_seconds: float = 0.0
    quality_gate: tuple[GateThreshold, ...] = ()
    paused: bool = False
    abort: bool = False
    promote: bool = False
    resume: int = 0
    retry: int = 0

    @property
    def steps_hash(self) -> str:
        data = [(s.kind, s.value, s.seconds) for s in self.steps]
        return hashlib.sha256(json.dumps(data).encode()).hexdigest()[:10]


def _step(raw: CanaryStep) -> Step:
    if raw.set_weight is not None:
        return Step("weight", raw.set_weight)
    if raw.set_mirror is not None:
        return Step("mirror", raw.set_mirror)
    if raw.pause is not None:
        return Step("pause", seconds=parse_duration(raw.pause.duration) if raw.pause.duration else None)
    assert raw.analysis is not None
    return Step("analysis", seconds=parse_duration(raw.analysis.duration) if raw.analysis.duration else None)


def plan_rollout(spec: LLMRolloutSpec, template: RolloutTemplate) -> RolloutPlan:
    """Resolve an LLMRollout against its LLMDeployment's ``spec.rollout`` template.

    * canary: the steps as written, or when none are written (or an empty list) the default canary
      (:data:`~llm_operator._api.DEFAULT_CANARY_WEIGHTS`, each followed by an analysis of ``analysisDuration``);
      with ``analyzeEveryStep`` (the default) a weight or mirror step that no analysis step follows gets one of
      ``analysisDuration``, so no share of traffic is raised before the last one was analysed;
    * blueGreen: full-size new revision behind the preview header, analysis for ``analysisDuration``, switch;
    * shadow: mirror ``mirrorPercent`` of live traffic, analysis, then the canary steps if any (with the same
      analysis rule), else switch;
    * none: no steps, no analysis: the switch once the new revision is ready (only ever by an explicit ``none``);
      and no bake (``bakeDuration``, the analysis after the switch, is for every other strategy).
    """
    strategy = spec.strategy or template.strategy
    raw_steps = spec.steps if spec.steps is not None else template.steps
    analysis_seconds = parse_duration(spec.analysis_duration or template.analysis_duration)
    every = spec.analyze_every_step if spec.analyze_every_step is not None else template.analyze_every_step
    steps = [_step(s) for s in raw_steps or ()]
    if strategy == "canary" and not steps:
        steps = [x for w in DEFAULT_CANARY_WEIGHTS for x in (Step("weight", w), Step("analysis", seconds=analysis_seconds))]
    if every:
        steps = _analysed(steps, analysis_seconds)
    if strategy == "none":
        steps = []
    elif strategy == "blueGreen":
        steps = [Step("preview"), Step("analysis", seconds=analysis_seconds)]
    elif strategy == "shadow":
        mirror = spec.mirror_percent if spec.mirror_percent is not None else template.mirror_percent
        steps = [Step("mirror", mirror), Step("analysis", seconds=analysis_seconds), Step("mirror", 0)] + (
            _analysed([_step(s) for s in raw_steps or ()], analysis_seconds) if every else [_step(s) for s in raw_steps or ()])
    return RolloutPlan(
        strategy=strategy,
        steps=tuple(steps),
        analysis=spec.analysis or template.analysis or Analysis(),
        progress_deadline_seconds=spec.progress_deadline_seconds or template.progress_deadline_seconds,
        scale_down_delay_seconds=spec.scale_down_delay_seconds if spec.scale_down_delay_seconds is not None else template.scale_down_delay_seconds,
        preview_header=template.preview_header,
        abort_scale_down_delay_seconds=(spec.abort_scale_down_delay_seconds if spec.abort_scale_down_delay_seconds is not None
                                        else template.abort_scale_down_delay_seconds),
        bake_seconds=0.0 if strategy == "none" else parse_duration(spec.bake_duration or template.bake_duration),
        quality_gate=tuple(spec.quality_gate if spec.quality_gate is not None else template.quality_gate),
        paused=spec.paused, abort=spec.abort, promote=spec.promote, resume=spec.resume, retry=spec.retry,
    )


def _analysed(steps: list[Step], seconds: float) -> list[Step]:
    """``steps`` with an analysis of ``seconds`` after each weight or mirror step (above 0 percent) that is not
    followed by an analysis step before the next traffic step or the end."""
    out: list[Step] = []
    for i, step in enumerate(steps):
        out.append(step)
        if step.kind in ("weight", "mirror") and (step.value or 0) > 0:
            rest = steps[i + 1:]
            upto = next((j for j, later in enumerate(rest) if later.kind in ("weight", "mirror", "preview")), len(rest))
            if not any(later.kind == "analysis" for later in rest[:upto]):
                out.append(Step("analysis", seconds=seconds))
    return out


@dataclass(frozen=True)
class Observed:
    """The present, as the pass saw it."""

    stable_revision: str
    target_revision: str
    stable_replicas: int  # the stable revision's desired size: the base of canary sizing
    canary_ready: int  # ready pods of the target revision's Deployment (0 when absent or its status is stale)
    generation: int | None = None
    full_replicas: int | None = None  # what the new revision needs to take 100% (promotion_size); default stable_replicas
    previous_revision: str | None = None  # the revision the switch replaced, kept during the bake (None: gone)
    previous_ready: int = 0  # its ready pods
    canary_serving: int | None = None  # ready pods as last reported, even while the status lags a scale-up (None: canary_ready)
    scales_to_zero: bool = False  # the stable may have no pod by design (an autoscaler with minReplicas 0)

    @property
    def full_size(self) -> int:
        return self.full_replicas if self.full_replicas is not None else canary_size(100, self.stable_replicas)


@dataclass(frozen=True)
class Traffic:
    """What the routes should say: percent to the canary (stable gets the rest), percent mirrored, preview."""

    canary_weight: int = 0
    mirror_percent: int = 0
    preview: bool = False


@dataclass
class Decision:
    """The outcome: the full new status, the canary's size, the routes, whether to make the target the stable
    revision (``promote``) or to make the previous revision stable again after a failed bake (``rollback``), Events
    to post, and when to look again (seconds; None: on the next event)."""

    status: dict[str, Any]
    canary_replicas: int
    traffic: Traffic
    promote: bool = False
    rollback: bool = False
    events: list[Event] = field(default_factory=list)
    requeue_after: float | None = None


def canary_size(percent: int, stable_replicas: int) -> int:
    """Pods the canary needs to carry ``percent`` of the traffic the stable revision's pods carry:
    ``ceil(percent/100 x stable)``, at least 1 (GPU-aware: no full surge).

    >>> canary_size(10, 8), canary_size(50, 8), canary_size(5, 1), canary_size(100, 3)
    (1, 4, 1, 3)
    """
    return max(1, math.ceil(percent / 100 * max(stable_replicas, 1)))


def stable_floor(min_replicas: int, max_replicas: int, stable_replicas: int, held: int | None, canary_weight: int) -> int:
    """The fewest replicas the autoscaler may give the stable revision while a canary runs: what stable needs to
    take all the traffic back on an abort.

    While the canary has no live traffic (``canary_weight`` 0, as read), stable carries everything, and its size
    then is that need: ``stable_replicas``. Once traffic moved, the floor ``held`` by the autoscaler (its live
    minimum, set by an earlier pass) stays; the autoscaler may still scale stable up, never below it. This is
    Argo Rollouts' default with traffic routing (``dynamicStableScale: false``: "the stable ReplicaSet is left
    scaled to 100% during the update", so an abort shifts traffic back "without delay"). Within
    ``min_replicas..max_replicas``.

    >>> stable_floor(1, 10, 8, None, 0), stable_floor(1, 10, 5, 8, 40), stable_floor(2, 6, 9, None, 0)
    (8, 8, 6)
    """
    floor = stable_replicas if canary_weight <= 0 or held is None else held
    return min(max(min_replicas, floor), max_replicas)


def promotion_size(floor: int, stable_replicas: int, canary_weight: int, max_replicas: int | None = None) -> int:
    """Replicas the new revision needs before it takes 100% of the traffic at promotion.

    ``floor`` is what carried all the traffic when the canary had none (:func:`stable_floor`). While stable sits at
    that floor the autoscaler wanted no more for its share, and the floor is the need. When it scaled stable above
    it (the load grew), that size carried only ``100 - canary_weight`` percent: all of it needs the autoscaler's own
    proportion, ``ceil(stable x 100 / (100 - canary_weight))`` (the HPA's ``desired = ceil(current x
    metric / target)`` with the metric scaled to the whole traffic). Never below the floor; at most ``max_replicas``.

    >>> promotion_size(8, 8, 50), promotion_size(8, 10, 50), promotion_size(4, 3, 20), promotion_size(4, 9, 50, 12)
    (8, 20, 4, 12)
    """
    need = floor
    if stable_replicas > floor and canary_weight < 100:
        need = math.ceil(stable_replicas * 100 / (100 - canary_weight))
    need = max(need, floor, 1)
    return min(need, max_replicas) if max_replicas is not None else need


def run_window(analysis: Analysis) -> float:
    """Seconds each analysis run looks back over: the interval, at least 10 s (two scrapes at 5 s; keep
    the interval at least twice the scrape interval)."""
    return max(parse_duration(analysis.interval), 10.0)


def bake_recovered(plan: RolloutPlan, status: Mapping[str, Any], previous: str, now: datetime.datetime) -> dict[str, Any]:
    """The status (wire form) of a rollout whose switch the LLMDeployment recorded but the rollout did not (its status
    write was lost to a conflict or a crash between the two writes): its bake, from now, with ``previous`` to roll
    back to. ``status`` is the rollout's status as read (not modified)."""
    st, stamp = parse_status(status), rfc3339(now)
    ends = now + datetime.timedelta(seconds=plan.bake_seconds)
    message = (f"{st.to_revision} is stable, baking until {rfc3339(ends)}: the analysis runs on it, {previous} is kept "
               "to roll back to")
    _all_on_stable(st)
    st.phase, st.message = Phase.PROGRESSING, message
    st.current_step_index, st.step_started_at, st.analysis = len(plan.steps), stamp, None  # past the last step
    st.bake = BakeStatus(started_at=stamp, ends_at=rfc3339(ends), previous_revision=previous)
    st.waiting_since = st.unavailable_since = None
    st.conditions = _set_condition(st.conditions, cond.PROGRESSING, "True", Reason.BAKING, message, now=stamp,
                                   generation=st.observed_generation)
    return {**_wire(st, status), "analysis": None}  # a null, as this status has always said (kube-apiserver drops it)


def bake_lost(status: Mapping[str, Any], stable: str, now: datetime.datetime) -> dict[str, Any]:
    """The status (wire form) of a rollout that says it bakes a revision which is not the stable one: the rollback it
    made was recorded on the LLMDeployment but not on it (``stable`` is its bake's previous revision), or another
    rollout has switched since. Stale either way: Aborted, traffic left as it is. ``status`` is the rollout's status
    as read (not modified)."""
    st, stamp = parse_status(status), rfc3339(now)
    previous = st.bake.previous_revision if st.bake is not None else None
    reason, message = ((Reason.ROLLED_BACK, f"rolled back: all traffic on {stable} (recorded by the LLMDeployment)")
                       if previous == stable else (Reason.SUPERSEDED, f"revision {stable} serves now; the bake of "
                                                                 f"{st.to_revision} ended unfinished"))
    _all_on_stable(st)
    st.phase, st.message, st.finished_at, st.unavailable_since = Phase.ABORTED, message, stamp, None
    ends: tuple[tuple[str, cond.Status], ...] = ((cond.PROGRESSING, "False"), (cond.DEGRADED, "True"))
    for type_, value in ends:
        st.conditions = _set_condition(st.conditions, type_, value, reason, message, now=stamp, generation=st.observed_generation)
    return _wire(st, status)


def baking(status: LLMRolloutStatus | Mapping[str, Any]) -> bool:
    """Whether the rollout is in its bake: switched, the analysis running on the new stable. ``status``: typed, or
    its wire form."""
    st = _typed(status)
    return st.phase in (Phase.PROGRESSING, Phase.PAUSED) and st.bake is not None


def needs_measurement(plan: RolloutPlan, status: LLMRolloutStatus | Mapping[str, Any], now: datetime.datetime) -> bool:
    """Whether this pass should run an analysis: the current step is an analysis (or the bake), it has lasted one
    run window (a run never looks at traffic from before the step), and the interval since the last run is up.
    ``status``: typed, or its wire form."""
    st = _typed(status)
    if st.phase != Phase.PROGRESSING or plan.abort or plan.paused:
        return False
    index = st.current_step_index
    if index is None or not (baking(st) or (index < len(plan.steps) and plan.steps[index].kind == "analysis")):
        return False
    started = st.step_started_at
    if started and (now - parse_rfc3339(started)).total_seconds() < run_window(plan.analysis) - 0.5:
        return False
    last = st.analysis.last_run_at if st.analysis is not None else None
    return not last or (now - parse_rfc3339(last)).total_seconds() >= parse_duration(plan.analysis.interval) - 0.5


def guarded(plan: RolloutPlan, status: LLMRolloutStatus | Mapping[str, Any]) -> bool:
    """Whether the fail-fast guard watches this rollout now: it is on (``analysis.failFast.enabled``), and the new
    revision takes user traffic (a canary at a weight above 0, or the new stable in its bake), paused or not.
    ``status``: typed, or its wire form."""
    st = _typed(status)
    if not plan.analysis.fail_fast.enabled or plan.abort or st.phase not in (Phase.PROGRESSING, Phase.PAUSED):
        return False
    return (st.canary_weight or 0) > 0 or baking(st)


def decide(plan: RolloutPlan, status: Mapping[str, Any], observed: Observed, run: Run | None, now: datetime.datetime,
           guard: Guard | None = None) -> Decision:
    """One pass of the state machine. ``status`` is the LLMRollout's status as read (its wire form, not modified),
    parsed once into the typed model the pass works on; the decision's status is its wire form, made once at the
    end. ``run`` is the analysis measured in this pass (see :func:`needs_measurement`), or None; ``guard`` the
    fail-fast check measured in this pass (see :func:`guarded`), or None.

    The guards below run top to bottom, each ending the pass or falling through; then the cursor walks the
    steps, one function per step kind, each advancing, holding (a requeue in seconds) or ending the pass."""
    p = _Pass.begin(plan, status, observed, now)
    as_read = p.st.current_step_index  # the step ``run`` measured, unless the rollout starts over
    restart = _restart_reason(plan, p.st, observed)  # a new rollout, a new target, edited steps, a retry
    if restart:
        p.restart(restart)
    measured = None if restart else as_read

    if p.st.phase in TERMINAL:
        return p.decision(0, Traffic())  # stable keeps everything

    if plan.abort and baking(p.st):
        return _rollback(p, Reason.ABORTED_BY_USER, "aborted by spec.abort during the bake")
    if plan.abort:
        return p.finish(Phase.ABORTED, Reason.ABORTED_BY_USER,
                        f"aborted by spec.abort at step {p.index}; all traffic on {observed.stable_revision}")

    breach = _hard_breach(p, guard)  # between analysis runs, paused or not: routes first, at once
    if breach is not None:
        return breach

    waiting = p.st.waiting_since
    if waiting and (now - parse_rfc3339(waiting)).total_seconds() > plan.progress_deadline_seconds:
        return p.finish(Phase.FAILED, Reason.PROGRESS_DEADLINE_EXCEEDED,
                        f"the new revision's pods were not ready within {plan.progress_deadline_seconds:g}s "
                        f"({observed.canary_ready} ready); all traffic on {observed.stable_revision}")

    if plan.paused:
        p.st.phase, p.st.message = Phase.PAUSED, "paused by spec.paused"
        p.condition(cond.PAUSED, "True", Reason.PAUSED_BY_USER, "spec.paused is true")
        p.condition(cond.PROGRESSING, "True", Reason.PAUSED, f"holding at step {p.index}")
        return p.decision()

    if plan.resume > (p.st.observed_resume or 0):
        p.st.observed_resume = plan.resume
        if p.st.phase == Phase.PAUSED and p.index < len(plan.steps):
            p.advance(Reason.RESUMED, f"resumed past step {p.index} by spec.resume")

    if p.st.phase == Phase.PAUSED and not plan.promote:
        paused = next((c for c in p.st.conditions if c.type == cond.PAUSED), None)
        if paused is None or paused.reason != Reason.PAUSED_BY_USER:  # an indefinite pause or an inconclusive analysis
            return p.decision()                                        # holds until resumed
        p.st.phase = Phase.PROGRESSING  # spec.paused is false again: carry on from the same step
        p.condition(cond.PAUSED, "False", Reason.UNPAUSED, "")
        p.events.append(Event("Normal", Reason.UNPAUSED, f"spec.paused is false: continuing at step {p.index}"))

    return _walk(p, run, measured)


def _hard_breach(p: _Pass, guard: Guard | None) -> Decision | None:
    """The fail-fast guard's verdict, if it ends the rollout: a hard breach in the errors (``guard``), or a
    canary taking traffic with no ready pod left. A canary is aborted; a bake rolls back to the previous
    revision."""
    if not guarded(p.plan, p.st):
        return None
    stable = p.observed.stable_revision
    if guard is not None and guard.breach is not None:
        if baking(p.st):
            return _rollback(p, Reason.ROLLED_BACK, f"bake failed: {guard.breach}")
        return p.finish(Phase.ABORTED, Reason.FAIL_FAST, f"step {p.index}: {guard.breach}; all traffic on {stable}")
    serving = p.observed.canary_serving if p.observed.canary_serving is not None else p.observed.canary_ready
    if serving > 0 or (baking(p.st) and p.observed.scales_to_zero):  # scaled to zero, or back up from it: by design
        p.st.unavailable_since = None
        return None
    # No ready pod while it takes traffic: after two guard intervals (a pod's restart or one failed probe is not yet
    # a canary that stopped answering), aborted.
    unavailable = p.st.unavailable_since
    if not unavailable:
        p.st.unavailable_since = p.stamp
        return None
    since = parse_rfc3339(unavailable)
    grace = 2 * parse_duration(p.plan.analysis.fail_fast.interval)
    if (p.now - since).total_seconds() < grace:
        return None
    if baking(p.st):  # the new stable serves nothing (no series, so no errors either): back to the kept revision
        return _rollback(p, Reason.ROLLED_BACK, f"bake failed: {p.observed.target_revision} has had no ready pod since "
                                                f"{rfc3339(since)} (fail fast)")
    return p.finish(Phase.ABORTED, Reason.CANARY_UNAVAILABLE,
                    f"step {p.index}: {p.observed.target_revision} takes {p.st.canary_weight}% of the traffic with "
                    f"no ready pod since {rfc3339(since)} (fail fast); all traffic on {stable}")


@dataclass(frozen=True)
class _Advance:
    """The step is done: post a Normal Event ``reason``/``message`` and move the cursor to the next step."""

    reason: str
    message: str


@dataclass(frozen=True)
class _Hold:
    """The step is still running: the pass ends Progressing at this step, looking again in ``requeue_after``
    seconds (None: on the next event), with ``message`` as the status message (None: keep it)."""

    requeue_after: float | None = None
    message: str | None = None


@dataclass(frozen=True)
class _Stop:
    """The pass ends with ``decision`` as it is (waiting for pods, a pause until resumed, an abort)."""

    decision: Decision


_StepResult = _Advance | _Hold | _Stop


@dataclass
class _Pass:
    """One pass's working state, after Argo Rollouts' ``rolloutContext``: the status being built (``st``, the typed
    model parsed from the one read), the Events to post, the canary's size so far (``replicas``, pods), the pass's
    timestamp (``stamp``, RFC 3339), and the ways a pass ends (each makes the status's wire form, once)."""

    plan: RolloutPlan
    observed: Observed
    now: datetime.datetime
    st: LLMRolloutStatus
    stamp: str
    replicas: int
    events: list[Event] = field(default_factory=list)
    read: Mapping[str, Any] = field(default_factory=dict)  # the status as read (its undeclared keys are kept)

    @classmethod
    def begin(cls, plan: RolloutPlan, status: Mapping[str, Any], observed: Observed, now: datetime.datetime) -> _Pass:
        st = parse_status(status)
        if observed.generation is not None:
            st.observed_generation = observed.generation
        return cls(plan, observed, now, st, rfc3339(now), st.canary_replicas or 0, read=status)

    @property
    def index(self) -> int:
        """The cursor: the step being worked on (``len(plan.steps)`` once all are done)."""
        index = self.st.current_step_index
        assert index is not None, "a rollout under way has a currentStepIndex (set when it starts)"
        return index

    def step_elapsed(self) -> float:
        """Seconds since the current step started (0 when its start is unknown)."""
        started = self.st.step_started_at
        return (self.now - parse_rfc3339(started)).total_seconds() if started else 0.0

    def condition(self, type_: str, value: cond.Status, reason: str, message: str) -> None:
        self.st.conditions = _set_condition(self.st.conditions, type_, value, reason, message, now=self.stamp,
                                            generation=self.observed.generation)

    def traffic(self) -> Traffic:
        """The routes as the status being built says."""
        return Traffic(self.st.canary_weight or 0, self.st.mirror_weight or 0, bool(self.st.preview))

    def decision(self, replicas: int | None = None, traffic: Traffic | None = None, *, promote: bool = False,
                 requeue_after: float | None = None) -> Decision:
        """The pass's outcome, with the status in its wire form; the canary's size and the routes default to the
        pass's own. While the fail-fast guard watches, the next pass is at most its interval away."""
        if guarded(self.plan, self.st):
            every = parse_duration(self.plan.analysis.fail_fast.interval)
            requeue_after = every if requeue_after is None else min(requeue_after, every)
        else:
            self.st.unavailable_since = None
        return Decision(_wire(self.st, self.read), self.replicas if replicas is None else replicas,
                        self.traffic() if traffic is None else traffic, promote=promote, events=self.events,
                        requeue_after=requeue_after)

    def restart(self, reason: str) -> None:
        """Back to step 0 for the present target, all traffic on stable."""
        plan, observed, st = self.plan, self.observed, self.st
        st.phase, st.from_revision, st.to_revision = Phase.PROGRESSING, observed.stable_revision, observed.target_revision
        st.current_step_index, st.step_started_at, st.started_at, st.message = 0, self.stamp, self.stamp, ""
        st.steps_total, st.steps_hash = len(plan.steps), plan.steps_hash
        st.observed_retry, st.observed_resume = plan.retry, plan.resume
        st.canary_weight, st.mirror_weight, st.preview = 0, 0, False
        st.waiting_since = st.unavailable_since = st.finished_at = None
        st.analysis = st.bake = None  # a retried rolled-back rollout bakes again only after a new switch
        self.condition(cond.DEGRADED, "False", Reason.AS_EXPECTED, "")
        self.events.append(Event("Normal", reason, (f"{plan.strategy} rollout from {observed.stable_revision} to "
                                               f"{observed.target_revision} ({len(plan.steps)} steps)")))

    def advance(self, reason: str, message: str) -> None:
        """Post the step's Normal Event and move the cursor on: the next step starts now, with no analysis yet."""
        self.events.append(Event("Normal", reason, message))
        self.st.current_step_index, self.st.step_started_at, self.st.analysis = self.index + 1, self.stamp, None
        if self.st.phase == Phase.PAUSED:
            self.st.phase = Phase.PROGRESSING

    def finish(self, phase: Phase, reason: str, message: str, *, event_type: str = "Warning") -> Decision:
        """End the rollout unpromoted (Aborted, Failed): all traffic to stable, no canary."""
        _all_on_stable(self.st)
        self.st.phase, self.st.message, self.st.finished_at = phase, message, self.stamp
        self.st.waiting_since = self.st.unavailable_since = None
        self.condition(cond.PROGRESSING, "False", reason, message)
        self.condition(cond.PAUSED, "False", reason, "")
        self.condition(cond.DEGRADED, "True", reason, message)
        self.events.append(Event(event_type, reason, message))
        return self.decision(0, Traffic())

    def wait_for_pods(self, need: int, why: str) -> Decision:
        """Scale the canary to ``need`` pods (never down) and hold the routes until they are ready; the progress
        deadline counts from the first such pass (``waitingSince``)."""
        self.replicas = max(self.replicas, need)
        if not self.st.waiting_since:
            self.st.waiting_since = self.stamp
        shown = self.observed.canary_serving if self.observed.canary_serving is not None else self.observed.canary_ready
        message = f"waiting for {need} ready pods of {self.observed.target_revision} ({shown} ready) before {why}"
        self.st.phase, self.st.canary_replicas, self.st.message = Phase.PROGRESSING, self.replicas, message
        self.condition(cond.PROGRESSING, "True", Reason.WAITING_FOR_PODS, message)
        self.condition(cond.PAUSED, "False", Reason.PROGRESSING, "")
        return self.decision()

    def pause(self, reason: str, message: str) -> Decision:
        """Hold at the current step until ``spec.resume`` is incremented (or ``spec.promote`` set)."""
        self.st.phase, self.st.canary_replicas, self.st.message = Phase.PAUSED, self.replicas, message
        self.condition(cond.PAUSED, "True", reason, message)
        return self.decision()

    def hold(self, held: _Hold) -> Decision:
        """End the pass Progressing at the current step."""
        if held.message is not None:
            self.st.message = held.message
        self.st.phase, self.st.canary_replicas = Phase.PROGRESSING, self.replicas
        self.condition(cond.PROGRESSING, "True", Reason.STEP_IN_PROGRESS, self.st.message or f"step {self.index}")
        self.condition(cond.PAUSED, "False", Reason.PROGRESSING, "")
        return self.decision(requeue_after=held.requeue_after)


def _restart_reason(plan: RolloutPlan, st: LLMRolloutStatus, observed: Observed) -> str | None:
    """Why this pass starts the rollout over at step 0, or None."""
    phase = st.phase
    if phase is None:
        return Reason.ROLLOUT_STARTED
    if st.to_revision != observed.target_revision and phase != Phase.SUCCEEDED:
        return Reason.TARGET_CHANGED
    if phase in (Phase.ABORTED, Phase.FAILED) and plan.retry > (st.observed_retry or 0):
        return Reason.RETRIED
    if phase not in TERMINAL and st.steps_hash != plan.steps_hash and not baking(st):  # switched: no steps left
        return Reason.STEPS_CHANGED
    return None


def _walk(p: _Pass, run: Run | None, measured: int | None) -> Decision:
    """Move the cursor as far as the present allows; past the last step (at once on ``spec.promote``), switch.

    ``run`` counts only at step ``measured``, the step it was measured for: an analysis step the cursor reaches
    later in the same pass (after a passing analysis, or a traffic step whose pods were ready) waits for a run of
    its own, on traffic from after it began."""
    if p.plan.promote:
        p.st.current_step_index = len(p.plan.steps)
    if baking(p.st):
        return _bake(p, run if measured == p.index else None)
    while p.index < len(p.plan.steps):
        step = p.plan.steps[p.index]
        if step.kind == "pause":
            result = _pause_step(p, step)
        elif step.kind == "analysis":
            result = _analysis_step(p, step, run if p.index == measured else None)
        else:
            result = _traffic_step(p, step)
        if isinstance(result, _Stop):
            return result.decision
        if isinstance(result, _Hold):
            return p.hold(result)
        p.advance(result.reason, result.message)
    return _switch(p)


def _traffic_step(p: _Pass, step: Step) -> _StepResult:
    """weight / mirror / preview: once the canary has the ready pods for its new share, route it."""
    percent = 100 if step.kind == "preview" else (step.value or 0)
    if percent > 0:
        need = p.observed.full_size if percent >= 100 else canary_size(percent, p.observed.stable_replicas)
    else:
        need = p.replicas or 1
    if p.observed.canary_ready < need:
        return _Stop(p.wait_for_pods(need, f"step {p.index} ({step.kind} {percent}%)"))
    p.replicas = max(p.replicas, need)
    p.st.waiting_since = None
    if step.kind == "weight":
        p.st.canary_weight = step.value
    elif step.kind == "mirror":
        p.st.mirror_weight = step.value
    else:
        p.st.preview = True
    shown = "" if step.kind == "preview" else f" {percent}"
    return _Advance(Reason.STEP_COMPLETED, f"step {p.index}: {step.kind}{shown}")


def _pause_step(p: _Pass, step: Step) -> _StepResult:
    """pause: for ``step.seconds``, or (None) until resumed or promoted."""
    if step.seconds is None:
        return _Stop(p.pause(Reason.WAITING_FOR_RESUME,
                             f"step {p.index}: paused until spec.resume is incremented or spec.promote is set"))
    elapsed = p.step_elapsed()
    if elapsed >= step.seconds:
        return _Advance(Reason.STEP_COMPLETED, f"step {p.index}: pause {step.seconds:g}s")
    started = p.st.step_started_at
    ends = (parse_rfc3339(started) if started else p.now) + datetime.timedelta(seconds=step.seconds)
    # The end time, not the seconds left: a message that counts down would be a status write on every pass.
    return _Hold(step.seconds - elapsed, f"step {p.index}: pausing until {rfc3339(ends)}")


def _analysis_step(p: _Pass, step: Step, run: Run | None) -> _StepResult:
    """analysis: record this pass's run; advance once a run passed and ``step.seconds`` (if any) are up."""
    analysis = p.st.analysis or AnalysisStatus()
    if run is not None:
        analysis = p.st.analysis = _record(p.st.analysis, run, p.stamp)
        stop = _judge(p, run, analysis)
        if stop is not None:
            return stop
    elapsed = p.step_elapsed()
    duration = step.seconds or 0.0
    if analysis.passed >= 1 and elapsed >= duration and analysis.verdict == "Pass":
        return _Advance(Reason.ANALYSIS_PASSED, f"step {p.index}: {analysis.passed}/{analysis.runs} runs passed")
    interval = parse_duration(p.plan.analysis.interval)
    last = analysis.last_run_at
    next_run = interval - (p.now - parse_rfc3339(last)).total_seconds() if last else run_window(p.plan.analysis) - elapsed
    requeue = max(1.0, min(next_run, duration - elapsed) if duration > elapsed else next_run)
    return _Hold(requeue, f"step {p.index}: analysing ({analysis.runs} runs, last {analysis.verdict or 'none yet'})")


def _judge(p: _Pass, run: Run, analysis: AnalysisStatus) -> _Stop | None:
    """What a run ends, if anything: a failing metric or too many errors abort, too many inconclusive runs pause
    (``analysis`` is the step's record, ``run`` already counted in it)."""
    limits, stable = p.plan.analysis, p.observed.stable_revision
    if run.verdict == "Fail":
        detail = "; ".join(f"{m.name}: {m.message}" for m in run.metrics if m.verdict == "Fail")
        return _Stop(p.finish(Phase.ABORTED, Reason.ANALYSIS_FAILED, f"step {p.index}: {detail}; all traffic on {stable}"))
    if run.verdict == "Error" and analysis.consecutive_errors > limits.consecutive_error_limit:
        errors = "; ".join(f"{m.name}: {m.message}" for m in run.metrics if m.verdict == "Error")[:300]
        return _Stop(p.finish(Phase.ABORTED, Reason.METRICS_UNAVAILABLE,
                              f"step {p.index}: {analysis.consecutive_errors} consecutive analysis errors ({errors}); "
                              f"all traffic on {stable}"))
    if run.verdict == "Inconclusive" and analysis.inconclusive >= limits.inconclusive_limit:
        why = "; ".join(f"{m.name}: {m.message}" for m in run.metrics if m.verdict == "Inconclusive")[:600]
        message = (f"step {p.index}: {analysis.inconclusive} inconclusive analysis runs (no data, fewer than "
                   f"{limits.min_requests} requests, or too few for a verdict at confidence {limits.confidence:g}"
                   f"{': ' + why if why else ''}); increment spec.resume to analyse again, or abort")
        analysis.inconclusive = 0
        p.events.append(Event("Warning", Reason.INCONCLUSIVE_ANALYSIS, message))
        return _Stop(p.pause(Reason.INCONCLUSIVE_ANALYSIS, message))
    return None


def _switch(p: _Pass) -> Decision:
    """Every step done (or promote): once the new revision is sized for all the traffic, make it stable; then the
    bake (``bake_seconds``), unless there is none or ``spec.promote`` skips it."""
    observed = p.observed
    need = observed.full_size
    if observed.canary_ready < need:
        return p.wait_for_pods(need, "the switch")
    if p.plan.bake_seconds > 0 and not p.plan.promote:
        ends = p.now + datetime.timedelta(seconds=p.plan.bake_seconds)
        message = (f"{observed.target_revision} is stable, baking until {rfc3339(ends)}: the analysis runs on it, "
                   f"{observed.stable_revision} is kept to roll back to")
        _all_on_stable(p.st)
        p.st.phase, p.st.message, p.st.waiting_since = Phase.PROGRESSING, message, None
        p.st.step_started_at, p.st.analysis = p.stamp, None
        p.st.bake = BakeStatus(started_at=p.stamp, ends_at=rfc3339(ends), previous_revision=observed.stable_revision)
        p.condition(cond.PROGRESSING, "True", Reason.BAKING, message)
        p.condition(cond.PAUSED, "False", Reason.PROGRESSING, "")
        p.events.append(Event("Normal", Reason.PROMOTED, f"{observed.target_revision} replaces {observed.stable_revision} "
                                                          f"as stable; baking for {p.plan.bake_seconds:g}s"))
        return p.decision(need, Traffic(), promote=True, requeue_after=_bake_requeue(p, ends))
    return _complete(p, need, f"{observed.target_revision} is stable" + (" (promoted by spec.promote)" if p.plan.promote else ""),
                     promote=True)


def _complete(p: _Pass, need: int, message: str, *, promote: bool) -> Decision:
    """Succeeded: the new revision is stable (``promote``: made so in this pass), the rollout is done."""
    observed = p.observed
    _all_on_stable(p.st)
    p.st.phase, p.st.finished_at, p.st.waiting_since, p.st.message = Phase.SUCCEEDED, p.stamp, None, message
    p.condition(cond.PROGRESSING, "False", Reason.ROLLOUT_COMPLETED, message)
    p.condition(cond.PAUSED, "False", Reason.ROLLOUT_COMPLETED, "")
    p.condition(cond.COMPLETED, "True", Reason.PROMOTED, message)
    if promote:
        p.events.append(Event("Normal", Reason.PROMOTED, f"{observed.target_revision} replaces {observed.stable_revision} as stable"))
    else:
        p.events.append(Event("Normal", Reason.BAKE_PASSED, message))
    return p.decision(need, Traffic(), promote=promote)


def _bake_requeue(p: _Pass, ends: datetime.datetime) -> float:
    """When the bake wants its next pass: the next run, or its end, whichever comes first (seconds)."""
    last = p.st.analysis.last_run_at if p.st.analysis is not None else None
    interval = parse_duration(p.plan.analysis.interval)
    next_run = interval - (p.now - parse_rfc3339(last)).total_seconds() if last else run_window(p.plan.analysis) - p.step_elapsed()
    return max(1.0, min(next_run, (ends - p.now).total_seconds()))


def _bake(p: _Pass, run: Run | None) -> Decision:
    """After the switch: each run on the new stable is recorded; a failing one rolls back. Inconclusive runs and
    analysis errors do not (the comparisons against stable have no stable traffic now, and a Prometheus outage is
    no evidence against the revision that serves); at ``endsAt`` (or on ``spec.promote``) the rollout is done."""
    bake = p.st.bake
    assert bake is not None, "called while baking"
    ends = parse_rfc3339(bake.ends_at) if bake.ends_at else p.now
    analysis = p.st.analysis or AnalysisStatus()
    if run is not None:
        analysis = p.st.analysis = _record(p.st.analysis, run, p.stamp)
        if run.verdict == "Fail":
            detail = "; ".join(f"{m.name}: {m.message}" for m in run.metrics if m.verdict == "Fail")
            return _rollback(p, Reason.ROLLED_BACK, f"bake failed: {detail}")
    if p.now >= ends or p.plan.promote:
        how = "skipped by spec.promote" if p.now < ends else "passed"
        return _complete(p, p.replicas or p.observed.full_size,
                         f"{p.observed.target_revision} is stable; bake {how} ({analysis.passed} of {analysis.runs} runs "
                         "passed, none failed)", promote=False)
    message = (f"{p.observed.target_revision} is stable, baking until {bake.ends_at} ({analysis.runs} runs, "
               f"last {analysis.verdict or 'none yet'}); {bake.previous_revision} is kept to roll back to")
    p.st.phase, p.st.message = Phase.PROGRESSING, message
    p.condition(cond.PROGRESSING, "True", Reason.BAKING, message)
    return p.decision(0, Traffic(), requeue_after=_bake_requeue(p, ends))


def _rollback(p: _Pass, reason: str, why: str) -> Decision:
    """End a bake unpromoted: all traffic back on the previous revision (the planner routes first and makes it
    stable again), the new one drains as after an abort. With no ready pod of the previous revision left there is
    nothing to go back to: Failed, the new revision stays stable."""
    previous = (p.st.bake.previous_revision if p.st.bake is not None else None) or p.observed.previous_revision
    if not previous or previous != p.observed.previous_revision or p.observed.previous_ready < 1:
        return p.finish(Phase.FAILED, Reason.BAKE_FAILED, f"{why}; no ready pod of the previous revision {previous} to roll back "
                                                      f"to: {p.observed.target_revision} stays stable")
    decision = p.finish(Phase.ABORTED, reason, f"{why}; rolled back: all traffic on {previous}")
    return dataclasses.replace(decision, rollback=True)


def _record(analysis: AnalysisStatus | None, run: Run, stamp: str) -> AnalysisStatus:
    """The step's analysis record (None: none yet) with ``run`` counted in, its last run at ``stamp`` (RFC 3339).
    A copy: ``analysis`` is not modified."""
    out = analysis.model_copy() if analysis is not None else AnalysisStatus()
    out.runs, out.last_run_at, out.verdict, out.requests = out.runs + 1, stamp, run.verdict, run.requests
    out.metrics = [MetricStatus.model_validate(m.to_status()) for m in run.metrics]
    out.passed = out.passed + (run.verdict == "Pass")
    out.inconclusive = out.inconclusive + 1 if run.verdict == "Inconclusive" else 0
    out.consecutive_errors = out.consecutive_errors + 1 if run.verdict == "Error" else 0
    return out


def _all_on_stable(st: LLMRolloutStatus) -> None:
    """No traffic for the new revision as a canary (no weight, mirror or preview), and no canary pod."""
    st.canary_weight, st.mirror_weight, st.preview, st.canary_replicas = 0, 0, False, 0


def _set_condition(conditions: list[Condition], type_: str, value: cond.Status, reason: str, message: str, *, now: str,
                   generation: int | None) -> list[Condition]:
    """:func:`~llm_operator._conditions.set_condition` on the typed list: a new list with ``type_`` set, its
    ``lastTransitionTime`` (RFC 3339, ``now`` when set) kept unless ``value`` changes, in
    :func:`~llm_operator._conditions.rank` order."""
    old = next((c for c in conditions if c.type == type_), None)
    since = old.last_transition_time if old is not None and old.status == value and old.last_transition_time else now
    new = Condition(type=type_, status=value, reason=reason, message=message, last_transition_time=since,
                    observed_generation=generation)
    return sorted([*(c for c in conditions if c.type != type_), new], key=lambda c: cond.rank(c.type))


def _typed(status: LLMRolloutStatus | Mapping[str, Any]) -> LLMRolloutStatus:
    """``status`` as the typed model, parsed when given in its wire form (a dict with camelCase keys, as read)."""
    return status if isinstance(status, LLMRolloutStatus) else parse_status(status)


#: The status's top-level keys this release declares (camelCase).
_DECLARED = frozenset(field.alias or name for name, field in LLMRolloutStatus.model_fields.items())


def parse_status(status: Mapping[str, Any]) -> LLMRolloutStatus:
    """An LLMRollout's status as read, typed. Keys this release does not declare (written by a newer release whose
    CRD is still installed after a downgrade) are left out here and carried through by :func:`_wire`, so a pass never
    stops on them nor removes them.

    Raises:
        pydantic.ValidationError: a value this release cannot read (a phase it does not know, say): the rollout is
            reported invalid on its own status (:func:`~llm_operator._progressive.resolve`)."""
    return LLMRolloutStatus.model_validate(status, extra="ignore")


def _wire(status: LLMRolloutStatus, read: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The wire form of a status parsed from one as read (``read``) and changed: camelCase keys, the fields it was read
    with or was given, less those set to None (that removes the key), and the top-level keys of ``read`` this release
    does not declare, as read; values as held, so a number read as an integer stays one
    (:data:`~llm_operator._api.Number`)."""
    kept = {k: v for k, v in (read or {}).items() if k not in _DECLARED}
    return {**kept, **status.model_dump(by_alias=True, exclude_unset=True, exclude_none=True)}
