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
rollback    (of an LLMDeployment) create an LLMRollout back to the previous stable revision, or ``--to-revision``
==========  ==================================================================================================
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Mapping
from typing import Any

from ._api import API_VERSION
from ._vocabulary import TERMINAL, Phase

ACTIONS = ("promote", "abort", "pause", "resume", "retry")


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
        if phase not in (Phase.ABORTED, Phase.FAILED):
            raise ActionError(f"llmrollout {name} is {phase or 'not started'}; only an Aborted or Failed rollout can be retried")
        return {"spec": {"retry": int(spec.get("retry") or 0) + 1, "abort": False}}
    if phase in TERMINAL:
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
        if phase != Phase.PAUSED:
            raise ActionError(f"llmrollout {name} is {phase or 'not started'}, not paused")
        return {"spec": {"resume": int(spec.get("resume") or 0) + 1}}
    raise ActionError(f"unknown action {action!r}; use one of {', '.join(ACTIONS)}")


def rollback_rollout(deployment: Mapping[str, Any], rollouts: list[Mapping[str, Any]], to_revision: str | None = None,
                     *, canary: bool = False) -> dict[str, Any]:
    """The LLMRollout that takes ``deployment`` (an LLMDeployment as read) back to an earlier revision.

    The revision is ``to_revision``, or the previous stable one: ``status.previousRevision`` while its pods are
    kept (``scaleDownDelaySeconds``), else the ``fromRevision`` of the last LLMRollout that succeeded. Its model and
    runtime are those of the LLMRollout that once made it stable (``rollouts``: the LLMRollouts naming the
    deployment, kept by ``spec.rollout.historyLimit``); a revision that was never rolled out (the first one) is
    taken from ``status.revisions`` with the deployment's runtime. The previous revision's pods, when still there,
    become the new revision's (no new pods, no model download: the revision ids match). The rollback switches at
    once when the pods are ready (``strategy: none``: it goes back to what served before); ``canary`` makes it go
    through the deployment's steps and analysis instead.

    An MLflow-followed deployment's alias is left where it is: the rollback serves the older version, the
    registry gets the outcome on that version (and ``promoteAlias`` follows it), and ``Degraded`` says the spec's
    version does not serve until the alias is moved back (or forward to a fixed version).

    Raises:
        ActionError: a rollout is in flight (abort it instead), or no earlier revision is known.
    """
    meta, status = deployment["metadata"], deployment.get("status") or {}
    name = meta["name"]
    running = [r for r in rollouts if (r.get("status") or {}).get("phase") not in TERMINAL and not r["metadata"].get("deletionTimestamp")]
    if running:
        name_ = running[0]["metadata"]["name"]
        if (running[0].get("status") or {}).get("bake"):
            raise ActionError(f"llmrollout {name_} is baking; abort it instead (kubectl llm abort {name_}): that rolls back "
                              f"to {(running[0]['status']['bake'] or {}).get('previousRevision')}, whose pods are still up")
        raise ActionError(f"llmrollout {name_} is in flight; abort it instead (kubectl llm abort {name_}): stable never "
                          "stopped serving")
    stable = status.get("stableRevision")
    succeeded = sorted((r for r in rollouts if (r.get("status") or {}).get("phase") == Phase.SUCCEEDED),
                       key=lambda r: ((r.get("status") or {}).get("finishedAt") or "", r["metadata"]["name"]))
    target_revision = to_revision or status.get("previousRevision") or next(
        (r["status"].get("fromRevision") for r in reversed(succeeded) if r["status"].get("fromRevision") != stable), None)
    if not target_revision:
        raise ActionError(f"llmdeployment {name} has no earlier revision to go back to (none is recorded in its status or "
                          "its LLMRollouts); name one with --to-revision")
    if target_revision == stable:
        raise ActionError(f"revision {target_revision} is already stable for llmdeployment {name}")
    made = [r for r in reversed(succeeded) if r["status"].get("toRevision") == target_revision]
    if made:
        target = dict((made[0].get("spec") or {}).get("target") or {})
    else:
        entry: Mapping[str, Any] = next((r for r in status.get("revisions") or [] if r.get("revision") == target_revision), {})
        uri, first = entry.get("modelUri"), status.get("model") or {}
        if uri is None:
            raise ActionError(f"revision {target_revision} of llmdeployment {name} is not known: it is neither in its status "
                              "nor the target of a kept LLMRollout")
        # An MLflow revision (models:/<name>/<version>) is rolled back to by its version: a target URI must be storage.
        version = entry.get("modelVersion") or (first.get("version") if first.get("uri") == uri and first.get("source") == "mlflow"
                                                 else None)
        target = {"model": {"version": version} if version else {"uri": uri}}
    taken = {r["metadata"]["name"] for r in rollouts}
    base = f"{name}-rollback-{target_revision}"[:253]
    rollout_name = next(n for n in (base, *(f"{base}-{i}" for i in range(2, 1000))) if n not in taken)
    spec: dict[str, Any] = {"deploymentName": name, "target": target}
    if not canary:
        spec["strategy"] = "none"
    return {"apiVersion": API_VERSION, "kind": "LLMRollout",
            "metadata": {"name": rollout_name, "namespace": meta.get("namespace"),
                         "labels": {"llmops.dev/deployment": name, "llmops.dev/rollback-to": target_revision}},
            "spec": spec}


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
        f"Phase:       {status.get('phase') or Phase.PENDING}" + (f"   {status['message']}" if status.get("message") else ""),
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
    parser.add_argument("action", choices=("get", *ACTIONS, "rollback"))
    parser.add_argument("name", help="the LLMRollout (rollback: the LLMDeployment)")
    parser.add_argument("--to-revision", help="rollback: the revision to go back to (default: the previous stable one)")
    parser.add_argument("--canary", action="store_true", help="rollback: through the deployment's steps and analysis")
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
    if args.action == "rollback":
        return _rollback(client, resource, namespace, args)
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


def _rollback(client: Any, rollouts: Any, namespace: str, args: argparse.Namespace) -> int:
    import kubernetes

    try:
        deployment = client.resources.get(api_version=API_VERSION, kind="LLMDeployment").get(name=args.name, namespace=namespace).to_dict()
    except kubernetes.dynamic.exceptions.NotFoundError:
        print(f"error: llmdeployment {args.name!r} not found in namespace {namespace!r}", file=sys.stderr)
        return 1
    mine = [r for r in rollouts.get(namespace=namespace).to_dict()["items"] if (r.get("spec") or {}).get("deploymentName") == args.name]
    try:
        rollout = rollback_rollout(deployment, mine, args.to_revision, canary=args.canary)
    except ActionError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    rollouts.create(body=rollout, namespace=namespace)
    how = "through its steps" if args.canary else "at once when its pods are ready"
    print(f"llmrollout.llmops.dev/{rollout['metadata']['name']} created: llmdeployment {args.name} goes back to revision "
          f"{rollout['metadata']['labels']['llmops.dev/rollback-to']} {how}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
