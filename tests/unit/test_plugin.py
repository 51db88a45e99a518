"""kubectl llm: each control is a spec patch, refused when the rollout's phase rules it out."""

import pytest

from llm_operator._plugin import ActionError, action_patch, describe


def rollout(phase=None, **spec):
    return {"metadata": {"name": "r", "namespace": "ns"}, "spec": {"deploymentName": "chat", **spec},
            "status": {"phase": phase} if phase else {}}


@pytest.mark.parametrize("action,obj,patch", [
    ("promote", rollout("Progressing"), {"spec": {"promote": True, "paused": False}}),
    ("promote", rollout("Paused", paused=True), {"spec": {"promote": True, "paused": False}}),
    ("abort", rollout("Progressing"), {"spec": {"abort": True}}),
    ("pause", rollout("Progressing"), {"spec": {"paused": True}}),
    ("resume", rollout("Paused", paused=True), {"spec": {"paused": False}}),
    ("resume", rollout("Paused", resume=2), {"spec": {"resume": 3}}),
    ("retry", rollout("Aborted", retry=1, abort=True), {"spec": {"retry": 2, "abort": False}}),
    ("retry", rollout("Failed"), {"spec": {"retry": 1, "abort": False}}),
])
def test_actions_are_spec_patches(action, obj, patch):
    assert action_patch(action, obj) == patch


@pytest.mark.parametrize("action,obj,words", [
    ("promote", rollout("Succeeded"), "already Succeeded"),
    ("abort", rollout("Aborted"), "already Aborted"),
    ("retry", rollout("Progressing"), "only an Aborted or Failed rollout can be retried"),
    ("resume", rollout("Progressing"), "not paused"),
    ("pause", rollout("Paused", paused=True), "already paused"),
])
def test_impossible_actions_say_why(action, obj, words):
    with pytest.raises(ActionError, match=words):
        action_patch(action, obj)


def test_describe_shows_steps_traffic_and_metrics_against_bounds():
    obj = rollout("Progressing", steps=[{"setWeight": 20}, {"analysis": {"duration": "10m"}}])
    obj["status"].update(currentStepIndex=1, stepsTotal=2, canaryWeight=20, fromRevision="aaa", toRevision="bbb",
                         analysis={"runs": 3, "passed": 2, "verdict": "Pass", "lastRunAt": "2026-11-21T10:00:00Z", "requests": 812,
                                   "metrics": [{"name": "error-ratio", "value": 0.0012, "max": 0.01, "verdict": "Pass"}]})
    text = describe(obj)
    assert "Step:        1/2 (analysis 10m)" in text
    assert "Traffic:     stable 80%  new 20%" in text
    assert "Revisions:   aaa (stable) -> bbb (new)" in text
    assert "3 runs, 2 passed, last Pass" in text and "on 812 requests" in text
    (row,) = [line for line in text.splitlines() if "error-ratio" in line]
    assert row.split() == ["error-ratio", "0.0012", "-", "0.01", "Pass"]


def _llmd(**status):
    return {"metadata": {"name": "chat", "namespace": "ns"}, "status": status}


def _done(name, frm, to, target, phase="Succeeded", finished="2026-11-21T10:00:00Z"):
    return {"metadata": {"name": name}, "spec": {"deploymentName": "chat", "target": target},
            "status": {"phase": phase, "fromRevision": frm, "toRevision": to, "finishedAt": finished}}


def test_rollback_goes_to_the_previous_revision_with_the_target_that_made_it():
    from llm_operator._plugin import rollback_rollout

    history = [_done("chat-b", "a", "b", {"model": {"version": "2"}, "runtime": {"maxModelLen": 4096}}, finished="2026-11-21T10:00:00Z"),
               _done("chat-c", "b", "c", {"model": {"version": "3"}}, finished="2026-11-21T11:00:00Z")]
    out = rollback_rollout(_llmd(stableRevision="c"), history)  # previousRevision gone: the last success's fromRevision
    assert out["metadata"]["name"] == "chat-rollback-b" and out["metadata"]["labels"]["llmops.dev/rollback-to"] == "b"
    assert out["spec"] == {"deploymentName": "chat", "target": {"model": {"version": "2"}, "runtime": {"maxModelLen": 4096}},
                           "strategy": "none"}
    assert "strategy" not in rollback_rollout(_llmd(stableRevision="c"), history, canary=True)["spec"]
    taken = history + [{"metadata": {"name": "chat-rollback-b"}, "status": {"phase": "Succeeded"}}]
    assert rollback_rollout(_llmd(stableRevision="c"), taken)["metadata"]["name"] == "chat-rollback-b-2"
    # the first revision was never rolled out: its model from status.revisions
    first = rollback_rollout(_llmd(stableRevision="b", previousRevision="a",
                                   revisions=[{"revision": "a", "modelUri": "hf://org/a", "role": "previous"}]), [], None)
    assert first["spec"]["target"] == {"model": {"uri": "hf://org/a"}}


@pytest.mark.parametrize("status,rollouts,to,message", [
    ({"stableRevision": "a"}, [], None, "no earlier revision"),
    ({"stableRevision": "c"}, [_done("x", "b", "c", {}, phase="Progressing")], None, "abort it instead"),
    ({"stableRevision": "c", "previousRevision": "b"}, [], "c", "already stable"),
    ({"stableRevision": "c"}, [], "zz", "not known"),
])
def test_rollback_refuses_what_makes_no_sense(status, rollouts, to, message):
    from llm_operator._plugin import rollback_rollout

    with pytest.raises(ActionError, match=message):
        rollback_rollout(_llmd(**status), rollouts, to)
