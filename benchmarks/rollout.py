"""Rollout benchmark: how fast a breach is acted on, how often a healthy canary is wrongly aborted, and what an
idle analysis tick costs in API writes. On the real control plane (the revisions' pods on kwok CPU nodes), with the
operator process under its own ServiceAccount, Debian's Prometheus scraping every second, and stand-in vLLM metric
endpoints; writes are counted from kube-apiserver's audit log.

    PYTHONPATH=sandbox:. .venv/bin/python benchmarks/rollout.py [--detections 5] [--bakes 3] [--fail-fast 5] [--healthy 50]

Figures (seconds are wall-clock on the machine it runs on):

* detection: from the first moment Prometheus itself reports the canary's error ratio above the SLO budget to
  the moment the VirtualService sends the canary 0%; target: one analysis interval + 5 s;
* bake rollback: a revision that fails only after the switch, in its bake: from the breach visible in Prometheus
  to the Service clients call selecting the previous revision again; target: one analysis interval + 5 s;
* fail fast: a canary whose analysis runs a minute apart (``interval: 60s``) starts failing half its requests:
  from the first moment Prometheus reports its error ratio over the guard's window above the hard-breach bound
  (10x the error budget) to the canary's weight at 0; target: two scrape intervals (2 s at this 1 s scrape);
* false aborts: healthy canaries (0 errors, steady latency) rolled out concurrently, the guard on; target: 0;
* idle writes: API writes the operator makes in the passes between two analysis runs; target: 0.
"""

from __future__ import annotations

import argparse
import json
import pathlib
import statistics
import sys
import tempfile
import time
from dataclasses import replace

import yaml

from llm_sandbox.cluster import ROOT, Operator, start_cluster, wait_for
from llm_sandbox.controlplane import DEFAULT_POOLS
from llm_sandbox.metrics import FakeVllm, Prometheus

INTERVAL = 5  # analysis interval, seconds


SCRAPE = 1  # Prometheus's scrape interval here, seconds
FAIL_FAST = {"interval": f"{SCRAPE}s", "window": "10s"}  # the guard at every scrape, over ten of them


def deployment(name: str, steps: list[dict], bake: str = "0s", interval: int = INTERVAL) -> dict:
    doc = yaml.safe_load((ROOT / "samples" / "llmdeployment-cpu.yaml").read_text())
    doc["metadata"] = {"name": name}
    doc["spec"]["replicas"] = 2
    doc["spec"]["slo"] = {"availability": 99.0, "latencyP99Seconds": 2.0}
    doc["spec"]["rollout"] = {"steps": steps, "scaleDownDelaySeconds": 0, "abortScaleDownDelaySeconds": 0, "bakeDuration": bake,
                              "analysis": {"interval": f"{interval}s", "minRequests": 10, "inconclusiveLimit": 5,
                                           "failFast": FAIL_FAST}}
    return doc


class Bench:
    def __init__(self, workdir: pathlib.Path, concurrent: int = 20):
        # ``concurrent`` rollouts of the CPU sample (2 replicas x 4 CPUs, plus a canary of up to 2) need more than the
        # default two 32-core kwok nodes: the real scheduler would leave them Pending.
        nodes = max(2, -(-concurrent * 16 // 32) + 2)
        pools = tuple(replace(p, count=nodes) if p.name == "cpu" else p for p in DEFAULT_POOLS)
        self.api = start_cluster(workdir / "cluster", pools=pools)
        (workdir / "prom").mkdir()
        self.prometheus = Prometheus(workdir / "prom").start()
        self.operator = Operator(self.api.operator_kubeconfig(), workdir / "operator.log", resync_seconds=1.0, verbose=False,
                                 env={"LLMOPS_PROMETHEUS_URL": self.prometheus.url}).start()
        self.exporters: list[FakeVllm] = []

    def serve(self, namespace: str, name: str, revision: str, **behaviour) -> FakeVllm:
        exporter = FakeVllm(rate=40, latency=0.4, **behaviour).start()
        self.exporters.append(exporter)
        self.prometheus.add_target(exporter.port, namespace=namespace, llmops_dev_deployment=name, llmops_dev_revision=revision)
        return exporter

    def ready_deployment(self, namespace: str, name: str, steps: list[dict], bake: str = "0s", interval: int = INTERVAL) -> str:
        self.api.namespace(namespace)
        self.api.create(deployment(name, steps, bake, interval), namespace)
        status = wait_for(lambda: (s := (self.api.get("llmops.dev/v1alpha1", "LLMDeployment", namespace, name) or {}).get("status", {}))
                          .get("readyReplicas") == 2 and s, 60, "stable ready")
        self.serve(namespace, name, status["stableRevision"], seed=hash(namespace) % 1000)
        return status["stableRevision"]

    def start_rollout(self, namespace: str, name: str) -> str:
        self.api.create({"apiVersion": "llmops.dev/v1alpha1", "kind": "LLMRollout", "metadata": {"name": "next"},
                         "spec": {"deploymentName": name, "target": {"model": {"uri": "hf://org/next"}}}}, namespace)
        return wait_for(lambda: self.rollout(namespace).get("toRevision"), 60, "rollout started")

    def rollout(self, namespace: str) -> dict:
        return (self.api.get("llmops.dev/v1alpha1", "LLMRollout", namespace, "next") or {}).get("status") or {}

    def canary_weight(self, namespace: str, name: str) -> int:
        vs = self.api.get("networking.istio.io/v1", "VirtualService", namespace, name)
        primary = next(h for h in vs["spec"]["http"] if h["name"] == "primary")
        return next(r["weight"] for r in primary["route"] if r["destination"]["host"].split(".")[0] == f"{name}-canary")

    def close(self) -> None:
        for exporter in self.exporters:
            exporter.stop()
        self.operator.stop()
        self.prometheus.stop()
        self.api.plane.stop()


def _breach(bench: Bench, namespace: str, name: str, target: str, canary: FakeVllm, error_ratio: float, window: str,
            bound: float) -> dict:
    """Make ``canary`` fail ``error_ratio`` of its requests; time from then, and from the first moment Prometheus
    answers its error ratio over ``window`` above ``bound``, to the VirtualService giving it 0%."""
    canary.error_ratio = error_ratio
    injected = time.monotonic()
    scope = f'namespace="{namespace}",llmops_dev_revision="{target}"'
    ratio = (f'sum(increase(vllm:request_success_total{{{scope},finished_reason="error"}}[{window}]))'
             f' / sum(increase(vllm:request_success_total{{{scope}}}[{window}]))')
    visible = None
    while time.monotonic() - injected < 120:
        now = time.monotonic()
        if visible is None:
            result = bench.prometheus.query(ratio)
            if result and float(result[0]["value"][1]) > bound:
                visible = time.monotonic()  # when Prometheus answered with the breach
        if bench.canary_weight(namespace, name) == 0:
            zero = now
            break
        time.sleep(0.05)
    else:
        raise RuntimeError("the canary was never taken out of traffic")
    canary.stop()
    status = bench.rollout(namespace)
    return {"visible_after_injection": round((visible or zero) - injected, 2), "zero_after_visible": round(zero - (visible or zero), 2),
            "phase": status.get("phase"), "reason": next((c["reason"] for c in status.get("conditions", []) if c["type"] == "Degraded"), None)}


def detection(bench: Bench, run: int) -> dict:
    namespace, name = f"detect-{run}", "chat"
    bench.ready_deployment(namespace, name, [{"setWeight": 20}, {"analysis": {"duration": "10m"}}])
    target = bench.start_rollout(namespace, name)
    canary = bench.serve(namespace, name, target, seed=run)
    wait_for(lambda: (bench.rollout(namespace).get("analysis") or {}).get("passed", 0) >= 2, 120, "two passing runs")
    return _breach(bench, namespace, name, target, canary, 0.3, "10s", 0.01)


def bake_rollback(bench: Bench, run: int) -> dict:
    """A revision healthy through its canary, switched, then failing in its bake: from the first moment Prometheus
    answers its error ratio above the budget to the Service clients call selecting the previous revision again."""
    namespace, name = f"bake-{run}", "chat"
    previous = bench.ready_deployment(namespace, name, [{"setWeight": 50}, {"analysis": {"duration": "6s"}}], bake="10m")
    target = bench.start_rollout(namespace, name)
    new = bench.serve(namespace, name, target, seed=100 + run)
    wait_for(lambda: (r := bench.rollout(namespace)).get("bake") and (r.get("analysis") or {}).get("passed", 0) >= 1, 180,
             "a passing run in the bake")
    new.error_ratio = 0.3
    injected = time.monotonic()
    scope = f'namespace="{namespace}",llmops_dev_revision="{target}"'
    ratio = (f'sum(increase(vllm:request_success_total{{{scope},finished_reason="error"}}[10s]))'
             f' / sum(increase(vllm:request_success_total{{{scope}}}[10s]))')
    visible = back = None
    while time.monotonic() - injected < 120:
        now = time.monotonic()
        if visible is None:
            result = bench.prometheus.query(ratio)
            if result and float(result[0]["value"][1]) > 0.01:
                visible = time.monotonic()
        service = bench.api.get("v1", "Service", namespace, name)
        if service["spec"]["selector"]["llmops.dev/revision"] == previous:
            back = now
            break
        time.sleep(0.05)
    else:
        raise RuntimeError("the bake never rolled back")
    new.stop()
    status = bench.rollout(namespace)
    return {"visible_after_injection": round((visible or back) - injected, 2), "back_after_visible": round(back - (visible or back), 2),
            "phase": status.get("phase"), "reason": next((c["reason"] for c in status.get("conditions", []) if c["type"] == "Degraded"), None)}


def fail_fast(bench: Bench, run: int) -> dict:
    """A canary whose analysis runs a minute apart fails half its requests: from Prometheus answering its error
    ratio over the guard's window above the hard-breach bound (10x the 99% SLO's budget) to its weight at 0."""
    namespace, name = f"fast-{run}", "chat"
    bench.ready_deployment(namespace, name, [{"setWeight": 20}, {"analysis": {"duration": "10m"}}], interval=60)
    target = bench.start_rollout(namespace, name)
    canary = bench.serve(namespace, name, target, seed=200 + run)
    wait_for(lambda: bench.canary_weight(namespace, name) == 20, 120, "the canary at 20%")
    time.sleep(3.0)  # a few healthy guard passes first
    assert bench.rollout(namespace).get("phase") == "Progressing", bench.rollout(namespace)
    return _breach(bench, namespace, name, target, canary, 0.5, FAIL_FAST["window"], 10 * 0.01)


def healthy_rollouts(bench: Bench, count: int) -> dict:
    namespaces = [f"healthy-{i}" for i in range(count)]
    steps = [{"setWeight": 25}, {"analysis": {"duration": "10s"}}, {"setWeight": 50}, {"analysis": {"duration": "10s"}}]
    for namespace in namespaces:
        bench.ready_deployment(namespace, "chat", steps)
    started = time.monotonic()
    for namespace in namespaces:
        target = bench.start_rollout(namespace, "chat")
        bench.serve(namespace, "chat", target, seed=hash(namespace) % 997)
    phases = wait_for(lambda: (p := [bench.rollout(ns).get("phase") for ns in namespaces]) and
                      all(x in ("Succeeded", "Aborted", "Failed") for x in p) and p, 300, "all healthy rollouts")
    return {"rollouts": count, "succeeded": phases.count("Succeeded"), "false_aborts": count - phases.count("Succeeded"),
            "seconds_for_all": round(time.monotonic() - started, 1)}


def idle_writes(bench: Bench) -> dict:
    namespace, name = "idle", "chat"
    bench.ready_deployment(namespace, name, [{"setWeight": 20}, {"analysis": {"duration": "10m"}}])
    target = bench.start_rollout(namespace, name)
    bench.serve(namespace, name, target, seed=7)
    wait_for(lambda: (bench.rollout(namespace).get("analysis") or {}).get("runs", 0) >= 1, 120, "a first run")
    measured, overlapped = [], 0
    while len(measured) < 3 and overlapped < 10:
        runs = bench.rollout(namespace)["analysis"]["runs"]
        wait_for(lambda runs=runs: bench.rollout(namespace)["analysis"]["runs"] > runs, 30, "the next run")
        time.sleep(1.0)  # just after a run: the passes until the next one are idle ticks
        start, runs = len(bench.api.requests()), bench.rollout(namespace)["analysis"]["runs"]
        time.sleep(INTERVAL - 2.0)
        if bench.rollout(namespace)["analysis"]["runs"] != runs:  # the next run fell inside (a busy machine): not idle
            overlapped += 1
            continue
        reads = bench.api.operator_reads_of(f"/namespaces/{namespace}/llmdeployments/{name}", start)
        writes = [w for w in bench.api.operator_writes(start) if f"/namespaces/{namespace}/" in w]
        measured.append({"passes": reads, "writes": len(writes)})
    passes, writes = sum(m["passes"] for m in measured), sum(m["writes"] for m in measured)
    return {"windows": measured, "windows_with_a_run_inside": overlapped, "writes_per_idle_pass": writes / max(1, passes)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--detections", type=int, default=5)
    parser.add_argument("--healthy", type=int, default=50)
    parser.add_argument("--bakes", type=int, default=3)
    parser.add_argument("--fail-fast", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        bench = Bench(pathlib.Path(tmp), concurrent=args.healthy)
        try:
            results = {"analysis_interval_seconds": INTERVAL, "prometheus_scrape_seconds": SCRAPE, "fail_fast_settings": FAIL_FAST}
            detections = [detection(bench, i) for i in range(args.detections)]
            delays = [d["zero_after_visible"] for d in detections]
            results["detection"] = {"runs": detections, "median_seconds": statistics.median(delays), "max_seconds": max(delays),
                                    "target_seconds": INTERVAL + 5, "all_within_target": max(delays) <= INTERVAL + 5}
            bakes = [bake_rollback(bench, i) for i in range(args.bakes)]
            back = [b["back_after_visible"] for b in bakes] or [0.0]
            results["bake_rollback"] = {"runs": bakes, "median_seconds": statistics.median(back), "max_seconds": max(back),
                                        "target_seconds": INTERVAL + 5, "all_within_target": max(back) <= INTERVAL + 5}
            fast = [fail_fast(bench, i) for i in range(args.fail_fast)]
            zero = [f["zero_after_visible"] for f in fast] or [0.0]
            results["fail_fast"] = {"runs": fast, "analysis_interval_seconds": 60, "median_seconds": statistics.median(zero),
                                    "max_seconds": max(zero), "target_seconds": 2 * SCRAPE,
                                    "all_within_target": max(zero) <= 2 * SCRAPE}
            results["healthy"] = healthy_rollouts(bench, args.healthy)
            results["idle"] = idle_writes(bench)
        finally:
            bench.close()
    print(json.dumps(results, indent=2))
    ok = (results["detection"]["all_within_target"] and results["bake_rollback"]["all_within_target"]
          and results["fail_fast"]["all_within_target"]
          and results["healthy"]["false_aborts"] == 0 and results["idle"]["writes_per_idle_pass"] == 0)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    sys.exit(main())
