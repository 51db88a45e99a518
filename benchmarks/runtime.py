"""The serving entrypoint's start-up cost: vLLM started directly versus through ``llmops_runtime`` on the same
local model, and a warm cache versus a cold one (a download from a real MLflow server).

    .venv/bin/python benchmarks/runtime.py [--runs 1] [--vllm-python .venv-vllm/bin/python]

Time to ready is from process start to the first 200 from ``/health``. Target: the entrypoint adds under 5% to
vLLM's own start-up on a local model. One unmeasured warm-up start comes first (vLLM's CPU build compiles and
caches its kernels on the first start), and the order of the variants rotates from run to run.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "sandbox"))

from llm_sandbox.metrics import free_port  # noqa: E402
from llm_sandbox.registry import MlflowServer, register_version  # noqa: E402

ARGS = ["--served-model-name", "tiny", "--host", "127.0.0.1", "--dtype", "float32", "--max-model-len", "256",
        "--gpu-memory-utilization", "0.25"]


def time_to_ready(command: list[str], env: dict[str, str], port: int, log: pathlib.Path) -> float:
    started = time.monotonic()
    with open(log, "ab") as out:  # the child has its own copy of the descriptor
        process = subprocess.Popen(command, env={**os.environ, **env}, stdout=out, stderr=subprocess.STDOUT, cwd=ROOT / "runtime-image")
    try:
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"exited {process.returncode}; see {log}")
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2) as response:
                    if response.status == 200:
                        return time.monotonic() - started
            except OSError:
                time.sleep(0.2)
    finally:
        process.terminate()
        process.wait(timeout=60)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=1)
    parser.add_argument("--vllm-python", default=os.environ.get("LLMOPS_VLLM_PYTHON", str(ROOT / ".venv-vllm" / "bin" / "python")))
    args = parser.parse_args()
    args.vllm_python = os.path.abspath(args.vllm_python)  # the runs start in runtime-image/
    work = pathlib.Path(tempfile.mkdtemp(prefix="runtime-bench-"))
    model = work / "model"
    subprocess.run([args.vllm_python, "-m", "llm_sandbox.tiny_model", str(model)], check=True, capture_output=True,
                   env={**os.environ, "PYTHONPATH": str(ROOT / "sandbox")})
    server = MlflowServer(work / "mlflow").start()
    try:
        register_version(server.client(), "bench", model, metrics={"accuracy": 0.9}, alias="champion")
        results: dict[str, list[float]] = {"direct": [], "entrypoint, local path": [], "entrypoint, warm cache": [], "entrypoint, cold cache": []}
        log = work / "bench.log"

        def direct() -> float:
            port = free_port()
            return time_to_ready([args.vllm_python, "-m", "vllm.entrypoints.openai.api_server", "--model", str(model),
                                  "--port", str(port), *ARGS], {}, port, log)

        def local() -> float:
            port = free_port()
            return time_to_ready([args.vllm_python, "-m", "llmops_runtime", "--model", str(model), "--port", str(port), *ARGS],
                                 {"LLMOPS_MODEL_URI": str(model), "LLMOPS_GPUS": "0"}, port, log)

        def registry(cache: pathlib.Path) -> float:
            port = free_port()
            env = {"LLMOPS_MODEL_URI": "models:/bench@champion", "LLMOPS_MODEL_DIR": str(cache), "LLMOPS_GPUS": "0",
                   "MLFLOW_TRACKING_URI": server.url}
            return time_to_ready([args.vllm_python, "-m", "llmops_runtime", "--model", str(cache), "--port", str(port), *ARGS], env, port, log)

        direct()  # warm-up: kernel compilation caches
        for run in range(args.runs):
            cache = work / f"cache{run}" / "models" / "rev"
            variants = [("direct", direct), ("entrypoint, local path", local),
                        ("entrypoint, cold cache", lambda cache=cache: registry(cache))]
            for name, measure in variants[run % 3:] + variants[:run % 3]:
                results[name].append(measure())
            results["entrypoint, warm cache"].append(registry(cache))
        summary = {name: round(statistics.median(values), 2) for name, values in results.items()}
        direct = summary["direct"]
        summary["overhead, local path (percent of direct)"] = round(100 * (summary["entrypoint, local path"] - direct) / direct, 1)
        print(json.dumps({"runs": args.runs, "seconds_to_ready_median": summary,
                          "model_bytes": sum(p.stat().st_size for p in model.iterdir())}, indent=2))
        if summary["overhead, local path (percent of direct)"] > 5:
            sys.exit(1)
    finally:
        server.stop()


if __name__ == "__main__":
    main()
