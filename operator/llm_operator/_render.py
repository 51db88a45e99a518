"""``llm-operator render``: the objects the operator would apply, computed with no cluster."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from ._api import API_VERSION, LLMRolloutSpec
from ._planner import Apply, Observed, plan_llmdeployment
from ._progressive import resolve
from ._rollout import RolloutPlan, Step, plan_rollout
from ._validation import InvalidSpec, parse_llmdeployment, parse_llmrollout
from ._vocabulary import utc_now


def render(documents: Iterable[dict[str, Any]], namespace: str = "default") -> list[dict[str, Any]]:
    """Children of every LLMDeployment in ``documents``, as a fresh cluster would get them on the first
    reconcile (before the API server assigns the owner's uid, so without ownerReferences).

    LLMRollouts are validated; they change existing objects and render nothing on their own.

    Raises:
        InvalidSpec: for the first custom resource that cannot be acted on, naming its fields.
    """
    now = utc_now()
    out: list[dict[str, Any]] = []
    for doc in documents:
        if not doc or doc.get("apiVersion") != API_VERSION:
            continue
        body = {**doc, "metadata": {"namespace": namespace, **doc.get("metadata", {})}}
        where = f"{doc.get('kind')} {body['metadata']['namespace']}/{body['metadata'].get('name')}"
        if doc.get("kind") == "LLMDeployment":
            try:
                spec = parse_llmdeployment(body)
            except InvalidSpec as error:
                raise InvalidSpec([type(e)(f"{where}: {e.path}", e.message) for e in error.errors]) from None
            plan = plan_llmdeployment(body, Observed(), now, spec=spec, resolved=resolve(spec, []),
                                      autoscaler_kinds=frozenset({"HorizontalPodAutoscaler", "ScaledObject"}))
            out += [action.obj for action in plan.actions if isinstance(action, Apply)]
        elif doc.get("kind") == "LLMRollout":
            try:
                parse_llmrollout(body)
            except InvalidSpec as error:
                raise InvalidSpec([type(e)(f"{where}: {e.path}", e.message) for e in error.errors]) from None
    return out


def _step_text(step: Step) -> str:
    if step.kind == "weight":
        return f"setWeight {step.value}"
    if step.kind == "mirror":
        return f"setMirror {step.value}"
    if step.kind == "preview":
        return "preview (full size, behind the preview header)"
    what = "pause" if step.kind == "pause" else "analysis"
    return f"{what} {step.seconds:g}s" if step.seconds is not None else (f"{what} until resumed" if what == "pause" else what)


def rollout_summary(plan: RolloutPlan) -> str:
    """The effective steps a new revision goes through, one line: ``canary: setWeight 5, analysis 300s, ...``."""
    steps = ", ".join(_step_text(step) for step in plan.steps) or "switched at once once ready, no analysis"
    return f"{plan.strategy}: {steps}, then the switch" if plan.steps else f"{plan.strategy}: {steps}"


def effective_rollouts(documents: Iterable[dict[str, Any]], namespace: str = "default") -> dict[str, str]:
    """For each valid LLMDeployment in ``documents`` ("namespace/name"), the steps a new revision of it would go
    through (:func:`rollout_summary`): the written ones, or the default canary, with the analyses the operator adds."""
    out = {}
    for doc in documents:
        if not doc or doc.get("apiVersion") != API_VERSION or doc.get("kind") != "LLMDeployment":
            continue
        body = {**doc, "metadata": {"namespace": namespace, **doc.get("metadata", {})}}
        try:
            spec = parse_llmdeployment(body)
        except InvalidSpec:
            continue
        plan = plan_rollout(LLMRolloutSpec.model_validate({"deploymentName": "x", "target": {"model": {"uri": "hf://new/revision"}}}), spec.rollout)
        out[f"{body['metadata']['namespace']}/{body['metadata']['name']}"] = rollout_summary(plan)
    return out
