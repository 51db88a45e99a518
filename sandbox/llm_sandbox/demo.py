"""``make demo``: the operator reconciling samples/ against the local API endpoint, start to finish.

What is real: the operator process (``llm-operator run``, exactly as in a cluster), the CRDs from crds/,
the samples, every object the operator writes, and the API traffic it makes. What stands in for a cluster:
the API server (kmock's emulator, extended in ``apiserver.py``) and the kubelets (``kubelet.py`` marks
Deployments ready after a simulated model load; no vLLM runs in this demo).
"""

from __future__ import annotations

import argparse
import pathlib
import sys
import time
from typing import Any

import yaml

from .cluster import ROOT, LocalApi, Operator, crd_files, wait_for
from .kubelet import FakeKubelet
from .table import render_table, table

LLMD = ("llmops.dev/v1alpha1", "LLMDeployment")
CHILDREN = [
    ("apps/v1", "Deployment"), ("v1", "Service"), ("networking.istio.io/v1", "DestinationRule"),
    ("networking.istio.io/v1", "VirtualService"), ("autoscaling/v2", "HorizontalPodAutoscaler"),
    ("keda.sh/v1alpha1", "ScaledObject"), ("policy/v1", "PodDisruptionBudget"),
]


def say(text: str = "") -> None:
    print(text, flush=True)


def step(text: str) -> None:
    say()
    say(f"==> {text}")


def _summary(kind: str, obj: dict[str, Any]) -> str:
    spec = obj.get("spec", {})
    if kind == "Deployment":
        container = spec["template"]["spec"]["containers"][0]
        gpus = container.get("resources", {}).get("limits", {}).get("nvidia.com/gpu", "0")
        args = container["args"]
        model = args[args.index("--model") + 1]
        return f"replicas={spec.get('replicas')} gpus/pod={gpus} model={model} tp={args[args.index('--tensor-parallel-size') + 1]}"
    if kind == "VirtualService":
        routes = spec["http"][0]["route"]
        return "weights " + " ".join(f"{r['destination']['subset']}={r['weight']}" for r in routes) + f" hosts={','.join(spec['hosts'])}"
    if kind == "DestinationRule":
        return "subsets " + " ".join(f"{s['name']}->{s['labels']['llmops.dev/revision']}" for s in spec["subsets"])
    if kind == "HorizontalPodAutoscaler":
        metric = spec["metrics"][0]["pods"]
        return f"{spec['minReplicas']}..{spec['maxReplicas']} on {metric['metric']['name']} avg {metric['target']['averageValue']}"
    if kind == "ScaledObject":
        return f"{spec['minReplicaCount']}..{spec['maxReplicaCount']} on prometheus: {spec['triggers'][0]['metadata']['query']}"
    if kind == "PodDisruptionBudget":
        return f"maxUnavailable={spec['maxUnavailable']}"
    if kind == "Service":
        return f"port {spec['ports'][0]['port']} -> {spec['ports'][0]['targetPort']}"
    return ""


def run(workdir: pathlib.Path, load_seconds: float) -> int:
    workdir.mkdir(parents=True, exist_ok=True)
    log_path = workdir / "operator.log"
    log_path.write_text("")
    step("Starting the local Kubernetes API endpoint (kmock's emulator) on loopback")
    api = LocalApi(workdir)
    say(f"    {api.url}   kubeconfig: {api.kubeconfig}")
    operator = kubelet = None
    try:
        step("kubectl apply -f crds/")
        crds = {}
        for path in crd_files():
            for crd in api.apply_file(path):
                crds[crd["spec"]["names"]["kind"]] = crd
                say(f"    customresourcedefinition/{crd['metadata']['name']} created")

        step(f"Starting the operator: llm-operator run --kubeconfig {api.kubeconfig}   (log: {log_path})")
        operator = Operator(api.kubeconfig, log_path, resync_seconds=2.0, verbose=False).start()
        kubelet = FakeKubelet(api.client, load_seconds=load_seconds).start()

        step("kubectl apply -f samples/")
        applied = []
        for path in sorted((ROOT / "samples").glob("*.yaml")):
            for doc in yaml.safe_load_all(path.read_text()):
                if doc:
                    api.create(doc)
                    applied.append(doc)
                    say(f"    {doc['kind'].lower()}.llmops.dev/{doc['metadata']['name']} created  ({path.name})")
        llmds = [(d["metadata"]["namespace"], d["metadata"]["name"]) for d in applied if d["kind"] == "LLMDeployment"]

        def status(ns: str, name: str) -> dict[str, Any]:
            return (api.get(*LLMD, ns, name) or {}).get("status") or {}

        wait_for(lambda: all(status(ns, n).get("observedGeneration") == 1 for ns, n in llmds), 60, "first reconcile")
        step("What the operator created (the children of each LLMDeployment)")
        for ns, name in llmds:
            say(f"  {ns}/{name}")
            rows = []
            for api_version, kind in CHILDREN:
                for obj in api.list(api_version, kind, ns, f"llmops.dev/deployment={name}"):
                    rows.append([f"{kind}/{obj['metadata']['name']}", _summary(kind, obj)])
            say("    " + render_table(rows, ["object", "what"]).replace("\n", "\n    "))

        step(f"Waiting for the replicas to become ready (the kubelet stand-in reports a {load_seconds:.0f}s model load)")
        say("    kubectl get llmd -A")
        objects = [api.get(*LLMD, ns, n) for ns, n in llmds]
        say("    " + table(crds["LLMDeployment"], objects, namespaces=True).replace("\n", "\n    "))
        ready = lambda ns, n: any(c["type"] == "Ready" and c["status"] == "True" for c in status(ns, n).get("conditions", []))
        wait_for(lambda: all(ready(ns, n) for ns, n in llmds), 90, "every LLMDeployment Ready")
        say()
        say("    kubectl get llmd -A -o wide")
        objects = [api.get(*LLMD, ns, n) for ns, n in llmds]
        say("    " + table(crds["LLMDeployment"], objects, wide=True, namespaces=True).replace("\n", "\n    "))
        say()
        say("    kubectl get llmro -A")
        rollouts = [api.get("llmops.dev/v1alpha1", "LLMRollout", d["metadata"]["namespace"], d["metadata"]["name"])
                    for d in applied if d["kind"] == "LLMRollout"]
        say("    " + table(crds["LLMRollout"], rollouts, namespaces=True).replace("\n", "\n    "))
        say("    (LLMRollouts are validated and stored; the rollout engine that drives them is the next milestone.)")

        step("An edit that cannot work: tensorParallelSize 3 on 4 GPUs (llm-serving/llama-70b)")
        api.patch(*LLMD, "llm-serving", "llama-70b", {"spec": {"runtime": {"tensorParallelSize": 3}}})
        degraded = lambda: next((c for c in status("llm-serving", "llama-70b").get("conditions", [])
                                 if c["type"] == "Degraded" and c["reason"] == "InvalidSpec"), None)
        condition = wait_for(degraded, 30, "Degraded/InvalidSpec")
        say(f"    condition Degraded=True reason={condition['reason']}: {condition['message']}")
        events = [e for e in api.list("v1", "Event", "llm-serving") if e["reason"] == "InvalidSpec"]
        say(f"    event {events[-1]['type']} {events[-1]['reason']}: {events[-1]['message']}")
        deployments = api.list("apps/v1", "Deployment", "llm-serving", "llmops.dev/deployment=llama-70b")
        say(f"    children untouched: {[d['metadata']['name'] for d in deployments]} still serving")
        api.patch(*LLMD, "llm-serving", "llama-70b", {"spec": {"runtime": {"tensorParallelSize": 4}}})
        wait_for(lambda: not degraded(), 30, "recovery")
        say("    fixed the spec: Degraded=False again")

        step("Idle: how many writes does the operator make when nothing changes?")
        start = len(api.requests())
        wait_for(lambda: api.operator_reads_of("/llmdeployments/qwen-small", start) >= 3, 30, "three resync passes")
        reads = sum(1 for r in api.requests()[start:] if r.method == "GET" and r.user_agent != "llmops-sandbox-client")
        writes = api.operator_writes(start)
        say(f"    three resync passes over {len(llmds)} LLMDeployments: {reads} reads, {len(writes)} writes")
        step("Done. The operator log is in " + str(log_path))
        return 0 if not writes else 1
    finally:
        if kubelet:
            kubelet.stop()
        if operator:
            operator.stop()
        api.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", default=str(ROOT / ".sandbox"), help="where the kubeconfig and logs go")
    parser.add_argument("--load-seconds", type=float, default=3.0, help="simulated model load time")
    args = parser.parse_args()
    started = time.monotonic()
    code = run(pathlib.Path(args.workdir), args.load_seconds)
    say(f"    ({time.monotonic() - started:.0f}s)")
    sys.exit(code)


if __name__ == "__main__":
    main()
