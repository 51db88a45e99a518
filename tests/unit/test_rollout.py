"""The rollout decision over tables: every step type, every verdict, manual controls, step edits."""

import datetime
import json

import pytest

from llm_operator import _conditions as cond
from llm_operator._api import FailFast, LLMRolloutSpec, LLMRolloutStatus, RolloutTemplate, Slo
from llm_operator._measure import Guard, MetricResult, Run, hard_breach_bound, judge_guard
from llm_operator._rollout import Observed, Traffic, canary_size, decide, guarded, needs_measurement, plan_rollout, promotion_size, stable_floor
from llm_operator._vocabulary import Event, rfc3339

T0 = datetime.datetime(2026, 11, 21, 10, 0, 0, tzinfo=datetime.UTC)


def at(seconds: float) -> datetime.datetime:
    return T0 + datetime.timedelta(seconds=seconds)


def spec(**fields) -> LLMRolloutSpec:
    return LLMRolloutSpec.model_validate({"deploymentName": "chat", "target": {"model": {"version": "2"}}, **fields})


TEMPLATE = RolloutTemplate.model_validate({  # the steps as written: these tables are about the step machine
    "steps": [{"setWeight": 10}, {"analysis": {"duration": "2m"}}, {"setWeight": 50}, {"pause": {"duration": "1m"}}],
    "analyzeEveryStep": False,
    "bakeDuration": "0s",  # the bake has tables of its own (test_the_bake_*)
    "analysis": {"interval": "30s", "inconclusiveLimit": 2, "consecutiveErrorLimit": 2,
                 "failFast": {"enabled": False}},  # the guard has tables of its own (test_fail_fast_*)
})

PASS = Run("Pass", 500.0, (MetricResult("error-ratio", 0.001, None, 0.01, "Pass", "ok"),))
FAIL = Run("Fail", 500.0, (MetricResult("error-ratio", 0.2, None, 0.01, "Fail", "0.2 (want <= 0.01)"),))
NODATA = Run("Inconclusive", None, (MetricResult("error-ratio", None, None, 0.01, "Inconclusive", "no data"),))
ERROR = Run("Error", None, (MetricResult("error-ratio", None, None, 0.01, "Error", "connection refused"),))


def observed(ready=0, stable=4, target="new"):
    return Observed(stable_revision="old", target_revision=target, stable_replicas=stable, canary_ready=ready, generation=1)


class Walk:
    """Feeds decisions back as the next pass's status, like the operator does."""

    def __init__(self, plan):
        self.plan = plan
        self.status = {}
        self.decision = None

    def step(self, t, ready=0, run=None, **kw):
        self.decision = decide(self.plan, self.status, observed(ready=ready, **kw), run, at(t))
        self.status = self.decision.status
        return self.decision

    @property
    def phase(self):
        return self.status["phase"]


@pytest.mark.parametrize("percent,stable,pods", [(10, 4, 1), (50, 4, 2), (60, 4, 3), (100, 4, 4), (5, 1, 1), (1, 40, 1), (25, 10, 3)])
def test_canary_is_sized_for_its_share(percent, stable, pods):
    assert canary_size(percent, stable) == pods


def test_healthy_canary_walks_every_step_and_promotes():
    walk = Walk(plan_rollout(spec(), TEMPLATE))
    d = walk.step(0, ready=0)
    assert (walk.phase, d.canary_replicas, d.traffic) == ("Progressing", 1, Traffic(0, 0, False))  # no weight before pods
    assert "waiting for 1 ready pods" in walk.status["message"]
    d = walk.step(5, ready=1)
    assert d.traffic.canary_weight == 10 and walk.status["currentStepIndex"] == 1
    assert d.requeue_after == pytest.approx(30)  # the first run waits one window (30 s) into the step
    assert not needs_measurement(walk.plan, walk.status, at(5))
    assert needs_measurement(walk.plan, walk.status, at(35))
    d = walk.step(35, ready=1, run=PASS)
    assert walk.status["currentStepIndex"] == 1 and d.requeue_after == pytest.approx(30)  # 2 min analysis still running
    for t in (65, 95):
        walk.step(t, ready=1, run=PASS)
    d = walk.step(125, ready=1, run=PASS)
    assert walk.status["currentStepIndex"] == 2
    assert (d.canary_replicas, d.traffic.canary_weight) == (2, 10)  # 50% needs 2 of 4 pods first
    d = walk.step(130, ready=2)
    assert d.traffic.canary_weight == 50 and walk.status["currentStepIndex"] == 3
    d = walk.step(150, ready=2)
    assert d.requeue_after == pytest.approx(40)  # pause 1m started at 130
    d = walk.step(190, ready=2)
    assert (d.canary_replicas, d.promote) == (4, False)  # full size before the switch
    d = walk.step(200, ready=4)
    assert d.promote and walk.phase == "Succeeded" and d.traffic == Traffic()
    assert Event("Normal", "Promoted", "new replaces old as stable") in d.events
    assert "analysis" not in walk.status  # cleared when its step completed
    assert {c["type"]: c["status"] for c in walk.status["conditions"]}["Completed"] == "True"


def test_failed_analysis_aborts_with_traffic_back_on_stable():
    walk = Walk(plan_rollout(spec(), TEMPLATE))
    walk.step(0, ready=1)
    d = walk.step(1, ready=1, run=FAIL)
    assert walk.phase == "Aborted"
    assert d.traffic == Traffic(0, 0, False) and d.canary_replicas == 0 and not d.promote
    assert "error-ratio: 0.2 (want <= 0.01)" in walk.status["message"]
    reasons = {c["type"]: c["reason"] for c in walk.status["conditions"]}
    assert reasons["Degraded"] == "AnalysisFailed" and reasons["Progressing"] == "AnalysisFailed"
    # Terminal: later passes keep it there.
    d = walk.step(60, ready=1, run=PASS)
    assert walk.phase == "Aborted" and d.traffic.canary_weight == 0 and d.canary_replicas == 0


def test_metrics_errors_abort_after_the_limit_never_promote():
    walk = Walk(plan_rollout(spec(), TEMPLATE))
    walk.step(0, ready=1)
    walk.step(1, ready=1, run=ERROR)
    walk.step(31, ready=1, run=ERROR)
    assert walk.phase == "Progressing" and walk.status["analysis"]["consecutiveErrors"] == 2
    d = walk.step(61, ready=1, run=ERROR)
    assert walk.phase == "Aborted" and d.traffic.canary_weight == 0
    assert {c["type"]: c["reason"] for c in walk.status["conditions"]}["Degraded"] == "MetricsUnavailable"


def test_an_error_between_passes_resets_the_count():
    walk = Walk(plan_rollout(spec(), TEMPLATE))
    walk.step(0, ready=1)
    for t, run in ((1, ERROR), (31, ERROR), (61, PASS), (91, ERROR), (121, ERROR)):
        walk.step(t, ready=1, run=run)
    assert walk.phase == "Progressing"


def test_no_data_pauses_after_the_inconclusive_limit_and_resume_continues():
    walk = Walk(plan_rollout(spec(), TEMPLATE))
    walk.step(0, ready=1)
    walk.step(1, ready=1, run=NODATA)
    d = walk.step(31, ready=1, run=NODATA)
    assert walk.phase == "Paused" and d.traffic.canary_weight == 10  # holds where it is, promotes nothing
    assert {c["type"]: c["reason"] for c in walk.status["conditions"]}["Paused"] == "InconclusiveAnalysis"
    assert not needs_measurement(walk.plan, walk.status, at(61))
    walk.step(300, ready=1)
    assert walk.phase == "Paused"  # still holding much later
    walk.plan = plan_rollout(spec(resume=1), TEMPLATE)
    walk.step(301, ready=1)
    assert walk.phase == "Progressing" and walk.status["currentStepIndex"] == 2


def test_analysis_without_a_pass_never_advances():
    walk = Walk(plan_rollout(spec(), TEMPLATE))
    walk.step(0, ready=1)
    walk.step(1, ready=1, run=NODATA)
    walk.step(500, ready=1)  # duration long over, but no passing run
    assert walk.status["currentStepIndex"] == 1


def test_manual_abort_pause_and_promote():
    walk = Walk(plan_rollout(spec(), TEMPLATE))
    walk.step(0, ready=1)
    walk.plan = plan_rollout(spec(paused=True), TEMPLATE)
    d = walk.step(10, ready=1, run=PASS)
    assert walk.phase == "Paused" and d.traffic.canary_weight == 10
    walk.plan = plan_rollout(spec(promote=True), TEMPLATE)
    d = walk.step(20, ready=1)
    assert not d.promote and d.canary_replicas == 4  # promote needs the full size first
    d = walk.step(30, ready=4)
    assert d.promote and walk.phase == "Succeeded" and "promoted by spec.promote" in walk.status["message"]
    walk2 = Walk(plan_rollout(spec(abort=True), TEMPLATE))
    d = walk2.step(0, ready=1)
    assert walk2.phase == "Aborted" and d.traffic == Traffic() and d.canary_replicas == 0


def test_retry_restarts_an_aborted_rollout_from_step_zero():
    walk = Walk(plan_rollout(spec(), TEMPLATE))
    walk.step(0, ready=1)
    walk.step(1, ready=1, run=FAIL)
    walk.plan = plan_rollout(spec(retry=1), TEMPLATE)
    d = walk.step(100, ready=0)
    assert walk.phase == "Progressing" and walk.status["currentStepIndex"] == 0 and d.traffic.canary_weight == 0
    assert (d.events[0].type, d.events[0].reason) == ("Normal", "Retried")
    walk.step(110, ready=0)
    assert walk.phase == "Progressing"  # the retry counter is consumed once


def test_editing_the_steps_restarts_them():
    walk = Walk(plan_rollout(spec(), TEMPLATE))
    walk.step(0, ready=1)
    assert walk.status["currentStepIndex"] == 1
    walk.plan = plan_rollout(spec(steps=[{"setWeight": 5}, {"setWeight": 20}]), TEMPLATE)
    d = walk.step(10, ready=1)
    assert d.events[0].reason == "StepsChanged"
    assert walk.status["currentStepIndex"] == 2 and d.traffic.canary_weight == 20  # replayed from 0 with the pods ready


def test_a_new_target_restarts_with_no_traffic():
    walk = Walk(plan_rollout(spec(), TEMPLATE))
    walk.step(0, ready=1)
    d = walk.step(10, ready=0, target="newer")
    assert d.events[0].reason == "TargetChanged" and d.traffic.canary_weight == 0
    assert walk.status["toRevision"] == "newer" and walk.status["currentStepIndex"] == 0


def test_progress_deadline_fails_the_rollout():
    plan = plan_rollout(spec(progressDeadlineSeconds=600), TEMPLATE)
    walk = Walk(plan)
    walk.step(0, ready=0)
    walk.step(599, ready=0)
    assert walk.phase == "Progressing"
    d = walk.step(601, ready=0)
    assert walk.phase == "Failed" and d.canary_replicas == 0
    assert {c["type"]: c["reason"] for c in walk.status["conditions"]}["Degraded"] == "ProgressDeadlineExceeded"


def test_indefinite_pause_waits_for_resume():
    walk = Walk(plan_rollout(spec(steps=[{"setWeight": 20}, {"pause": {}}, {"setWeight": 40}]), TEMPLATE))
    walk.step(0, ready=1)
    assert walk.phase == "Paused" and {c["type"]: c["reason"] for c in walk.status["conditions"]}["Paused"] == "WaitingForResume"
    walk.step(3600, ready=2)
    assert walk.phase == "Paused"
    walk.plan = plan_rollout(spec(steps=[{"setWeight": 20}, {"pause": {}}, {"setWeight": 40}], resume=1), TEMPLATE)
    d = walk.step(3601, ready=2)
    assert d.traffic.canary_weight == 40


def test_blue_green_preview_analysis_switch():
    walk = Walk(plan_rollout(spec(strategy="blueGreen", analysisDuration="1m"), TEMPLATE))
    assert [s.kind for s in walk.plan.steps] == ["preview", "analysis"]
    d = walk.step(0, ready=2)
    assert d.canary_replicas == 4 and not d.traffic.preview  # full size behind the preview first
    d = walk.step(10, ready=4)
    assert d.traffic == Traffic(0, 0, True)
    walk.step(11, ready=4, run=PASS)
    d = walk.step(75, ready=4, run=PASS)
    assert d.promote and walk.phase == "Succeeded"


def test_shadow_mirrors_analyses_then_follows_the_steps():
    walk = Walk(plan_rollout(spec(strategy="shadow", mirrorPercent=25, analysisDuration="30s", steps=[{"setWeight": 50}]), TEMPLATE))
    assert [(s.kind, s.value) for s in walk.plan.steps] == [("mirror", 25), ("analysis", None), ("mirror", 0), ("weight", 50)]
    d = walk.step(0, ready=1)
    assert d.traffic == Traffic(0, 25, False)  # mirrored, no live traffic
    d = walk.step(31, ready=1, run=PASS)
    assert d.traffic == Traffic(50, 0, False) or d.canary_replicas == 2
    d = walk.step(40, ready=2)
    assert d.traffic == Traffic(50, 0, False)


def test_strategy_none_switches_when_ready():
    walk = Walk(plan_rollout(spec(strategy="none"), TEMPLATE))
    assert walk.plan.steps == ()
    d = walk.step(0, ready=0)
    assert d.canary_replicas == 4 and not d.promote
    assert walk.step(5, ready=4).promote


def test_needs_measurement_waits_a_window_then_follows_the_interval():
    walk = Walk(plan_rollout(spec(), TEMPLATE))
    walk.step(0, ready=1)
    assert not needs_measurement(walk.plan, walk.status, at(10))  # the window would reach back before the step
    assert needs_measurement(walk.plan, walk.status, at(30))
    walk.step(30, ready=1, run=PASS)
    assert not needs_measurement(walk.plan, walk.status, at(50))
    assert needs_measurement(walk.plan, walk.status, at(60))


def test_status_records_the_generation_it_acted_on():
    walk = Walk(plan_rollout(spec(), TEMPLATE))
    walk.step(0, ready=1)
    assert walk.status["observedGeneration"] == 1


def test_decide_is_pure_and_repeatable():
    plan = plan_rollout(spec(), TEMPLATE)
    status = Walk(plan).step(0, ready=1).status
    frozen = dict(status)
    one = decide(plan, status, observed(ready=1), PASS, at(5))
    two = decide(plan, status, observed(ready=1), PASS, at(5))
    assert status == frozen and one.status == two.status and one.traffic == two.traffic


def test_unpausing_carries_on_from_where_it_stood():
    walk = Walk(plan_rollout(spec(), TEMPLATE))
    walk.step(0, ready=1)
    walk.plan = plan_rollout(spec(paused=True), TEMPLATE)
    walk.step(10, ready=1)
    assert walk.phase == "Paused"
    walk.plan = plan_rollout(spec(paused=False), TEMPLATE)
    d = walk.step(20, ready=1)
    assert walk.phase == "Progressing" and walk.status["currentStepIndex"] == 1 and d.traffic.canary_weight == 10
    assert {c["type"]: c["status"] for c in walk.status["conditions"]}["Paused"] == "False"


@pytest.mark.parametrize("steps,run", [
    ([{"setWeight": 50}, {"pause": {}}], None),  # an indefinite pause
    ([{"setWeight": 50}, {"analysis": {}}], NODATA),  # an inconclusive analysis that pauses
])
def test_a_hold_right_after_a_weight_keeps_the_canary_sized(steps, run):
    """Pods already ready (a revision served before, a retry): the weight step and a hold in one pass. The size
    the weight needs is recorded, or the next pass would scale the canary to 0 under its traffic."""
    plan = plan_rollout(spec(steps=steps, analysis={"interval": "30s", "inconclusiveLimit": 1}), TEMPLATE)
    walk = Walk(plan)
    walk.step(0, ready=2)
    d = walk.step(31, ready=2, run=run)
    assert walk.phase == "Paused" and d.traffic.canary_weight == 50
    assert (d.canary_replicas, walk.status["canaryReplicas"]) == (2, 2)
    d = walk.step(60, ready=2)
    assert d.canary_replicas == 2 and d.traffic.canary_weight == 50


# ---------------------------------------------------------------- the HPA capacity cliff (issue 13, item 14)


@pytest.mark.parametrize("low,high,stable,held,weight,floor", [
    (1, 10, 8, None, 0, 8),  # no traffic on the canary yet: stable's size is what all the traffic needs
    (1, 10, 8, 2, 0, 8),  # still none: follows stable (the HPA may have grown it)
    (1, 10, 5, 8, 40, 8),  # 40% on the canary, the HPA shrank stable to 5: the floor set before holds
    (1, 10, 9, 8, 40, 8),  # stable grew above it: the floor stays, the HPA may grow stable
    (2, 6, 9, None, 0, 6),  # within min..max
    (3, 6, 1, None, 0, 3),
    (1, 10, 5, None, 40, 5),  # traffic moved before any floor was held (an operator upgrade mid-rollout)
])
def test_stable_floor(low, high, stable, held, weight, floor):
    assert stable_floor(low, high, stable, held, weight) == floor


@pytest.mark.parametrize("floor,stable,weight,high,size", [
    (8, 5, 50, None, 8),  # the HPA shrank stable under the canary's share: the promoted revision gets the floor
    (8, 8, 50, None, 8),  # stable held at the floor
    (8, 10, 50, None, 20),  # the HPA grew stable carrying 50%: all of it needs twice that
    (8, 10, 50, 12, 12),  # at most maxReplicas
    (4, 6, 100, None, 4),  # the canary already carries everything: stable's size says nothing
    (0, 0, 0, None, 1),  # scaled to zero: one pod to switch to
])
def test_promotion_size(floor, stable, weight, high, size):
    assert promotion_size(floor, stable, weight, high) == size


def test_promotion_waits_for_the_size_of_all_the_traffic_not_the_shrunken_stable():
    """8 replicas carried everything; with 50% on the canary the HPA shrank stable to 4. Promoting a revision of 4
    pods would then send it all 8 pods' traffic: it waits for the full size first."""
    walk = Walk(plan_rollout(spec(steps=[{"setWeight": 50}]), TEMPLATE))
    walk.step(0, ready=4, stable=8)
    d = decide(walk.plan, walk.status, Observed("old", "new", stable_replicas=8, canary_ready=4, generation=1,
                                                full_replicas=promotion_size(8, 4, 50)), None, at(10))
    assert (d.promote, d.canary_replicas) == (False, 8)
    d = decide(walk.plan, d.status, Observed("old", "new", stable_replicas=8, canary_ready=8, generation=1,
                                             full_replicas=8), None, at(20))
    assert d.promote and d.canary_replicas == 8


def test_a_run_counts_only_at_the_step_it_measured():
    """Two analysis steps back to back (or behind a traffic step whose pods are ready): the run that passes the
    first does not pass the second, which waits for a run of its own (found by review: it promoted at once)."""
    template = RolloutTemplate.model_validate({
        "steps": [{"setWeight": 10}, {"analysis": {}}, {"setWeight": 20}, {"analysis": {}}],
        "analysis": {"interval": "30s"},
    })
    walk = Walk(plan_rollout(spec(), template))
    walk.step(0, ready=1)
    assert walk.status["currentStepIndex"] == 1
    d = walk.step(35, ready=1, run=PASS)
    assert walk.status["currentStepIndex"] == 3 and d.traffic.canary_weight == 20 and not d.promote
    assert "analysis" not in walk.status  # step 3 has no run yet
    d = walk.step(70, ready=4, run=PASS)  # its own run; all four pods for the switch
    assert d.promote


def _kinds(plan):
    return [(st.kind, st.value if st.kind != "analysis" else st.seconds) for st in plan.steps]


def test_no_steps_written_is_the_default_canary_analysed_at_every_weight():
    """Safe by default (issue 16): no steps means 5, 10, 25, 50 percent, each held for an analysis of
    analysisDuration (5 minutes unless set), then the switch; never an instant switch."""
    plan = plan_rollout(spec(), RolloutTemplate())
    assert _kinds(plan) == [("weight", 5), ("analysis", 300), ("weight", 10), ("analysis", 300),
                            ("weight", 25), ("analysis", 300), ("weight", 50), ("analysis", 300)]
    assert plan.strategy == "canary"
    assert _kinds(plan_rollout(spec(steps=[]), RolloutTemplate())) == _kinds(plan)  # an empty list is no instant switch
    assert _kinds(plan_rollout(spec(), RolloutTemplate(analysis_duration="10m")))[1] == ("analysis", 600)


@pytest.mark.parametrize("steps,every,expected", [
    # a weight with no analysis after it gets one; an existing one is kept as written
    ([{"setWeight": 20}, {"pause": {"duration": "1m"}}, {"setWeight": 50}], True,
     [("weight", 20), ("analysis", 300), ("pause", None), ("weight", 50), ("analysis", 300)]),
    ([{"setWeight": 20}, {"analysis": {"duration": "2m"}}, {"setWeight": 50}], True,
     [("weight", 20), ("analysis", 120), ("weight", 50), ("analysis", 300)]),
    ([{"setMirror": 30}, {"setMirror": 0}, {"setWeight": 10}], True,
     [("mirror", 30), ("analysis", 300), ("mirror", 0), ("weight", 10), ("analysis", 300)]),
    # analyzeEveryStep: false is the explicit way to run the steps as written
    ([{"setWeight": 20}, {"setWeight": 50}], False, [("weight", 20), ("weight", 50)]),
])
def test_every_traffic_step_is_analysed_unless_said_otherwise(steps, every, expected):
    plan = plan_rollout(spec(steps=steps), RolloutTemplate(analyze_every_step=every))
    assert [(k, v) if k != "pause" else (k, None) for k, v in _kinds(plan)] == expected


def test_an_inserted_analysis_holds_the_weight_until_it_passed():
    walk = Walk(plan_rollout(spec(steps=[{"setWeight": 20}, {"setWeight": 50}]), RolloutTemplate(analysis={"interval": "30s"})))
    d = walk.step(0, ready=1)
    assert d.traffic.canary_weight == 20 and walk.status["currentStepIndex"] == 1
    d = walk.step(40, ready=2, run=Run("Inconclusive", 3.0, ()))
    assert d.traffic.canary_weight == 20  # inconclusive holds, never passes
    d = walk.step(80, ready=2, run=PASS)
    assert d.traffic.canary_weight == 20  # a pass before the 5 minutes are up does not end the step
    d = walk.step(330, ready=2, run=PASS)
    assert d.traffic.canary_weight == 50


# ------------------------------------------------------------------------------ the bake (bakeDuration)

BAKE = RolloutTemplate.model_validate({
    "steps": [{"setWeight": 50}], "analyzeEveryStep": False, "bakeDuration": "10m",
    "analysis": {"interval": "30s", "inconclusiveLimit": 2, "consecutiveErrorLimit": 2,
                 "failFast": {"enabled": False}},  # the guard has tables of its own (test_fail_fast_*)
})


def baked_walk(**spec_fields):
    """A rollout switched at t=0 (after its one weight step), baking until t=600."""
    walk = Walk(plan_rollout(spec(**spec_fields), BAKE))
    walk.step(-10, ready=2)  # setWeight 50 routed
    d = walk.step(0, ready=4)
    assert d.promote and walk.phase == "Progressing" and walk.status["bake"] == {
        "startedAt": "2026-11-21T10:00:00Z", "endsAt": "2026-11-21T10:10:00Z", "previousRevision": "old"}
    assert cond.get_condition(walk.status["conditions"], "Progressing")["reason"] == "Baking"
    assert d.traffic == Traffic(0, 0, False) and not d.rollback
    return walk


def bake_observed(ready=4, previous_ready=4):
    """During the bake the target is stable; the previous revision is kept."""
    return Observed(stable_revision="new", target_revision="new", stable_replicas=4, canary_ready=ready, generation=1,
                    previous_revision="old" if previous_ready is not None else None, previous_ready=previous_ready or 0)


def bake_step(walk, t, run=None, **kw):
    walk.decision = decide(walk.plan, walk.status, bake_observed(**kw), run, at(t))
    walk.status = walk.decision.status
    return walk.decision


def test_the_bake_runs_the_analysis_on_the_new_stable_and_succeeds_at_its_end():
    walk = baked_walk()
    assert needs_measurement(walk.plan, walk.status, at(5)) is False  # one run window first
    assert needs_measurement(walk.plan, walk.status, at(30))
    d = bake_step(walk, 30, run=PASS)
    assert walk.phase == "Progressing" and walk.status["analysis"]["passed"] == 1 and not d.promote
    bake_step(walk, 60, run=NODATA)  # inconclusive: no pause in the bake, no rollback
    d = bake_step(walk, 90, run=ERROR)  # Prometheus away: no evidence against what serves
    assert walk.phase == "Progressing" and not d.rollback and d.requeue_after == 30.0
    d = bake_step(walk, 600)
    assert walk.phase == "Succeeded" and not d.promote and not d.rollback
    assert walk.status["message"] == "new is stable; bake passed (1 of 3 runs passed, none failed)"
    assert [e.reason for e in d.events] == ["BakePassed"]


def test_a_failed_run_in_the_bake_rolls_back_to_the_previous_revision():
    walk = baked_walk()
    d = bake_step(walk, 120, run=FAIL)
    assert d.rollback and walk.phase == "Aborted" and d.traffic == Traffic(0, 0, False)
    degraded = cond.get_condition(walk.status["conditions"], "Degraded")
    assert (degraded["status"], degraded["reason"]) == ("True", "RolledBack")
    assert walk.status["message"] == "bake failed: error-ratio: 0.2 (want <= 0.01); rolled back: all traffic on old"
    assert [e.reason for e in d.events] == ["RolledBack"]


def test_a_failed_bake_with_no_previous_pods_left_fails_and_keeps_the_new_stable():
    walk = baked_walk()
    d = bake_step(walk, 120, run=FAIL, previous_ready=0)
    assert not d.rollback and walk.phase == "Failed"
    assert cond.get_condition(walk.status["conditions"], "Degraded")["reason"] == "BakeFailed"
    assert walk.status["message"].endswith("no ready pod of the previous revision old to roll back to: new stays stable")


def test_abort_during_the_bake_rolls_back_and_promote_ends_it():
    walk = baked_walk()
    walk.plan = plan_rollout(spec(abort=True), BAKE)
    d = bake_step(walk, 40)
    assert d.rollback and walk.phase == "Aborted"
    assert cond.get_condition(walk.status["conditions"], "Degraded")["reason"] == "AbortedByUser"
    walk = baked_walk()
    walk.plan = plan_rollout(spec(promote=True), BAKE)
    d = bake_step(walk, 40)
    assert walk.phase == "Succeeded" and not d.rollback and "bake skipped by spec.promote" in walk.status["message"]


def test_edited_steps_during_the_bake_do_not_restart_the_rollout():
    walk = baked_walk()
    walk.plan = plan_rollout(spec(steps=[{"setWeight": 20}]), BAKE)
    bake_step(walk, 40, run=PASS)
    assert walk.phase == "Progressing" and walk.status["bake"] and walk.status["currentStepIndex"] == 1


def test_strategy_none_and_promote_have_no_bake():
    assert plan_rollout(spec(strategy="none"), BAKE).bake_seconds == 0
    walk = Walk(plan_rollout(spec(promote=True), BAKE))
    d = walk.step(0, ready=4)
    assert d.promote and walk.phase == "Succeeded" and "bake" not in walk.status
    assert plan_rollout(spec(), RolloutTemplate()).bake_seconds == 1800  # the default: 30 minutes


# ------------------------------------------------------------------------------ the fail-fast guard (analysis.failFast)

GUARDED = RolloutTemplate.model_validate({
    "steps": [{"setWeight": 10}, {"analysis": {"duration": "10m"}}], "analyzeEveryStep": False, "bakeDuration": "10m",
    "analysis": {"interval": "5m", "failFast": {"interval": "5s"}},  # runs 5 minutes apart: the guard is what acts sooner
})
BREACH = Guard("fail fast: 9 errors in 30 requests over 30s: evidence of a breach", 30.0, 9.0)
QUIET = Guard(None, 30.0, 0.0)


def guarded_walk(**spec_fields):
    """A canary at 10% (routed at t=0), in its 10-minute analysis step."""
    walk = Walk(plan_rollout(spec(**spec_fields), GUARDED))
    walk.step(-10, ready=0)
    walk.step(-5, ready=1)
    assert walk.status["canaryWeight"] == 10 and guarded(walk.plan, walk.status)
    return walk


def guard_step(walk, t, guard, ready=1, run=None):
    walk.decision = decide(walk.plan, walk.status, observed(ready=ready), run, at(t), guard)
    walk.status = walk.decision.status
    return walk.decision


def test_fail_fast_aborts_between_analysis_runs_with_all_traffic_on_stable():
    walk = guarded_walk()
    d = guard_step(walk, 5, QUIET)
    assert walk.phase == "Progressing" and d.requeue_after == 5.0  # the guard looks every 5 s, the runs are 5 min apart
    d = guard_step(walk, 10, BREACH)
    assert walk.phase == "Aborted" and d.traffic == Traffic(0, 0, False) and d.canary_replicas == 0
    assert cond.get_condition(walk.status["conditions"], "Degraded")["reason"] == "FailFast"
    assert walk.status["message"] == f"step 1: {BREACH.breach}; all traffic on old"
    assert [e.reason for e in d.events] == ["FailFast"] and d.requeue_after is None  # terminal: no guard any more


def test_fail_fast_acts_while_paused_and_not_when_switched_off():
    walk = guarded_walk()
    walk.plan = plan_rollout(spec(paused=True), GUARDED)  # paused at 10%
    guard_step(walk, 5, QUIET)
    assert walk.phase == "Paused" and guarded(walk.plan, walk.status)  # paused, yet users still reach the canary
    guard_step(walk, 10, BREACH)
    assert walk.phase == "Aborted"
    off = RolloutTemplate.model_validate({**GUARDED.model_dump(by_alias=True, exclude_none=True),
                                          "analysis": {"interval": "5m", "failFast": {"enabled": False}}})
    walk = Walk(plan_rollout(spec(), off))
    walk.step(-10, ready=0)
    walk.step(-5, ready=1)
    d = guard_step(walk, 10, BREACH)
    assert walk.phase == "Progressing" and not guarded(walk.plan, walk.status) and d.requeue_after > 5


def test_a_canary_with_traffic_and_no_ready_pod_for_two_guard_intervals_is_aborted():
    walk = guarded_walk()
    d = guard_step(walk, 5, None, ready=0)  # its only pod crashed: Envoy has nowhere to send its 10%
    assert walk.phase == "Progressing" and walk.status["unavailableSince"] == "2026-11-21T10:00:05Z" and d.requeue_after == 5.0
    guard_step(walk, 8, None, ready=1)  # back (a restart, one failed probe): forgotten
    assert walk.phase == "Progressing" and "unavailableSince" not in walk.status
    guard_step(walk, 10, None, ready=0)
    guard_step(walk, 15, None, ready=0)
    assert walk.phase == "Progressing"  # 5 s of the 10 s grace (two intervals)
    d = guard_step(walk, 20, None, ready=0)
    assert walk.phase == "Aborted" and d.traffic == Traffic(0, 0, False) and "unavailableSince" not in walk.status
    assert cond.get_condition(walk.status["conditions"], "Degraded")["reason"] == "CanaryUnavailable"
    assert walk.status["message"] == ("step 1: new takes 10% of the traffic with no ready pod since 2026-11-21T10:00:10Z "
                                      "(fail fast); all traffic on old")


def test_a_stale_deployment_status_after_a_scale_up_is_not_a_canary_without_pods():
    """The e2e crash test caught it: the pass after a scale-up reads a status that lags the spec (ready counted as 0
    for the steps), yet the pods it reports ready still serve."""
    walk = guarded_walk()
    for t in (5, 15, 25):
        walk.decision = decide(walk.plan, walk.status, Observed("old", "new", stable_replicas=4, canary_ready=0, generation=1,
                                                                canary_serving=1), None, at(t), QUIET)
        walk.status = walk.decision.status
    assert walk.phase == "Progressing" and "unavailableSince" not in walk.status


def test_no_guard_before_the_canary_takes_traffic():
    walk = Walk(plan_rollout(spec(), GUARDED))
    walk.step(0, ready=0)  # waiting for the canary's pod: weight 0
    assert not guarded(walk.plan, walk.status)
    guard_step(walk, 1, BREACH, ready=0)  # a stray breach on a revision with no traffic: not the guard's business
    assert walk.phase == "Progressing" and walk.status["canaryWeight"] == 0 and "waiting for 1 ready pods" in walk.status["message"]


def test_fail_fast_in_the_bake_rolls_back_to_the_previous_revision():
    walk = Walk(plan_rollout(spec(), RolloutTemplate.model_validate({**GUARDED.model_dump(by_alias=True, exclude_none=True),
                                                                     "steps": [{"setWeight": 50}]})))
    walk.step(-20, ready=0)
    walk.step(-10, ready=2)
    d = walk.step(0, ready=4)
    assert d.promote and walk.status["bake"]["previousRevision"] == "old" and guarded(walk.plan, walk.status)
    walk.decision = decide(walk.plan, walk.status, bake_observed(), None, at(5), QUIET)
    walk.status = walk.decision.status
    assert walk.phase == "Progressing" and walk.decision.requeue_after == 5.0
    d = decide(walk.plan, walk.status, bake_observed(), None, at(10), BREACH)
    assert d.rollback and d.status["phase"] == "Aborted"
    assert d.status["message"] == f"bake failed: {BREACH.breach}; rolled back: all traffic on old"
    d = decide(walk.plan, walk.status, bake_observed(ready=0), None, at(10), None)
    assert not d.rollback and d.status["phase"] == "Progressing"  # no pod check on the new stable: the errors say it


@pytest.mark.parametrize("errors,requests,availability,breach", [
    (0, 1000, 99.9, False),     # healthy
    (1, 20, 99.9, False),       # one error in a few: soft evidence, the analysis's to judge
    (10, 10000, 99.9, False),   # at the budget (0.1%): no hard breach
    (100, 10000, 99.9, False),  # at the hard-breach bound (1%) itself: not evidence above it
    (150, 10000, 99.9, True),   # 1.5%: at 99.9% confidence above 1%
    (6, 20, 99.9, True),        # 30% of a handful
    (3, 3, 99.9, False),        # fewer than minRequests (10): nothing to go on
    (10, 10, 99.9, True),       # a canary failing every request
    (40, 100, 90.0, False),     # a 90% SLO: the bound is capped at 50%, 40% is below it
    (80, 100, 90.0, True),
])
def test_fail_fast_table(errors, requests, availability, breach):
    found = judge_guard(errors, requests, FailFast(), Slo(availability=availability), "30s")
    assert (found.breach is not None) == breach, found


def test_fail_fast_worked_example_needs_a_few_seconds_of_a_hard_breach():
    """At a 99% SLO (bound 10%) with 30% of the canary's requests failing: a verdict needs about 30 requests (at
    8 requests a second on a 20% canary, about 4 s), where the analysis at 95% needs evidence above 1%."""
    slo = Slo(availability=99.0)
    assert judge_guard(3, 10, FailFast(), slo, "10s").breach is None  # P(X >= 3 | 10, 0.1) = 0.07
    assert judge_guard(9, 30, FailFast(), slo, "10s").breach is None  # P(X >= 9 | 30, 0.1) = 0.002
    assert judge_guard(10, 30, FailFast(), slo, "10s").breach is not None  # P(X >= 10 | 30, 0.1) = 0.00045 < 0.001
    assert hard_breach_bound(FailFast(), slo) == 0.1


def test_a_timed_pause_under_the_guard_writes_its_status_once_not_every_guard_pass():
    """Review of the guard: the pause's message counted down its seconds, so every guard pass (5 s apart) was a
    status write; it names its end instead."""
    template = RolloutTemplate.model_validate({**GUARDED.model_dump(by_alias=True, exclude_none=True),
                                               "steps": [{"setWeight": 10}, {"pause": {"duration": "5m"}}]})
    walk = Walk(plan_rollout(spec(), template))
    walk.step(-10, ready=0)
    walk.step(0, ready=1)
    assert walk.status["canaryWeight"] == 10 and walk.status["message"] == "step 1: pausing until 2026-11-21T10:05:00Z"
    first = walk.status
    for t in (5, 10, 15):
        d = guard_step(walk, t, QUIET)
        assert walk.status == first and d.requeue_after == 5.0


def test_a_new_stable_with_no_ready_pod_in_its_bake_is_rolled_back_after_the_grace():
    """Review of the guard: in the bake, a new stable without pods has no series, so no errors to see; the kept
    previous revision takes the traffic back."""
    walk = Walk(plan_rollout(spec(), RolloutTemplate.model_validate({**GUARDED.model_dump(by_alias=True, exclude_none=True),
                                                                     "steps": [{"setWeight": 50}]})))
    walk.step(-20, ready=0)
    walk.step(-10, ready=2)
    walk.step(0, ready=4)
    assert walk.status["bake"]["previousRevision"] == "old"
    walk.decision = decide(walk.plan, walk.status, bake_observed(ready=0), None, at(5), QUIET)
    walk.status = walk.decision.status
    assert walk.phase == "Progressing" and walk.status["unavailableSince"] == "2026-11-21T10:00:05Z"
    d = decide(walk.plan, walk.status, bake_observed(ready=0), None, at(15), QUIET)
    assert d.rollback and d.status["phase"] == "Aborted" and "unavailableSince" not in d.status
    assert d.status["message"] == ("bake failed: new has had no ready pod since 2026-11-21T10:00:05Z (fail fast); rolled back: "
                                   "all traffic on old")


def test_fail_fast_settings_are_checked_naming_the_field():
    from llm_operator._validation import InvalidSpec, parse_llmrollout

    for fail_fast, words in (({"interval": "10s", "window": "15s"}, "must be at least two intervals"),):
        doc = {"apiVersion": "llmops.dev/v1alpha1", "kind": "LLMRollout", "metadata": {"name": "r", "namespace": "ns"},
               "spec": {"deploymentName": "chat", "target": {"model": {"version": "2"}},
                        "analysis": {"failFast": fail_fast}}}
        with pytest.raises(InvalidSpec, match=words) as error:
            parse_llmrollout(doc)
        assert "analysis.failFast" in str(error.value)


def test_a_bake_scaled_to_zero_by_its_autoscaler_is_not_a_revision_without_pods():
    """Review: KEDA may scale the new stable to zero in a quiet bake (minReplicas 0), and back up takes minutes of
    model loading; neither is a failure to roll back from."""
    walk = Walk(plan_rollout(spec(), RolloutTemplate.model_validate({**GUARDED.model_dump(by_alias=True, exclude_none=True),
                                                                     "steps": [{"setWeight": 50}]})))
    walk.step(-20, ready=0)
    walk.step(-10, ready=2)
    walk.step(0, ready=4)
    idle = Observed(stable_revision="new", target_revision="new", stable_replicas=0, canary_ready=0, generation=1,
                    previous_revision="old", previous_ready=4, canary_serving=0, scales_to_zero=True)
    for t in (300, 310, 400):
        walk.decision = decide(walk.plan, walk.status, idle, None, at(t), QUIET)
        walk.status = walk.decision.status
    assert walk.phase == "Progressing" and not walk.decision.rollback and "unavailableSince" not in walk.status


def _same_wire(written, read):
    """Equal, and equal as the JSON sent: a number kube-apiserver returned as an integer (``1``) must not come back
    as ``1.0``, nor a key appear with a null."""
    return written == read and json.dumps(written, sort_keys=True) == json.dumps(read, sort_keys=True)


def test_a_pass_with_nothing_to_do_gives_back_the_status_as_read_integers_included():
    """The zero-write property over the typed status: a canary holding in its analysis, its status as kube-apiserver
    returns it (whole-number floats as integers: the metric's 0.0 and 1.0, 120.0 requests), with every field a
    canary may carry; the next pass with nothing to do (no run due, within the guard's grace) says the same."""
    from llm_operator._planner import as_stored

    plan = plan_rollout(spec(analysis={"interval": "30s", "failFast": {"enabled": True, "interval": "5s"}}), TEMPLATE)
    walk = Walk(plan)
    walk.step(0, ready=0)
    walk.step(10, ready=1)  # weight 10, then the analysis step (2m) from 10 s
    walk.step(40, ready=1, run=Run("Pass", 120.0, (MetricResult("error-ratio", 0.0, 0.0, 1.0, "Pass", "ok"),)))
    assert walk.status["analysis"]["metrics"][0]["max"] == 1.0 and isinstance(walk.status["analysis"]["requests"], float)
    read, _ = as_stored({**walk.status, "waitingSince": rfc3339(at(5)), "unavailableSince": rfc3339(at(41)),
                         "qualityGate": {"passed": True, "message": "accuracy 0.91 >= 0.9", "evaluatedAt": rfc3339(at(-5))}})
    assert read["analysis"]["metrics"][0]["max"] == 1 and isinstance(read["analysis"]["requests"], int)
    assert set(read) == set(LLMRolloutStatus.model_fields[n].alias for n in LLMRolloutStatus.model_fields) - {
        "finishedAt", "registry", "bake"}  # every field but an ended or baking rollout's
    d = decide(plan, read, Observed("old", "new", stable_replicas=4, canary_ready=1, generation=1, canary_serving=0), None, at(45))
    assert d.events == [] and _same_wire(d.status, read)


def test_an_ended_rollout_with_every_field_set_is_given_back_as_read():
    """Every field of the status, as kube-apiserver returns it, through a pass of a rollout that ended: the same
    wire form, integers included (``decide`` parses it into the typed model and dumps it once)."""
    plan = plan_rollout(spec(), TEMPLATE)
    conditions = [{"type": "Progressing", "status": "False", "reason": "RolloutCompleted", "message": "new is stable",
                   "lastTransitionTime": "2026-11-21T10:20:00Z", "observedGeneration": 3},
                  {"type": "Degraded", "status": "False", "reason": "AsExpected", "message": "",
                   "lastTransitionTime": "2026-11-21T10:00:00Z"},  # written before conditions had a generation
                  {"type": "Completed", "status": "True", "reason": "Promoted", "message": "new is stable",
                   "lastTransitionTime": "2026-11-21T10:20:00Z", "observedGeneration": 3}]
    read = {"observedGeneration": 3, "conditions": conditions, "phase": "Succeeded", "message": "new is stable",
            "fromRevision": "old", "toRevision": "new", "currentStepIndex": 4, "stepsTotal": 4, "stepsHash": plan.steps_hash,
            "stepStartedAt": "2026-11-21T10:10:00Z", "waitingSince": "2026-11-21T10:09:00Z",
            "unavailableSince": "2026-11-21T10:09:30Z", "canaryWeight": 0, "mirrorWeight": 0, "preview": False,
            "canaryReplicas": 0, "analysis": {"runs": 20, "passed": 19, "inconclusive": 0, "consecutiveErrors": 0,
                                              "lastRunAt": "2026-11-21T10:19:30Z", "verdict": "Pass", "requests": 600,
                                              "metrics": [{"name": "error-ratio", "verdict": "Pass", "message": "ok",
                                                           "value": 0, "min": 0, "max": 1},
                                                          {"name": "ttft-p95", "verdict": "Pass", "message": "",
                                                           "value": 0.25, "max": 2}]},
            "observedRetry": 1, "observedResume": 2, "startedAt": "2026-11-21T10:00:00Z", "finishedAt": "2026-11-21T10:20:00Z",
            "qualityGate": {"passed": True, "message": "accuracy 0.91 >= 0.9", "evaluatedAt": "2026-11-21T09:59:00Z"},
            "registry": {"outcome": "succeeded", "recordedAt": "2026-11-21T10:20:05Z", "error": "a stale one"},
            "bake": {"startedAt": "2026-11-21T10:10:00Z", "endsAt": "2026-11-21T10:20:00Z", "previousRevision": "old",
                     "cutShort": False}}
    assert set(read) == set(LLMRolloutStatus.model_fields[n].alias for n in LLMRolloutStatus.model_fields)
    d = decide(plan, read, Observed("new", "new", stable_replicas=4, canary_ready=4, generation=3), None, at(1500))
    # an ended rollout is not guarded: its fail-fast grace ends with it (the one key a pass with nothing to do drops)
    assert _same_wire(d.status, {k: v for k, v in read.items() if k != "unavailableSince"})
    assert d.events == [] and not d.promote and d.traffic == Traffic()
    # and a field left out stays out: no default of the model's (no conditions [], no message "") is added
    sparse = {"observedGeneration": 3, "phase": "Succeeded", "toRevision": "new",
              "analysis": {"runs": 1, "metrics": [{"name": "error-ratio", "verdict": "Pass"}]}, "qualityGate": {"passed": True}}
    assert _same_wire(decide(plan, sparse, Observed("new", "new", stable_replicas=4, canary_ready=4, generation=3), None,
                             at(1500)).status, sparse)


def test_a_status_key_this_release_does_not_declare_is_carried_through():
    """Review finding (issue 14): a field written by a newer release whose CRD is still installed after a downgrade
    neither stops the pass (the typed status would refuse it) nor is removed by it."""
    plan = plan_rollout(spec(), TEMPLATE)
    walk = Walk(plan)
    walk.step(0, ready=0)
    walk.step(10, ready=1)
    read = {**walk.status, "adapterRevisions": {"sql": "3"}, "analysis": {**walk.status.get("analysis", {}), "fromTheFuture": 1}}
    d = decide(plan, read, Observed("old", "new", stable_replicas=4, canary_ready=1, generation=1, canary_serving=1), None, at(11))
    assert d.status["adapterRevisions"] == {"sql": "3"}
