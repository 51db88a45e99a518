"""``kubectl llm``: a rollout at a glance, and the manual controls as patches of the LLMRollout's spec.

Every control is a change of ``spec`` (never of status), so it shows in ``git diff`` when the object is managed by
GitOps and survives an operator restart:

==========  ==================================================================================================
get         phase, step, weights, revisions, and the last analysis: each metric's value against its bounds
promote     ``spec.promote: true``: skip the remaining steps and switch
abort       ``spec.abort: true``: all traffic back to stable, then remove the new revision
pause       ``spec.paused: true``
resume      ``spec.paused: false`` when paused by hand; otherwise ``spec.resume`` + 1 (past ``pause: {}`` or an
            inconclusive analysis)
retry       ``spec.retry`` + 1: start an aborted or failed rollout again
==========  ==================================================================================================
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Mapping
from typing import Any

from ._api import API_VERSION

ACTIONS = ("promote", "abort", "pause", "resume", "retry")
FINISHED = ("Succeeded", "Aborted", "Failed")


class ActionError(Exception):
    """The action makes no sense for the rollout as it stands (the message says why)."""


def action_patch(action: str, rollout: Mapping[str, Any]) -> dict[str, Any]:
    """The merge patch of ``spec`` that carries out ``action`` on ``rollout``.

    Raises:
        ActionError: when the rollout's phase rules the action out (promoting a finished rollout, retrying one
            that did not fail...).
    """
    spec, status = rollout.get("spec") or {}, rollout.get("status") or {}
    phase = status.get("phase")
    name = rollout["metadata"]["name"]
    if action == "retry":
        if phase not in ("Aborted", "Failed"):
            raise ActionError(f"llmrollout {name} is {phase or 'not started'}; only an Aborted or Failed rollout can be retried")
        return {"spec": {"retry": int(spec.get("retry") or 0) + 1, "abort": False}}
    if phase in FINISHED:
        raise ActionError(f"llmrollout {name} is already {phase}; nothing to {action}")
    if action == "promote":
        return {"spec": {"promote": True, "paused": False}}
    if action == "abort":
        return {"spec": {"abort": True}}
    if action == "pause":
        if spec.get("paused"):
            raise ActionError(f"llmrollout {name} is already paused")
        return {"spec": {"paused": True}}
    if action == "resume":
        if spec.get("paused"):
            return {"spec": {"paused": False}}
        if phase != "Paused":
            raise ActionError(f"llmrollout {name} is {phase or 'not started'}, not paused")
        return {"spec": {"resume": int(spec.get("resume") or 0) + 1}}
    raise ActionError(f"unknown action {action!r}; use one of {', '.join(ACTIONS)}")


def _step_text(rollout: Mapping[str, Any]) -> str:
    status = rollout.get("status") or {}
    index, total = status.get("currentStepIndex"), status.get("stepsTotal")
    steps = (rollout.get("spec") or {}).get("steps")
    if index is None:
        return "-"
    if total is not None and index >= total:
        return f"{index}/{total} (all done)"
    here = ""
    if steps and index < len(steps):
        (kind, value), = steps[index].items()
        here = f" ({kind} {value})" if not isinstance(value, dict) else f" ({kind} {value.get('duration') or 'until resumed'})"
    return f"{index}/{total}{here}" if total is not None else str(index)


def _table(rows: list[list[str]], headers: list[str]) -> list[str]:
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(headers)]
    return ["   ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)).rstrip() for row in [headers, *rows]]


def describe(rollout: Mapping[str, Any]) -> str:
    """A human summary of an LLMRollout: where it stands and why."""
    meta, spec, status = rollout["metadata"], rollout.get("spec") or {}, rollout.get("status") or {}
    weight = status.get("canaryWeight") or 0
    lines = [
        f"Name:        {meta['name']}  (namespace {meta.get('namespace')})",
        f"Deployment:  {spec.get('deploymentName')}",
        f"Strategy:    {spec.get('strategy') or 'from the deployment template'}",
        f"Phase:       {status.get('phase') or 'Pending'}" + (f"   {status['message']}" if status.get("message") else ""),
        f"Revisions:   {status.get('fromRevision') or '-'} (stable) -> {status.get('toRevision') or '-'} (new)",
        f"Step:        {_step_text(rollout)}",
        f"Traffic:     stable {100 - weight}%  new {weight}%" + (f"  mirrored {status['mirrorWeight']}%" if status.get("mirrorWeight") else "")
        + ("  preview route on" if status.get("preview") else ""),
    ]
    controls = [k for k in ("paused", "abort", "promote") if spec.get(k)]
    if controls:
        lines.append(f"Controls:    {', '.join(controls)}")
    analysis = status.get("analysis") or {}
    if analysis:
        lines.append(f"Analysis:    {analysis.get('runs', 0)} runs, {analysis.get('passed', 0)} passed, last {analysis.get('verdict')} "
                     f"at {analysis.get('lastRunAt')}" + (f" on {analysis['requests']:.0f} requests" if analysis.get("requests") else ""))
        rows = [[m["name"], _num(m.get("value")), _num(m.get("min")), _num(m.get("max")), m["verdict"]] for m in analysis.get("metrics", [])]
        lines += ["  " + line for line in _table(rows, ["METRIC", "VALUE", "MIN", "MAX", "VERDICT"])]
    conditions = status.get("conditions") or []
    if conditions:
        lines.append("Conditions:")
        rows = [[c["type"], c["status"], c["reason"], c.get("message", "")[:100]] for c in conditions]
        lines += ["  " + line for line in _table(rows, ["TYPE", "STATUS", "REASON", "MESSAGE"])]
    return "\n".join(lines)


def _num(value: Any) -> str:
    return "-" if value is None else f"{value:.4g}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="kubectl llm", description="LLMRollouts at a glance, and their manual controls.")
    parser.add_argument("action", choices=("get", *ACTIONS))
    parser.add_argument("name", help="the LLMRollout")
    parser.add_argument("-n", "--namespace", help="default: the kubeconfig context's namespace")
    parser.add_argument("--kubeconfig", help="default: $KUBECONFIG or ~/.kube/config")
    args = parser.parse_args(argv)

    import kubernetes
    from kubernetes import dynamic

    try:
        _, current = kubernetes.config.list_kube_config_contexts(config_file=args.kubeconfig)
        namespace = args.namespace or (current or {}).get("context", {}).get("namespace") or "default"
        client = dynamic.DynamicClient(kubernetes.config.new_client_from_config(config_file=args.kubeconfig))
        resource = client.resources.get(api_version=API_VERSION, kind="LLMRollout")
    except Exception as error:
        print(f"error: cannot reach the cluster: {error}", file=sys.stderr)
        return 1
    try:
        rollout = resource.get(name=args.name, namespace=namespace).to_dict()
    except kubernetes.dynamic.exceptions.NotFoundError:
        print(f"error: llmrollout {args.name!r} not found in namespace {namespace!r}", file=sys.stderr)
        return 1
    if args.action == "get":
        print(describe(rollout))
        return 0
    try:
        patch = action_patch(args.action, rollout)
    except ActionError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    resource.patch(body=patch, name=args.name, namespace=namespace, content_type="application/merge-patch+json")
    done = {"promote": "promoted", "abort": "aborted", "pause": "paused", "resume": "resumed", "retry": "retried"}
    print(f"llmrollout.llmops.dev/{args.name} {done[args.action]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
