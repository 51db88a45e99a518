"""Scale benchmark: N LLMDeployments on the real control plane, one operator process under its own ServiceAccount.

    PYTHONPATH=sandbox:. .venv/bin/python benchmarks/scale.py --objects 300 [--workers 8] [--resync 60] [--edits 20]

Figures (wall-clock seconds on the machine it runs on):

* converge: from the first create to every LLMDeployment Ready (the revisions' pods scheduled by kube-scheduler,
  run by kwok on CPU nodes), and the share Ready at 10 minutes when that is reached first;
* requests and writes per object: the operator's requests in kube-apiserver's audit log until converged, divided
  by N (writes: create, update, patch, delete; Events among them);
* spec edit latency: once converged, ``--edits`` objects get a new model URI at once; per object, the time from the
  patch to ``status.observedGeneration`` 2 (written in the pass that applies the new revision's Deployment);
* idle writes: the operator's writes during one resync interval (``--idle-window``) after the edits settled
  (target: 0);
* the operator's resident memory (``VmRSS``) when converged and at the end, and its work queue's figures from its
  own metrics (``llmops_workqueue_queue_duration_seconds``).
"""

from __future__ import annotations

import argparse
import collections
import json
import math
import pathlib
import statistics
import tempfile
import time
import urllib.request
from dataclasses import replace

from llm_sandbox.cluster import OPERATOR_USER, Operator, start_cluster, wait_for
from llm_sandbox.controlplane import DEFAULT_POOLS, free_port

PER_NAMESPACE = 50
LLMD = "llmops.dev/v1alpha1"


def llmd(name: str) -> dict:
    return {"apiVersion": LLMD, "kind": "LLMDeployment", "metadata": {"name": name},
            "spec": {"model": {"uri": f"hf://org/{name}"}, "runtime": {"maxModelLen": 2048},
                     "resources": {"gpus": 0, "cpu": "100m", "memory": "256Mi"}, "replicas": 1,
                     "rollout": {"strategy": "none", "scaleDownDelaySeconds": 0}}}


def rss_mb(pid: int) -> float:
    for line in pathlib.Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return round(int(line.split()[1]) / 1024, 1)
    return float("nan")


def histogram(text: str, name: str) -> dict[str, float]:
    """count, sum and the p50/p99 bucket bounds of a prometheus_client histogram in ``text``."""
    buckets, count, total = [], 0.0, 0.0
    for line in text.splitlines():
        if line.startswith(f"{name}_bucket"):
            le = line.split('le="')[1].split('"')[0]
            buckets.append((float("inf") if le == "+Inf" else float(le), float(line.rsplit(" ", 1)[1])))
        elif line.startswith(f"{name}_count"):
            count = float(line.rsplit(" ", 1)[1])
        elif line.startswith(f"{name}_sum"):
            total = float(line.rsplit(" ", 1)[1])

    def bound(q: float) -> float:
        return next((le for le, c in buckets if c >= q * count), float("inf"))
    return {"count": count, "mean": round(total / count, 4) if count else 0.0, "p50_le": bound(0.5), "p99_le": bound(0.99)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--objects", type=int, default=300)
    parser.add_argument("--workers", type=int, default=8)
    parser.add_argument("--resync", type=float, default=60.0)
    parser.add_argument("--edits", type=int, default=20)
    parser.add_argument("--timeout", type=float, default=600.0)
    parser.add_argument("--idle-window", type=float, help="seconds the idle writes are counted over (default: one resync)")
    args = parser.parse_args()
    n = args.objects
    namespaces = [f"scale-{i}" for i in range(math.ceil(n / PER_NAMESPACE))]
    names = [(namespaces[i // PER_NAMESPACE], f"m{i:04d}") for i in range(n)]
    # 100 pods a CPU node (110 allowed), plus room for the edits' new revisions
    pools = tuple(replace(p, count=math.ceil((n + args.edits) / 100) + 1) if p.name == "cpu" else p for p in DEFAULT_POOLS)
    with tempfile.TemporaryDirectory(prefix="llmops-scale-") as tmp:
        work = pathlib.Path(tmp)
        api = start_cluster(work / "cluster", pools=pools)
        metrics_port = free_port()
        operator = None
        try:
            for ns in namespaces:
                api.namespace(ns, model_store=False)
            since = len(api.requests())
            operator = Operator(api.operator_kubeconfig(), work / "operator.log", resync_seconds=args.resync, verbose=False,
                                args=["--workers", str(args.workers), "--metrics-port", str(metrics_port)]).start()
            rss_idle = None
            wait_for(lambda: _metrics(metrics_port), 60, "the operator's metrics")
            rss_idle = rss_mb(operator.process.pid)
            started = time.monotonic()
            for ns, name in names:
                api.create(llmd(name), ns)
            created_s = time.monotonic() - started
            ready_at: dict[tuple[str, str], float] = {}

            def ready() -> bool:
                for ns in namespaces:
                    for o in api.list(LLMD, "LLMDeployment", ns):
                        key = (ns, o["metadata"]["name"])
                        if key not in ready_at and any(c["type"] == "Ready" and c["status"] == "True"
                                                       for c in (o.get("status") or {}).get("conditions", [])):
                            ready_at[key] = time.monotonic() - started
                return len(ready_at) == n
            try:
                wait_for(ready, args.timeout, f"{n} LLMDeployments Ready", interval=2.0)
                converged = round(max(ready_at.values()), 1)
            except AssertionError:
                converged = None
            reads = [r for r in api.requests()[since:] if r.user == OPERATOR_USER]
            writes = [r for r in reads if r.write]
            rss_converged = rss_mb(operator.process.pid)

            # spec edits at scale, in the steady state: once the convergence's own backlog is worked off (the resync's
            # round, queued at low priority, may remain), all at once, each timed to its observedGeneration 2
            settle_from = time.monotonic()
            while time.monotonic() - settle_from < 300 and _gauge(_metrics(metrics_port), "llmops_workqueue_depth") > 50:
                time.sleep(2.0)  # polling the operator's own gauge (a figure, not a test)
            depth_at_edits = _gauge(_metrics(metrics_port), "llmops_workqueue_depth")
            settled_s = round(time.monotonic() - settle_from, 1)
            edited = names[:: max(1, n // args.edits)][: args.edits]
            done: dict[tuple[str, str], float] = {}
            t0 = time.monotonic()
            for ns, name in edited:
                api.patch(LLMD, "LLMDeployment", ns, name, {"spec": {"model": {"uri": f"hf://org/{name}-v2"}}})

            def edits_seen() -> bool:
                for ns, name in edited:
                    status = (api.get(LLMD, "LLMDeployment", ns, name) or {}).get("status") or {}
                    if (ns, name) not in done and status.get("observedGeneration") == 2:
                        done[(ns, name)] = time.monotonic() - t0
                return len(done) == len(edited)
            wait_for(edits_seen, args.timeout, "the edits' new generations observed", interval=0.2)
            latencies = sorted(done.values())
            wait_for(lambda: all((s := (api.get(LLMD, "LLMDeployment", ns, name) or {}).get("status") or {}).get("stableRevision")
                                 == s.get("specRevision") for ns, name in edited), args.timeout, "the edits stable", interval=1.0)
            # settled: the edited objects' old revisions deleted (strategy none, scaleDownDelaySeconds 0)
            wait_for(lambda: sum(len(api.list("apps/v1", "Deployment", ns)) for ns in namespaces) == n, args.timeout,
                     "one Deployment per object", interval=1.0)
            idle_from = len(api.requests())
            window = args.idle_window or args.resync + 2
            time.sleep(window)  # a measured window (one resync interval), not a wait for a condition
            idle_writes = [f"{r.verb} {r.path}" for r in api.requests()[idle_from:] if r.user == OPERATOR_USER and r.write]
            text = _metrics(metrics_port)
            figures = {
                "objects": n, "workers": args.workers, "resync_seconds": args.resync, "creates_seconds": round(created_s, 1),
                "converged_seconds": converged, "ready_at_timeout": len(ready_at),
                "ready_p50_seconds": round(statistics.median(ready_at.values()), 1) if ready_at else None,
                "requests_per_object": round(len(reads) / n, 1), "writes_per_object": round(len(writes) / n, 1),
                "events_per_object": round(sum(1 for r in writes if r.resource == "events") / n, 1),
                "requests_by_kind": dict(collections.Counter(f"{r.verb} {r.resource}{'/' + r.subresource if r.subresource else ''}"
                                                             for r in reads).most_common(12)),
                "queue_depth_at_edits": depth_at_edits, "settle_seconds": settled_s,
                "edit_latency_seconds": {"p50": round(statistics.median(latencies), 2), "max": round(latencies[-1], 2),
                                         "n": len(latencies)},
                "idle_window_seconds": window, "idle_writes": len(idle_writes), "idle_writes_sample": idle_writes[:5],
                "rss_mb": {"started": rss_idle, "converged": rss_converged, "end": rss_mb(operator.process.pid)},
                "queue_wait": histogram(text, "llmops_workqueue_queue_duration_seconds"),
                "pass_seconds": histogram(text, "llmops_reconcile_duration_seconds"),
            }
            print(json.dumps(figures, indent=2))
            return 0 if converged is not None and not idle_writes else 1
        finally:
            if operator:
                operator.stop()
            api.plane.stop()


def _gauge(text: str, name: str) -> float:
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    return float("inf")


def _metrics(port: int) -> str:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
            return response.read().decode()
    except OSError:
        return ""


if __name__ == "__main__":
    raise SystemExit(main())

