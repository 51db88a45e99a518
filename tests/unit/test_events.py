"""Events aggregated as client-go's EventCorrelator does: a repeat counts on one Event, across restarts too."""

from llm_operator._events import EventRecorder, event_name
from llm_operator._kube import KubeError
from llm_operator._vocabulary import Event
from tests.unit.fakes import FakeKube

LLMD = {"apiVersion": "llmops.dev/v1alpha1", "kind": "LLMDeployment",
        "metadata": {"name": "chat", "namespace": "team-a", "uid": "u-1"}}


def _events(kube):
    return [o for (_, kind, _, _), o in kube.objects.items() if kind == "Event"]


def test_a_failing_pass_repeated_five_times_is_one_warning_with_count_five():
    kube = FakeKube()
    recorder = EventRecorder(kube, "op-0")
    failure = Event("Warning", "ReconcileError", "ForbiddenError (403): services is forbidden: exceeded quota")
    for second in range(5):
        recorder.post(LLMD, failure, f"2026-12-01T10:00:0{second}Z")
    (event,) = _events(kube)
    assert (event["count"], event["firstTimestamp"], event["lastTimestamp"]) == (5, "2026-12-01T10:00:00Z", "2026-12-01T10:00:04Z")
    assert event["involvedObject"]["uid"] == "u-1" and event["type"] == "Warning"
    assert [w[0] for w in kube.writes] == ["create", "patch", "patch", "patch", "patch"]


def test_different_messages_or_objects_are_different_events():
    kube = FakeKube()
    recorder = EventRecorder(kube, "op-0")
    recorder.post(LLMD, Event("Warning", "ReconcileError", "a"), "2026-12-01T10:00:00Z")
    recorder.post(LLMD, Event("Warning", "ReconcileError", "b"), "2026-12-01T10:00:01Z")
    other = {**LLMD, "metadata": {**LLMD["metadata"], "uid": "u-2"}}  # the same name recreated: a new object
    recorder.post(other, Event("Warning", "ReconcileError", "a"), "2026-12-01T10:00:02Z")
    assert sorted(e["count"] for e in _events(kube)) == [1, 1, 1]


def test_a_restarted_operator_carries_the_count_on():
    kube = FakeKube()
    failure = Event("Warning", "ReconcileError", "same every pass")
    first = EventRecorder(kube, "op-0")
    for second in range(3):
        first.post(LLMD, failure, f"2026-12-01T10:00:0{second}Z")
    restarted = EventRecorder(kube, "op-1")  # an empty cache: the create answers 409, the Event is read back
    restarted.post(LLMD, failure, "2026-12-01T10:01:00Z")
    (event,) = _events(kube)
    assert (event["count"], event["lastTimestamp"]) == (4, "2026-12-01T10:01:00Z")


def test_an_expired_event_is_posted_again():
    kube = FakeKube()
    recorder = EventRecorder(kube, "op-0")
    event = Event("Normal", "Available", "ready")
    recorder.post(LLMD, event, "2026-12-01T10:00:00Z")
    kube.objects.pop(("v1", "Event", "team-a", event_name(LLMD, event)))  # kube-apiserver's --event-ttl (1 h)
    recorder.post(LLMD, event, "2026-12-01T12:00:00Z")
    (again,) = _events(kube)
    assert (again["count"], again["firstTimestamp"]) == (2, "2026-12-01T12:00:00Z")  # the count carries on


def test_an_api_error_is_logged_not_raised(caplog):
    kube = FakeKube()
    kube.fail[("create", "Event")] = lambda name: KubeError("ServiceUnavailable (503)", 503)
    EventRecorder(kube, "op-0").post(LLMD, Event("Normal", "Created", "x"), "2026-12-01T10:00:00Z")
    assert "could not post event Created on chat" in caplog.text and _events(kube) == []


def test_names_are_valid_and_stable():
    name = event_name(LLMD, Event("Warning", "ReconcileError", "x"))
    assert name == event_name(LLMD, Event("Warning", "ReconcileError", "x")) and name.startswith("chat.") and len(name) == 5 + 16
