"""How LLMRollouts attach to an LLMDeployment's pass: which rollout is active, what revision it targets,
what it must measure, and the LLMRollout the operator creates when the spec names a new revision. Pure.
"""

from __future__ import annotations

import datetime
import itertools
import json
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import pydantic

from . import _builders as b
from . import _conditions as cond
from . import _contract as c
from . import _promql as q
from . import _registry as reg
from ._api import API_VERSION, Analysis, LLMDeploymentSpec, LLMRolloutSpec, MlflowModelRef, ResolvedModel, parse_duration
from ._measure import Context
from ._rollout import RolloutPlan, needs_measurement, parse_status, plan_rollout, run_window
from ._validation import FieldError, InvalidSpec, parse_llmrollout, pydantic_errors
from ._vocabulary import TERMINAL, Phase, Reason, parse_rfc3339

AUTO_LABEL = "llmops.dev/created-by"


def _created(obj: Mapping[str, Any]) -> tuple[str, str]:
    return (obj["metadata"].get("creationTimestamp") or "", obj["metadata"]["name"])


def newest(items: list[tuple[Mapping[str, Any], Any]]) -> tuple[Mapping[str, Any], Any]:
    """The pair whose rollout (first of the pair) was created last (creation time, then name)."""
    return max(items, key=lambda item: _created(item[0]))


def wants_pass(rollout: Mapping[str, Any]) -> bool:
    """Whether a rollout still needs passes: not finished, or finished but asked to retry."""
    status = rollout.get("status") or {}
    if status.get("phase") not in TERMINAL:
        return True
    retry = rollout.get("spec", {}).get("retry", 0) or 0
    return status.get("phase") in (Phase.ABORTED, Phase.FAILED) and retry > (status.get("observedRetry") or 0)


def active_rollout(rollouts: list[Mapping[str, Any]]) -> Mapping[str, Any] | None:
    """The newest LLMRollout of a deployment that still needs passes; older ones wait their turn."""
    candidates = sorted((r for r in rollouts if wants_pass(r) and not r["metadata"].get("deletionTimestamp")), key=_created)
    return candidates[-1] if candidates else None


def draining(rollouts: Sequence[Mapping[str, Any]], template_delay: float, now: datetime.datetime) -> dict[str, float]:
    """Revisions of aborted or failed rollouts whose pods stay up a little longer (``abortScaleDownDelaySeconds``
    after the abort, while proxies converge on the stable-only routes): revision -> seconds left."""
    out = {}
    for rollout in rollouts:
        status = rollout.get("status") or {}
        if status.get("phase") not in (Phase.ABORTED, Phase.FAILED) or not status.get("finishedAt") or not status.get("toRevision"):
            continue
        delay = rollout.get("spec", {}).get("abortScaleDownDelaySeconds")
        until = parse_rfc3339(status["finishedAt"]) + datetime.timedelta(
            seconds=template_delay if delay is None else delay)
        if now < until:
            out[status["toRevision"]] = (until - now).total_seconds()
    return out


def target_of(spec: LLMDeploymentSpec, rollout: LLMRolloutSpec,
              served: Sequence[Mapping[str, Any]] | None = None) -> tuple[LLMDeploymentSpec, ResolvedModel]:
    """The LLMDeployment spec as the rollout's target revision would run it: its model (an MLflow version of
    the deployment's registered model, or a URI) and, when given, its runtime and its LoRA adapters in place of the
    deployment's."""
    target = rollout.target
    source: dict[str, Any]
    if target.model.uri is not None:
        source = {"uri": target.model.uri, "servedModelName": spec.model.served_model_name}
    else:
        if spec.model.mlflow is None:
            raise InvalidSpec([FieldError("spec.target.model.version", "the LLMDeployment names no MLflow model; use target.model.uri")])
        source = {"mlflow": {"name": spec.model.mlflow.name, "version": target.model.version,
                             **({"secretRef": spec.model.mlflow.secret_ref.to_wire()} if spec.model.mlflow.secret_ref else {})},
                  "servedModelName": spec.model.served_model_name}
    update: dict[str, Any] = {"model": {k: v for k, v in source.items() if v is not None}}
    if target.runtime is not None:
        update["runtime"] = target.runtime.to_wire()
    if target.adapters is not None:
        update["adapters"] = [a.to_wire() for a in target.adapters]
    elif served is not None:  # a rollout that names no adapters keeps the ones the stable revision serves (pinned)
        update["adapters"] = [_served_adapter(a) for a in served]
    try:  # the target's runtime over the deployment's: a combination neither was validated as
        merged = LLMDeploymentSpec.model_validate({**spec.to_wire(), **update})
    except pydantic.ValidationError as error:
        raise InvalidSpec(pydantic_errors(error, "spec.target")) from None
    return merged, b.static_model(merged)


def _served_adapter(entry: Mapping[str, Any]) -> dict[str, Any]:
    """An adapter of ``status.adapters`` as the spec would pin it."""
    source = ({"mlflow": {"name": entry["model"], "version": str(entry["version"])}} if entry.get("model") and entry.get("version")
              else {"uri": entry["uri"]})
    return {"name": entry["name"], **source, **({"baseModel": entry["baseModel"]} if entry.get("baseModel") else {})}


def auto_rollout_name(name: str, revision: str, taken: Collection[str]) -> str:
    """The name of the LLMRollout the operator creates for ``revision``: ``<deployment>-<revision>``, or
    ``<deployment>-<revision>-<n>`` with the smallest ``n`` from 2 that ``taken`` does not hold, when an earlier
    rollout to the same revision keeps the plain name (the spec went back to it: A -> B -> C -> B).

    >>> auto_rollout_name("chat", "ab12", []), auto_rollout_name("chat", "ab12", ["chat-ab12", "chat-ab12-2"])
    ('chat-ab12', 'chat-ab12-3')
    """
    base = f"{name}-{revision}"
    if base not in taken:
        return base
    return next(f"{base}-{n}" for n in itertools.count(2) if f"{base}-{n}" not in taken)


def auto_rollout(name: str, namespace: str, spec: LLMDeploymentSpec, model: ResolvedModel, revision: str,
                 taken: Collection[str] = (), served_adapters: Sequence[Mapping[str, Any]] = ()) -> dict[str, Any]:
    """The LLMRollout the operator creates when the spec names a new revision (or one it served before), following
    the deployment's ``spec.rollout`` template, named by :func:`auto_rollout_name` and labelled with the revision
    (see :func:`revision_of`)."""
    if model.source == "mlflow" and model.version is not None:
        target_model: dict[str, Any] = {"version": model.version}
    else:
        target_model = {"uri": model.uri}
    return {
        "apiVersion": API_VERSION,
        "kind": "LLMRollout",
        "metadata": {
            "name": auto_rollout_name(name, revision, taken),
            "namespace": namespace,
            "labels": {c.LABEL_DEPLOYMENT: name, c.LABEL_REVISION: revision, AUTO_LABEL: c.MANAGER},
            **({"annotations": {reg.ANNOTATION_FROM_ADAPTERS: json.dumps(before, separators=(",", ":"))}} if (before := [
                [a["model"], a["version"]] for a in served_adapters if a.get("model") and a.get("version")]) else {}),
        },
        # The adapters pinned too (none: an empty list), so the revision the rollout carries stays the one it was made
        # for whatever the spec's adapters become meanwhile.
        "spec": {"deploymentName": name, "target": {"model": target_model, "runtime": spec.runtime.to_wire(),
                                                    "adapters": [reg.pinned(a) for a in spec.adapters]}},
    }


def is_auto(rollout: Mapping[str, Any]) -> bool:
    """Whether the operator created this rollout (for a new revision of the spec) rather than a user."""
    return rollout["metadata"].get("labels", {}).get(AUTO_LABEL) == c.MANAGER


def revision_of(rollout: Mapping[str, Any]) -> str | None:
    """The revision an operator-made rollout was created for (its ``llmops.dev/revision`` label)."""
    return rollout["metadata"].get("labels", {}).get(c.LABEL_REVISION)


def supersede(rollout: Mapping[str, Any], revision: str, now: str) -> dict[str, Any]:
    """The status of an unfinished operator-made rollout whose revision the spec no longer names: aborted,
    all traffic back on stable (its pods drain for ``abortScaleDownDelaySeconds``), and a pending ``retry``
    consumed (an outdated revision is not retried). One in its bake is stable already: it ends Succeeded, its bake
    cut short (the newer revision's rollout starts from it), not Aborted while it serves all traffic."""
    st = dict(rollout.get("status") or {})
    st.pop("unavailableSince", None)  # the fail-fast grace ends with the rollout
    if st.get("phase") in (Phase.PROGRESSING, Phase.PAUSED) and st.get("bake") is not None:  # baking, read as it stands
        message = f"{st.get('toRevision')} is stable; its bake was cut short by revision {revision} (the spec names another)"
        st.update(phase=Phase.SUCCEEDED, message=message, finishedAt=now, bake={**st["bake"], "cutShort": True},
                  observedRetry=max(st.get("observedRetry") or 0, rollout.get("spec", {}).get("retry") or 0))
        generation = rollout["metadata"].get("generation")
        st["conditions"] = cond.set_condition(st.get("conditions", []), cond.PROGRESSING, "False", Reason.SUPERSEDED, message,
                                              now=now, generation=generation)
        st["conditions"] = cond.set_condition(st["conditions"], cond.COMPLETED, "True", Reason.SUPERSEDED, message, now=now, generation=generation)
        return st
    message = f"superseded by revision {revision} (the spec names another model or runtime); all traffic on stable"
    st.update(phase=Phase.ABORTED, message=message, finishedAt=now, canaryWeight=0, mirrorWeight=0, preview=False, canaryReplicas=0,
              observedRetry=max(st.get("observedRetry") or 0, rollout.get("spec", {}).get("retry") or 0))
    st.pop("waitingSince", None)
    generation = rollout["metadata"].get("generation")
    superseded: tuple[tuple[str, cond.Status], ...] = ((cond.PROGRESSING, "False"), (cond.DEGRADED, "True"))
    for type_, value in superseded:
        st["conditions"] = cond.set_condition(st.get("conditions", []), type_, value, Reason.SUPERSEDED, message, now=now, generation=generation)
    return st


def target_versions(rollouts: Sequence[Mapping[str, Any]]) -> list[str]:
    """MLflow versions that unfinished rollouts target (the registry is asked for their run metrics)."""
    return sorted({v for r in rollouts if (r.get("status") or {}).get("phase") not in TERMINAL
                   and (v := (r.get("spec", {}).get("target", {}).get("model") or {}).get("version"))})


def pending_outcome(ref: MlflowModelRef | None, rollout: Mapping[str, Any], rollouts: Sequence[Mapping[str, Any]] = (),
                    revisions: Sequence[Mapping[str, Any]] = ()) -> tuple[reg.Outcome, dict[str, Any]] | None:
    """For a finished rollout to an MLflow version (of ``ref``, the deployment's model; None: a URI model), or to
    MLflow versions of LoRA adapters, whose outcome the registry has not recorded yet: the write-back and the
    rollout's status once it is done; else None. The version the rollout went away from (a rollback's, or to tell
    an adapters-only rollout) is looked up in the deployment's ``rollouts`` and ``revisions`` (``status.revisions``)."""
    status = rollout.get("status") or {}
    version = (rollout.get("spec", {}).get("target", {}).get("model") or {}).get("version") if ref is not None else None
    if status.get("phase") not in TERMINAL or not status.get("finishedAt") or (version is None and not reg.changed_adapters(rollout)):
        return None
    from_version = reg.version_of_revision(status.get("fromRevision"), rollouts, revisions, ref.name) if ref is not None else None
    outcome = reg.outcome_of(ref, version, rollout, from_version if reg.is_rollback(rollout) else None, from_version)
    done = status.get("registry") or {}
    if done.get("recordedAt") and done.get("outcome") == outcome.outcome:
        return None
    return outcome, {**status, "registry": {"outcome": outcome.outcome}}


def pruned(rollouts: Sequence[Mapping[str, Any]], limit: int, protected: Collection[str],
           ref: MlflowModelRef | None, current: str | None = None) -> list[Mapping[str, Any]]:
    """The finished LLMRollouts beyond ``limit`` (``spec.rollout.historyLimit``) to delete, oldest first.

    Only the operator's own (people's LLMRollouts, say from Git, are theirs: a deleted one would be recreated by
    Argo CD and start over), and never one that still matters: not finished (or asked to retry), its outcome not
    yet in the registry, or toward one of the ``protected`` revisions (the caller's: the spec's revision, now and
    as last recorded, since that rollout explains why it does not serve; those whose pods still drain). The newest
    ``limit`` finished ones are kept, by creation time; among those created in the same second (creationTimestamp
    has whole seconds) one toward ``current`` (the revision the spec names now) is the newer, or the older one could
    be kept by the limit beside the protected newer one, neither ever deleted. Only a tie-break: a rollout toward
    ``current`` from long ago (the spec went B, C, back to B) does not push out the newer ones."""
    def newness(rollout: Mapping[str, Any]) -> tuple[str, bool, str]:
        toward = {revision_of(rollout), (rollout.get("status") or {}).get("toRevision")}
        created, name = _created(rollout)
        return created, current is not None and current in toward, name

    finished = sorted((r for r in rollouts if is_auto(r) and not wants_pass(r) and not r["metadata"].get("deletionTimestamp")),
                      key=newness, reverse=True)
    out = []
    for rollout in finished[limit:]:
        status = rollout.get("status") or {}
        if pending_outcome(ref, rollout) is not None:
            continue
        if revision_of(rollout) in protected or status.get("toRevision") in protected:
            continue
        out.append(rollout)
    return sorted(out, key=_created)


@dataclass(frozen=True)
class Active:
    """The active rollout, resolved: its object, plan, target spec and revision."""

    body: Mapping[str, Any]
    plan: RolloutPlan
    spec: LLMDeploymentSpec
    revision: b.Revision


#: What :func:`resolve` returns: the active rollout (or None) and the invalid rollouts with their errors.
Resolved = tuple[Active | None, list[tuple[Mapping[str, Any], InvalidSpec]]]


def resolve(spec: LLMDeploymentSpec, rollouts: Sequence[Mapping[str, Any]], served: Sequence[Mapping[str, Any]] | None = None) -> Resolved:
    """The active rollout (or None: the newest live one that parses) and the rollouts that are invalid (reported
    on their own status). Parses every live rollout's spec: a pass resolves once (:class:`~._planner._Pass`).
    ``served``: the LoRA adapters the stable revision serves (``status.adapters``), what a rollout that names none
    carries (None: the spec's)."""
    invalid = []
    live = (r for r in rollouts if wants_pass(r) and not r["metadata"].get("deletionTimestamp"))  # one being deleted is gone
    for rollout in sorted(live, key=_created, reverse=True):
        try:
            rollout_spec = parse_llmrollout(rollout)
            target_spec, target_model = target_of(spec, rollout_spec, served)
            parse_status(rollout.get("status") or {})
        except InvalidSpec as error:
            invalid.append((rollout, error))
            continue
        except pydantic.ValidationError as error:  # a status this release cannot read (a newer release's values)
            invalid.append((rollout, InvalidSpec(pydantic_errors(error, "status"))))
            continue
        return Active(rollout, plan_rollout(rollout_spec, spec.rollout), target_spec, b.make_revision(target_spec, target_model)), invalid
    return None, invalid


def measurement_context(name: str, namespace: str, active: Active, stable: str, canary_ready: int, analysis: Analysis) -> Context:
    """What an analysis run of ``active`` measures: canary and stable series, the windows, cost inputs."""
    interval = parse_duration(analysis.interval)
    status = active.body.get("status") or {}
    index = status.get("currentStepIndex") or 0
    step = active.plan.steps[index] if index < len(active.plan.steps) else None
    # Each run looks at the last interval (at least 10 s: two scrapes at a 5 s scrape interval; keep the
    # analysis interval at least twice the scrape interval). The long burn window is the analysis step.
    window = run_window(analysis)
    long_window = max(step.seconds if step and step.seconds else 10 * interval, 2 * window)
    return Context(
        canary=q.Scope(namespace, name, active.revision.id),
        stable=q.Scope(namespace, name, stable),
        window_seconds=window,
        burn_long_seconds=long_window,
        canary_gpus=float(canary_ready * active.spec.resources.gpus),
        gpu_hour_price=analysis.gpu_hour_price,
        error_source=analysis.error_source,
    )


def due(active: Active | None, now: datetime.datetime) -> bool:
    """Whether the active rollout's current step wants an analysis run in this pass."""
    return active is not None and needs_measurement(active.plan, dict(active.body.get("status") or {}), now)
