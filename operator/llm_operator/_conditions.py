"""Status conditions per the Kubernetes API conventions.

A condition list is a map keyed by ``type``; ``reason`` is one CamelCase word, ``message`` is for people,
and ``lastTransitionTime`` changes only when ``status`` flips (after Argo Rollouts'
``utils/conditions/conditions.go``).

The condition types of both custom resources are named here, once, and nowhere else: a type is only ever used
with the functions below (which order a list by them), so every module that writes or reads a condition imports
this one anyway, and the types stay beside the ordering that knows them. The ``reason`` words are
:class:`llm_operator._vocabulary.Reason` (Events carry them too).
"""

from __future__ import annotations

from typing import Any, Literal

Status = Literal["True", "False", "Unknown"]

# Both kinds
PROGRESSING = "Progressing"
DEGRADED = "Degraded"
# An LLMDeployment's
READY = "Ready"
MODEL_RESOLVED = "ModelResolved"  # how the registry resolved spec.model.mlflow, or why it could not
#: False while spec.traffic.router's route does not carry the traffic yet after a change of router (the other
#: router's objects still route it); present only then.
TRAFFIC_ROUTED = "TrafficRouted"
# An LLMRollout's
PAUSED = "Paused"
COMPLETED = "Completed"  # True once the rollout succeeded (promoted, or its bake cut short by a newer revision)


def get_condition(conditions: list[dict[str, Any]], type_: str) -> dict[str, Any] | None:
    """The condition of ``type_``, or None."""
    return next((c for c in conditions if c.get("type") == type_), None)


def set_condition(
    conditions: list[dict[str, Any]], type_: str, status: Status, reason: str, message: str, *,
    now: str, generation: int | None,
) -> list[dict[str, Any]]:
    """A new list with ``type_`` set; ``lastTransitionTime`` is kept unless ``status`` changes.

    ``now`` is an RFC 3339 timestamp; ``generation`` becomes the condition's ``observedGeneration``.
    """
    old = get_condition(conditions, type_)
    since = old["lastTransitionTime"] if old and old.get("status") == status and old.get("lastTransitionTime") else now
    new: dict[str, Any] = {"type": type_, "status": status, "reason": reason, "message": message, "lastTransitionTime": since}
    if generation is not None:
        new["observedGeneration"] = generation
    out = [c for c in conditions if c.get("type") != type_]
    out.append(new)
    return sorted(out, key=lambda c: rank(c["type"]))


def rank(type_: str) -> tuple[int, str]:
    """Where a condition of ``type_`` stands in a list: Ready, Progressing, Degraded, then the others by name."""
    return {READY: 0, PROGRESSING: 1, DEGRADED: 2}.get(type_, 9), type_


def transitions(old: list[dict[str, Any]], new: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Conditions in ``new`` whose status or reason differs from ``old`` (what deserves an Event).

    A ``Degraded=False`` that appears for the first time is the quiet default and is left out."""
    changed = []
    for cond in new:
        before = get_condition(old, cond["type"])
        if before is None and cond["type"] == DEGRADED and cond["status"] == "False":
            continue
        if before is None or (before.get("status"), before.get("reason")) != (cond["status"], cond["reason"]):
            changed.append(cond)
    return changed
