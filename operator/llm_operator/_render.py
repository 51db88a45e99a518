"""``llm-operator render``: the objects the operator would apply, computed with no cluster."""

from __future__ import annotations

import datetime
from collections.abc import Iterable
from typing import Any

from ._api import API_VERSION
from ._planner import Apply, Observed, plan_llmdeployment
from ._validation import InvalidSpec, parse_llmdeployment, parse_llmrollout


def render(documents: Iterable[dict[str, Any]], namespace: str = "default") -> list[dict[str, Any]]:
    """Children of every LLMDeployment in ``documents``, as a fresh cluster would get them on the first
    reconcile (before the API server assigns the owner's uid, so without ownerReferences).

    LLMRollouts are validated; they change existing objects and render nothing on their own.

    Raises:
        InvalidSpec: for the first custom resource that cannot be acted on, naming its fields.
    """
    now = datetime.datetime.now(tz=datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    out: list[dict[str, Any]] = []
    for doc in documents:
        if not doc or doc.get("apiVersion") != API_VERSION:
            continue
        body = {**doc, "metadata": {"namespace": namespace, **doc.get("metadata", {})}}
        where = f"{doc.get('kind')} {body['metadata']['namespace']}/{body['metadata'].get('name')}"
        if doc.get("kind") == "LLMDeployment":
            try:
                parse_llmdeployment(body)
            except InvalidSpec as error:
                raise InvalidSpec([type(e)(f"{where}: {e.path}", e.message) for e in error.errors]) from None
            plan = plan_llmdeployment(body, Observed(), now, autoscaler_kinds=frozenset({"HorizontalPodAutoscaler", "ScaledObject"}))
            out += [action.obj for action in plan.actions if isinstance(action, Apply)]
        elif doc.get("kind") == "LLMRollout":
            try:
                parse_llmrollout(body)
            except InvalidSpec as error:
                raise InvalidSpec([type(e)(f"{where}: {e.path}", e.message) for e in error.errors]) from None
    return out
