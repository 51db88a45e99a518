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
* a rollout is never promoted on missing data: an analysis step needs a passing run, and no data or too few
  requests is Inconclusive, which pauses after ``inconclusiveLimit`` runs;
* an unreachable metrics backend aborts after ``consecutiveErrorLimit`` consecutive errors
  (``MetricsUnavailable``), never promotes.
"""

from __future__ import annotations

import copy
import datetime
import hashlib
import json
import math
from dataclasses import dataclass, field
from typing import Any, Literal

from . import _conditions as cond
from ._api import Analysis, CanaryStep, GateThreshold, LLMRolloutSpec, RolloutTemplate, parse_duration
from ._measure import Run

StepKind = Literal["weight", "mirror", "preview", "pause", "analysis"]
TERMINAL = ("Succeeded", "Aborted", "Failed")
COMPLETED = "Completed"
PAUSED = "Paused"


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

    * canary: the steps as written (an empty list switches as soon as the new revision is ready);
    * blueGreen: full-size new revision behind the preview header, analysis for ``analysisDuration``, switch;
    * shadow: mirror ``mirrorPercent`` of live traffic, analysis, then the canary steps if any, else switch.
    """
    strategy = spec.strategy or template.strategy
    raw_steps = spec.steps if spec.steps is not None else template.steps
    steps = [_step(s) for s in raw_steps]
    analysis_seconds = parse_duration(spec.analysis_duration or template.analysis_duration)
    if strategy == "blueGreen":
        steps = [Step("preview"), Step("analysis", seconds=analysis_seconds)]
    elif strategy == "shadow":
        mirror = spec.mirror_percent if spec.mirror_percent is not None else template.mirror_percent
        steps = [Step("mirror", mirror), Step("analysis", seconds=analysis_seconds), Step("mirror", 0)] + steps
    return RolloutPlan(
        strategy=strategy,
        steps=tuple(steps),
        analysis=spec.analysis or template.analysis or Analysis(),
        progress_deadline_seconds=spec.progress_deadline_seconds or template.progress_deadline_seconds,
        scale_down_delay_seconds=spec.scale_down_delay_seconds if spec.scale_down_delay_seconds is not None else template.scale_down_delay_seconds,
        preview_header=template.preview_header,
        abort_scale_down_delay_seconds=(spec.abort_scale_down_delay_seconds if spec.abort_scale_down_delay_seconds is not None
                                        else template.abort_scale_down_delay_seconds),
        quality_gate=tuple(spec.quality_gate if spec.quality_gate is not None else template.quality_gate),
        paused=spec.paused, abort=spec.abort, promote=spec.promote, resume=spec.resume, retry=spec.retry,
    )


@dataclass(frozen=True)
class Observed:
    """The present, as the pass saw it."""

    stable_revision: str
    target_revision: str
    stable_replicas: int  # the stable revision's desired size: the base of canary sizing
    canary_ready: int  # ready pods of the target revision's Deployment (0 when absent)
    generation: int | None = None
    full_replicas: int | None = None  # what the new revision needs to take 100% (promotion_size); default stable_replicas

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
    revision, Events to post, and when to look again (seconds; None: on the next event)."""

    status: dict[str, Any]
    canary_replicas: int
    traffic: Traffic
    promote: bool = False
    events: list[tuple[str, str, str]] = field(default_factory=list)  # (type, reason, message)
    requeue_after: float | None = None


def _ts(now: datetime.datetime) -> str:
    return now.strftime("%Y-%m-%dT%H:%M:%SZ")


def _parse(ts: str | None) -> datetime.datetime | None:
    return datetime.datetime.fromisoformat(ts.replace("Z", "+00:00")) if ts else None


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


def needs_measurement(plan: RolloutPlan, status: dict[str, Any], now: datetime.datetime) -> bool:
    """Whether this pass should run an analysis: the current step is an analysis, it has lasted one run
    window (a run never looks at traffic from before the step), and the interval since the last run is up."""
    if status.get("phase") not in ("Progressing",) or plan.abort or plan.paused:
        return False
    index = status.get("currentStepIndex")
    if index is None or index >= len(plan.steps) or plan.steps[index].kind != "analysis":
        return False
    started = _parse(status.get("stepStartedAt"))
    if started and (now - started).total_seconds() < run_window(plan.analysis) - 0.5:
        return False
    last = _parse((status.get("analysis") or {}).get("lastRunAt"))
    return last is None or (now - last).total_seconds() >= parse_duration(plan.analysis.interval) - 0.5


def decide(plan: RolloutPlan, status: dict[str, Any], observed: Observed, run: Run | None, now: datetime.datetime) -> Decision:
    """One pass of the state machine. ``status`` is the LLMRollout's status as read (not modified);
    ``run`` is the analysis measured in this pass (see :func:`needs_measurement`), or None."""
    st = copy.deepcopy(status)
    events: list[tuple[str, str, str]] = []
    stamp = _ts(now)
    if observed.generation is not None:
        st["observedGeneration"] = observed.generation

    def condition(type_: str, value: cond.Status, reason: str, message: str) -> None:
        st["conditions"] = cond.set_condition(st.get("conditions", []), type_, value, reason, message,
                                              now=stamp, generation=observed.generation)

    def traffic() -> Traffic:
        return Traffic(st.get("canaryWeight") or 0, st.get("mirrorWeight") or 0, bool(st.get("preview")))

    def finish(phase: str, reason: str, message: str, *, event_type: str = "Warning") -> Decision:
        st.update(phase=phase, message=message, finishedAt=stamp, canaryWeight=0, mirrorWeight=0, preview=False,
                  canaryReplicas=0, waitingSince=None)
        condition(cond.PROGRESSING, "False", reason, message)
        condition(PAUSED, "False", reason, "")
        condition(cond.DEGRADED, "True", reason, message)
        events.append((event_type, reason, message))
        return Decision(_clean(st), 0, Traffic(), events=events)

    # ---- (re)start: a new rollout, a new target, edited steps, or a retry after an abort
    restart_reason = None
    if st.get("phase") is None:
        restart_reason = "RolloutStarted"
    elif st.get("toRevision") != observed.target_revision and st.get("phase") != "Succeeded":
        restart_reason = "TargetChanged"
    elif st.get("phase") in ("Aborted", "Failed") and plan.retry > (st.get("observedRetry") or 0):
        restart_reason = "Retried"
    elif st.get("phase") not in TERMINAL and st.get("stepsHash") != plan.steps_hash:
        restart_reason = "StepsChanged"
    if restart_reason:
        st.update(phase="Progressing", fromRevision=observed.stable_revision, toRevision=observed.target_revision,
                  currentStepIndex=0, stepsTotal=len(plan.steps), stepsHash=plan.steps_hash, stepStartedAt=stamp,
                  waitingSince=None, canaryWeight=0, mirrorWeight=0, preview=False, analysis=None,
                  observedRetry=plan.retry, observedResume=plan.resume, startedAt=stamp, finishedAt=None, message="")
        condition(cond.DEGRADED, "False", "AsExpected", "")
        events.append(("Normal", restart_reason,
                       f"{plan.strategy} rollout from {observed.stable_revision} to {observed.target_revision} "
                       f"({len(plan.steps)} steps)"))

    phase = st["phase"]
    if phase == "Succeeded":
        return Decision(_clean(st), 0, Traffic(), events=events)
    if phase in ("Aborted", "Failed"):
        return Decision(_clean(st), 0, Traffic(), events=events)  # stable keeps everything

    if plan.abort:
        return finish("Aborted", "AbortedByUser", f"aborted by spec.abort at step {st['currentStepIndex']}; all traffic on {observed.stable_revision}")

    waiting = _parse(st.get("waitingSince"))
    if waiting and (now - waiting).total_seconds() > plan.progress_deadline_seconds:
        return finish("Failed", "ProgressDeadlineExceeded",
                      f"the new revision's pods were not ready within {plan.progress_deadline_seconds:g}s "
                      f"({observed.canary_ready} ready); all traffic on {observed.stable_revision}")

    replicas = st.get("canaryReplicas") or 0
    current = traffic()

    def wait_for_pods(need: int, why: str) -> Decision:
        nonlocal replicas
        replicas = max(replicas, need)
        if not st.get("waitingSince"):
            st["waitingSince"] = stamp
        st.update(phase="Progressing", canaryReplicas=replicas,
                  message=f"waiting for {need} ready pods of {observed.target_revision} ({observed.canary_ready} ready) before {why}")
        condition(cond.PROGRESSING, "True", "WaitingForPods", st["message"])
        condition(PAUSED, "False", "Progressing", "")
        return Decision(_clean(st), replicas, current, events=events)

    if plan.paused:
        st.update(phase="Paused", message="paused by spec.paused")
        condition(PAUSED, "True", "PausedByUser", "spec.paused is true")
        condition(cond.PROGRESSING, "True", "Paused", "holding at step %d" % st["currentStepIndex"])
        return Decision(_clean(st), replicas, current, events=events)

    if plan.resume > (st.get("observedResume") or 0):
        st["observedResume"] = plan.resume
        index = st["currentStepIndex"]
        if st.get("phase") == "Paused" and index < len(plan.steps):
            events.append(("Normal", "Resumed", f"resumed past step {index} by spec.resume"))
            _advance(st, stamp)

    if st["phase"] == "Paused" and not plan.promote:
        reason = (cond.get_condition(st.get("conditions", []), PAUSED) or {}).get("reason")
        if reason != "PausedByUser":  # an indefinite pause or an inconclusive analysis holds until resumed
            return Decision(_clean(st), replicas, current, events=events)
        st["phase"] = "Progressing"  # spec.paused is false again: carry on from the same step
        condition(PAUSED, "False", "Unpaused", "")
        events.append(("Normal", "Unpaused", f"spec.paused is false: continuing at step {st['currentStepIndex']}"))

    # ---- walk the steps as far as the present allows
    requeue: float | None = None
    promote_now = plan.promote
    if promote_now:
        st["currentStepIndex"] = len(plan.steps)
    while st["currentStepIndex"] < len(plan.steps):
        index = st["currentStepIndex"]
        step = plan.steps[index]
        if step.kind in ("weight", "mirror", "preview"):
            percent = 100 if step.kind == "preview" else (step.value or 0)
            need = (observed.full_size if percent >= 100 else canary_size(percent, observed.stable_replicas)) if percent > 0 \
                else (replicas or 1)
            if observed.canary_ready < need:
                return wait_for_pods(need, f"step {index} ({step.kind} {percent}%)")
            replicas = max(replicas, need)
            st["waitingSince"] = None
            if step.kind == "weight":
                st["canaryWeight"] = step.value
            elif step.kind == "mirror":
                st["mirrorWeight"] = step.value
            else:
                st["preview"] = True
            current = traffic()
            events.append(("Normal", "StepCompleted", f"step {index}: {step.kind} {percent if step.kind != 'preview' else ''}".rstrip()))
            _advance(st, stamp)
            continue
        started = _parse(st.get("stepStartedAt")) or now
        elapsed = (now - started).total_seconds()
        if step.kind == "pause":
            if step.seconds is None:
                st.update(phase="Paused", canaryReplicas=replicas,
                          message=f"step {index}: paused until spec.resume is incremented or spec.promote is set")
                condition(PAUSED, "True", "WaitingForResume", st["message"])
                return Decision(_clean(st), replicas, current, events=events)
            if elapsed >= step.seconds:
                events.append(("Normal", "StepCompleted", f"step {index}: pause {step.seconds:g}s"))
                _advance(st, stamp)
                continue
            requeue = step.seconds - elapsed
            st["message"] = f"step {index}: pausing {step.seconds - elapsed:.0f}s more"
            break
        # analysis
        analysis = st.get("analysis") or {}
        if run is not None:
            analysis = _record(analysis, run, stamp)
            st["analysis"] = analysis
            failing = [m for m in run.metrics if m.verdict == "Fail"]
            if run.verdict == "Fail":
                detail = "; ".join(f"{m.name}: {m.message}" for m in failing)
                return finish("Aborted", "AnalysisFailed", f"step {index}: {detail}; all traffic on {observed.stable_revision}")
            if run.verdict == "Error" and analysis["consecutiveErrors"] > plan.analysis.consecutive_error_limit:
                errors = "; ".join(f"{m.name}: {m.message}" for m in run.metrics if m.verdict == "Error")[:300]
                return finish("Aborted", "MetricsUnavailable",
                              f"step {index}: {analysis['consecutiveErrors']} consecutive analysis errors ({errors}); "
                              f"all traffic on {observed.stable_revision}")
            if run.verdict == "Inconclusive" and analysis["inconclusive"] >= plan.analysis.inconclusive_limit:
                st.update(phase="Paused", canaryReplicas=replicas, message=(
                    f"step {index}: {analysis['inconclusive']} inconclusive analysis runs (no data or fewer than "
                    f"{plan.analysis.min_requests} requests); increment spec.resume to analyse again, or abort"))
                analysis["inconclusive"] = 0
                condition(PAUSED, "True", "InconclusiveAnalysis", st["message"])
                events.append(("Warning", "InconclusiveAnalysis", st["message"]))
                return Decision(_clean(st), replicas, current, events=events)
        duration = step.seconds or 0.0
        if analysis.get("passed", 0) >= 1 and elapsed >= duration and analysis.get("verdict") == "Pass":
            events.append(("Normal", "AnalysisPassed", f"step {index}: {analysis['passed']}/{analysis['runs']} runs passed"))
            _advance(st, stamp)
            continue
        interval = parse_duration(plan.analysis.interval)
        last = _parse(analysis.get("lastRunAt"))
        next_run = interval - (now - last).total_seconds() if last else run_window(plan.analysis) - elapsed
        requeue = max(1.0, min(next_run, duration - elapsed) if duration > elapsed else next_run)
        st["message"] = f"step {index}: analysing ({analysis.get('runs', 0)} runs, last {analysis.get('verdict') or 'none yet'})"
        break
    else:
        # ---- every step done (or promote): sized for all the traffic, then switch
        need = observed.full_size
        if observed.canary_ready < need:
            return wait_for_pods(need, "the switch")
        st.update(phase="Succeeded", finishedAt=stamp, canaryWeight=0, mirrorWeight=0, preview=False,
                  canaryReplicas=0, waitingSince=None,
                  message=f"{observed.target_revision} is stable" + (" (promoted by spec.promote)" if promote_now else ""))
        condition(cond.PROGRESSING, "False", "RolloutCompleted", st["message"])
        condition(PAUSED, "False", "RolloutCompleted", "")
        condition(COMPLETED, "True", "Promoted", st["message"])
        events.append(("Normal", "Promoted", f"{observed.target_revision} replaces {observed.stable_revision} as stable"))
        return Decision(_clean(st), need, Traffic(), promote=True, events=events)

    st["phase"] = "Progressing"
    st["canaryReplicas"] = replicas
    condition(cond.PROGRESSING, "True", "StepInProgress", st.get("message") or f"step {st['currentStepIndex']}")
    condition(PAUSED, "False", "Progressing", "")
    return Decision(_clean(st), replicas, traffic(), events=events, requeue_after=requeue)


def _advance(st: dict[str, Any], stamp: str) -> None:
    st["currentStepIndex"] += 1
    st["stepStartedAt"] = stamp
    st["analysis"] = None
    if st.get("phase") == "Paused":
        st["phase"] = "Progressing"


def _record(analysis: dict[str, Any], run: Run, stamp: str) -> dict[str, Any]:
    out = dict(analysis)
    out["runs"] = out.get("runs", 0) + 1
    out["lastRunAt"] = stamp
    out["verdict"] = run.verdict
    out["requests"] = run.requests
    out["metrics"] = [m.to_status() for m in run.metrics]
    out["passed"] = out.get("passed", 0) + (run.verdict == "Pass")
    out["inconclusive"] = out.get("inconclusive", 0) + 1 if run.verdict == "Inconclusive" else 0
    out["consecutiveErrors"] = out.get("consecutiveErrors", 0) + 1 if run.verdict == "Error" else 0
    return {k: v for k, v in out.items() if v is not None}


def _clean(st: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in st.items() if v is not None}
