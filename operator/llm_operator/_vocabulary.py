"""The operator's vocabulary, named once, in the lowest layer: rollout phases, condition and Event reasons, the
Event type and RFC 3339 time.

Pure: every other module may import it, it imports nothing of the operator's. The condition *types* live one layer
up, in :mod:`llm_operator._conditions`, beside the functions that keep a condition list by them.
"""

from __future__ import annotations

import datetime
import enum
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any


class Phase(enum.StrEnum):
    """``status.phase`` of an LLMRollout (a str: compares equal to the wire value)."""

    PENDING = "Pending"
    PROGRESSING = "Progressing"
    PAUSED = "Paused"
    SUCCEEDED = "Succeeded"
    ABORTED = "Aborted"
    FAILED = "Failed"


#: The phases a rollout ends in (an aborted or failed one may be retried by ``spec.retry``).
TERMINAL = (Phase.SUCCEEDED, Phase.ABORTED, Phase.FAILED)


class Reason:
    """The ``reason`` of the operator's conditions and Events (of LLMRollouts and LLMDeployments), one CamelCase word
    each, plain strings. Tests, the Argo CD health scripts (``manifests/argocd``) and people's alerts match on these
    strings: never reword one."""

    # An LLMRollout's conditions and Events (the rollout's step machine, _rollout)
    ROLLOUT_STARTED = "RolloutStarted"  # (re)start: a new rollout
    TARGET_CHANGED = "TargetChanged"  # the deployment's spec moved to another revision mid-rollout
    RETRIED = "Retried"  # spec.retry incremented after an abort or failure
    STEPS_CHANGED = "StepsChanged"  # the steps were edited mid-rollout
    AS_EXPECTED = "AsExpected"  # Degraded=False on a (re)start; an LLMDeployment's Degraded=False
    ABORTED_BY_USER = "AbortedByUser"
    # the rollout's pods were not ready in time; an LLMDeployment's Degraded=True when a Deployment of it reports
    # the Deployment controller's own condition Progressing=False with this same reason
    PROGRESS_DEADLINE_EXCEEDED = "ProgressDeadlineExceeded"
    WAITING_FOR_PODS = "WaitingForPods"
    PAUSED_BY_USER = "PausedByUser"
    PAUSED = "Paused"  # Progressing=True while spec.paused holds the rollout
    RESUMED = "Resumed"
    UNPAUSED = "Unpaused"
    STEP_COMPLETED = "StepCompleted"
    WAITING_FOR_RESUME = "WaitingForResume"
    ANALYSIS_FAILED = "AnalysisFailed"
    METRICS_UNAVAILABLE = "MetricsUnavailable"
    INCONCLUSIVE_ANALYSIS = "InconclusiveAnalysis"
    ANALYSIS_PASSED = "AnalysisPassed"
    ROLLOUT_COMPLETED = "RolloutCompleted"
    BAKING = "Baking"  # Progressing=True after the switch, while the analysis runs on the new stable (both kinds)
    BAKE_PASSED = "BakePassed"
    # a failed bake (or spec.abort during it): traffic back on the previous revision; an LLMDeployment's
    # Progressing=False/Degraded=True when a later rollout brought an earlier revision back
    ROLLED_BACK = "RolledBack"
    BAKE_FAILED = "BakeFailed"  # a failed bake with no previous revision left to go back to
    FAIL_FAST = "FailFast"  # the guard between analysis runs saw a hard breach on the canary
    CANARY_UNAVAILABLE = "CanaryUnavailable"  # the canary takes traffic with no ready pod
    PROMOTED = "Promoted"
    STEP_IN_PROGRESS = "StepInProgress"
    PROGRESSING = "Progressing"  # Paused=False while the steps run
    SUPERSEDED = "Superseded"  # the spec names another revision: an operator-made rollout ends (and its Event)
    QUALITY_GATE_FAILED = "QualityGateFailed"  # the MLflow version's run metrics failed spec.qualityGate
    INVALID_SPEC = "InvalidSpec"  # a spec that cannot be acted on (an LLMRollout's or an LLMDeployment's)

    # An LLMDeployment's conditions (Ready, Progressing, Degraded)
    AVAILABLE = "Available"
    SCALED_TO_ZERO = "ScaledToZero"
    REPLICAS_NOT_READY = "ReplicasNotReady"
    ROLLOUT_IN_PROGRESS = "RolloutInProgress"
    ROLLOUT_PENDING = "RolloutPending"
    SCALING_UP = "ScalingUp"
    REVISION_AVAILABLE = "RevisionAvailable"
    ROLLOUT_ABORTED = "RolloutAborted"  # the last rollout to the spec's revision ended Aborted
    ROLLOUT_FAILED = "RolloutFailed"  # ... ended Failed
    ROLLOUT_DELETED = "RolloutDeleted"  # ... was deleted in flight (an Event, too)
    RECONCILE_ERROR = "ReconcileError"  # a write of the pass failed (an Event, too)

    # An LLMDeployment's ModelResolved condition (its False reasons also Ready=False while nothing serves)
    RESOLVED = "Resolved"
    REGISTRY_UNAVAILABLE = "RegistryUnavailable"  # 5xx, timeout, refused connection
    MODEL_NOT_FOUND = "ModelNotFound"  # no such registered model, alias, stage or version

    # An LLMDeployment's Events
    ROLLOUT_CREATED = "RolloutCreated"
    REVISION_PROMOTED = "RevisionPromoted"
    REVISION_ROLLED_BACK = "RevisionRolledBack"
    REGISTRY_UPDATED = "RegistryUpdated"
    REGISTRY_WRITE_FAILED = "RegistryWriteFailed"
    CREATED = "Created"  # children created in the pass (one Event per verb and pass)
    UPDATED = "Updated"
    DELETED = "Deleted"
    SCALED = "Scaled"
    # spec.traffic.router changed: the other router's objects wait until the new route carries the traffic
    ROUTE_NOT_ACCEPTED = "RouteNotAccepted"


@dataclass(frozen=True)
class Event:
    """A Kubernetes Event about the reconciled object, or about ``about`` (an LLMRollout) when given.

    ``type`` is ``Normal`` or ``Warning``; ``reason`` one CamelCase word (the condition reason it reports, where
    there is one); ``message`` for people (the recorder cuts it at 1024 characters)."""

    type: str
    reason: str
    message: str
    about: Mapping[str, Any] | None = None


def rfc3339(moment: datetime.datetime) -> str:
    """``moment`` as the API server writes times: RFC 3339 in UTC to the second, ``2026-12-02T01:30:00Z``
    (``moment`` is taken as UTC when it has no zone)."""
    if moment.tzinfo is not None:
        moment = moment.astimezone(datetime.UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_rfc3339(text: str) -> datetime.datetime:
    """An RFC 3339 time (``Z`` or an offset) as an aware datetime.

    Raises:
        ValueError: ``text`` is not an RFC 3339 time.
    """
    return datetime.datetime.fromisoformat(text.replace("Z", "+00:00"))


def utc_now() -> str:
    """The current time, :func:`rfc3339`."""
    return rfc3339(datetime.datetime.now(tz=datetime.UTC))
