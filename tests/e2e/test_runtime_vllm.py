"""The serving entrypoint with a real vLLM (the CPU build) and a real MLflow registry: fetch by alias,
preflight, exec, answer, expose vLLM's metrics, drain on SIGTERM, restart without downloading again, and
refuse a GPU request on a machine without a driver; LoRA adapters (made with PEFT) served on the base, and one of
another base refused before vLLM starts.

Runs in the vLLM environment that ``make vllm-env`` builds (``LLMOPS_VLLM_PYTHON``, default ``.venv-vllm``).
"""

import contextlib
import json
import os
import pathlib
import re
import signal
import subprocess
import time
import urllib.error
import urllib.request

import pytest

from llm_sandbox.cluster import ROOT, wait_for
from llm_sandbox.metrics import free_port
from llm_sandbox.registry import register_version

pytestmark = [pytest.mark.e2e, pytest.mark.vllm]

METRICS = ["vllm:request_success_total", "vllm:e2e_request_latency_seconds", "vllm:time_to_first_token_seconds",
           "vllm:num_requests_waiting", "vllm:kv_cache_usage_perc"]


@pytest.fixture(scope="module")
def tiny_model(vllm_python, tmp_path_factory):
    out = tmp_path_factory.mktemp("tiny") / "model"
    subprocess.run([vllm_python, "-m", "llm_sandbox.tiny_model", str(out)], check=True, capture_output=True,
                   env={**os.environ, "PYTHONPATH": str(ROOT / "sandbox")}, timeout=300)
    return out


def _start(vllm_python, env, port, log_path, model_dir, gpus="0", extra=()):
    args = ["--model", str(model_dir), "--served-model-name", "tiny", "--host", "127.0.0.1", "--port", str(port),
            "--dtype", "float32", "--max-model-len", "256", "--gpu-memory-utilization", "0.25", *extra]
    full = {**os.environ, **env, "LLMOPS_GPUS": gpus, "VLLM_NO_USAGE_STATS": "1", "DO_NOT_TRACK": "1"}
    return subprocess.Popen([vllm_python, "-m", "llmops_runtime", *args], env=full, stdout=open(log_path, "ab"),
                            stderr=subprocess.STDOUT, cwd=ROOT / "runtime-image")


def _events(log_path):
    out = []
    for line in pathlib.Path(log_path).read_text(errors="replace").splitlines():
        if line.startswith("{"):
            with contextlib.suppress(ValueError):
                out.append(json.loads(line))
    return out


def _get(url, data=None, timeout=10):
    request = urllib.request.Request(url, data=json.dumps(data).encode() if data else None,
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=timeout) as response:
        return response.status, response.read().decode()


def _await_health(process, port, log_path):
    """Until vLLM answers /health through the entrypoint (or the entrypoint exited: then fail with its log's tail)."""
    def up_or_exited():
        if process.poll() is not None:
            return True
        try:
            return _get(f"http://127.0.0.1:{port}/health")[0] == 200
        except OSError:
            return False
    wait_for(up_or_exited, timeout=300, what="vLLM /health", interval=1.0)
    assert process.poll() is None, f"the entrypoint exited ({process.returncode}): {log_path.read_text()[-3000:]}"


def test_the_entrypoint_serves_a_registry_model_with_vllm(vllm_python, tiny_model, mlflow, tmp_path):
    client = mlflow.client()
    register_version(client, "tiny-chat", tiny_model, metrics={"accuracy": 0.9}, alias="champion")
    cache = tmp_path / "cache" / "models" / "rev1"
    env = {"LLMOPS_MODEL_URI": "models:/tiny-chat@champion", "LLMOPS_MODEL_DIR": str(cache), "LLMOPS_REVISION": "rev1",
           "MLFLOW_TRACKING_URI": mlflow.url}
    port, log_path = free_port(), tmp_path / "runtime.log"
    process = _start(vllm_python, env, port, log_path, cache)
    try:
        _await_health(process, port, log_path)
        events = _events(log_path)
        names = [e["event"] for e in events]
        assert names[:2] == ["runtime_started", "model_download_started"]
        assert {"model_download_finished", "gpu_preflight", "exec_vllm"} <= set(names)
        finished = next(e for e in events if e["event"] == "model_download_finished")
        assert finished["files"] >= 5 and finished["bytes"] > 1_000_000
        assert next(e for e in events if e["event"] == "gpu_preflight")["device"] == "cpu"
        assert json.loads((cache / ".llmops-complete.json").read_text())["uri"] == "models:/tiny-chat@champion"

        status, body = _get(f"http://127.0.0.1:{port}/v1/completions", {"model": "tiny", "prompt": "Kubernetes", "max_tokens": 8})
        assert status == 200 and json.loads(body)["usage"]["completion_tokens"] == 8
        status, body = _get(f"http://127.0.0.1:{port}/v1/chat/completions",
                            {"model": "tiny", "messages": [{"role": "user", "content": "hello"}], "max_tokens": 8})
        assert status == 200 and json.loads(body)["choices"][0]["message"]["role"] == "assistant"
        _, metrics = _get(f"http://127.0.0.1:{port}/metrics")
        for name in METRICS:
            assert name in metrics, name
        # exec: the container's main process is vLLM's server itself, so SIGTERM reaches it directly.
        cmdline = pathlib.Path(f"/proc/{process.pid}/cmdline").read_bytes().split(b"\0")
        assert b"vllm.entrypoints.openai.api_server" in cmdline
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=60) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()

    # A restarted pod finds the finished download and starts vLLM without fetching again.
    log_path.write_text("")
    process = _start(vllm_python, env, free_port(), log_path, cache)
    try:
        wait_for(lambda: any(e["event"] == "exec_vllm" for e in _events(log_path)), timeout=120, what="exec after restart")
        names = [e["event"] for e in _events(log_path)]
        assert "model_cached" in names and "model_download_started" not in names
    finally:
        process.terminate()
        process.wait(timeout=60)

    # The same pod asking for a GPU on a machine without an NVIDIA driver fails fast, saying so.
    started = time.monotonic()
    result = subprocess.run([vllm_python, "-m", "llmops_runtime", "--model", str(cache)], env={**os.environ, **env, "LLMOPS_GPUS": "1"},
                            capture_output=True, text=True, timeout=120, cwd=ROOT / "runtime-image")
    assert result.returncode == 3
    assert "GPU preflight failed: no NVIDIA driver: NVML could not be initialised" in result.stderr
    assert "asked for 1 GPU(s)" in result.stderr
    assert time.monotonic() - started < 60


def test_vllm_refuses_a_request_without_the_api_key_it_got_from_the_environment(vllm_python, tiny_model, tmp_path):
    """spec.auth.apiKey as the pod runs it: VLLM_API_KEY in the environment (the kubelet's secretKeyRef), the operator's
    args unchanged. vLLM answers /v1 without the key (or with another) with 401 and with it 200; /health and /metrics
    stay open for the probes and Prometheus; the key is in neither the log nor the server's command line."""
    key = "e2e-" + os.urandom(12).hex()
    env = {"LLMOPS_MODEL_URI": str(tiny_model), "LLMOPS_REVISION": "keyed", "VLLM_API_KEY": key}
    port, log_path = free_port(), tmp_path / "runtime.log"
    process = _start(vllm_python, env, port, log_path, tiny_model)
    base = f"http://127.0.0.1:{port}"

    def status(path, token=None, data=None):
        headers = {"Content-Type": "application/json", **({"Authorization": f"Bearer {token}"} if token else {})}
        request = urllib.request.Request(base + path, data=json.dumps(data).encode() if data else None, headers=headers)
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                return response.status
        except urllib.error.HTTPError as error:
            return error.code

    try:
        _await_health(process, port, log_path)  # /health needs no key
        completion = {"model": "tiny", "prompt": "Kubernetes", "max_tokens": 4}
        assert status("/v1/models") == 401
        assert status("/v1/completions", data=completion) == 401
        assert status("/v1/completions", token="not-" + key, data=completion) == 401
        assert status("/v1/completions", token=key, data=completion) == 200
        assert (status("/health"), status("/metrics")) == (200, 200)  # no key: probes and scraping
        cmdline = pathlib.Path(f"/proc/{process.pid}/cmdline").read_bytes()
        assert b"vllm.entrypoints.openai.api_server" in cmdline and key.encode() not in cmdline
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=60) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert key not in log_path.read_text(errors="replace")  # the entrypoint's lines and vLLM's own output


# ------------------------------------------------------------------------------------------ LoRA adapters


def _lora(vllm_python, base, out, *extra):
    subprocess.run([vllm_python, "-m", "llm_sandbox.tiny_lora", str(base), str(out), *extra], check=True, capture_output=True,
                   env={**os.environ, "PYTHONPATH": str(ROOT / "sandbox")}, timeout=300)
    return out


def _samples(metrics, name):
    """``{labels: value}`` of one metric's samples in a Prometheus text exposition."""
    out = {}
    for line in metrics.splitlines():
        if line.startswith(name + "{"):
            labels, value = line[len(name) + 1:].rsplit("} ", 1)
            out[labels] = float(value)
    return out


LORA_ARGS = ["--enable-lora", "--max-loras", "2", "--max-lora-rank", "8"]


def test_lora_adapters_are_served_on_the_base_model(vllm_python, tiny_model, mlflow, tmp_path):
    """Two PEFT adapters of random non-zero weights on the tiny Llama: ``a`` registered in MLflow and fetched by the
    entrypoint into its cache directory, ``b`` a local directory served where it is. vLLM answers each name and the
    base's, differently; /v1/models lists both adapters under the base; and vLLM 0.32's metrics do NOT tell adapters
    apart: every request counts under ``model_name`` = the base's served name, and only ``vllm:lora_requests_info``
    (a gauge set to the time of its last update) names the adapters running or waiting."""
    made = tmp_path / "made"
    _lora(vllm_python, tiny_model, made / "a", "--seed", "1")
    b_dir = _lora(vllm_python, tiny_model, made / "b", "--seed", "2")
    register_version(mlflow.client(), "tiny-lora-a", made / "a", metrics={}, alias="champion")
    a_dir = tmp_path / "cache" / "adapters" / "a"
    adapters = [{"name": "a", "uri": "models:/tiny-lora-a@champion", "dir": str(a_dir), "base": None},
                {"name": "b", "uri": str(b_dir), "dir": None, "base": None}]
    env = {"LLMOPS_MODEL_URI": str(tiny_model), "LLMOPS_REVISION": "lora", "LLMOPS_SERVED_MODEL_NAME": "tiny",
           "LLMOPS_ADAPTERS": json.dumps(adapters), "MLFLOW_TRACKING_URI": mlflow.url}
    port, log_path = free_port(), tmp_path / "runtime.log"
    started = time.monotonic()
    process = _start(vllm_python, env, port, log_path, tiny_model, extra=[*LORA_ARGS, "--lora-modules", f"a={a_dir}", f"b={b_dir}"])
    base = f"http://127.0.0.1:{port}"
    try:
        _await_health(process, port, log_path)
        print(f"\nvLLM with 2 LoRA adapters healthy after {time.monotonic() - started:.1f} s")
        events = _events(log_path)
        fetched = {e["name"]: e for e in events if e["event"] == "adapter_fetched"}
        assert (fetched["a"]["source"], fetched["a"]["dir"], fetched["a"]["rank"], fetched["a"]["base_check"]) == (
            "downloaded", str(a_dir), 8, "name")
        assert fetched["a"]["bytes"] > 60_000 and fetched["a"]["base"] == str(tiny_model)
        assert (fetched["b"]["source"], fetched["b"]["dir"]) == ("local", str(b_dir))
        assert json.loads((a_dir / ".llmops-complete.json").read_text())["uri"] == "models:/tiny-lora-a@champion"

        _, body = _get(f"{base}/v1/models")
        cards = {card["id"]: card for card in json.loads(body)["data"]}
        assert set(cards) == {"tiny", "a", "b"}
        assert (cards["a"]["parent"], cards["a"]["root"]) == ("tiny", str(a_dir))
        assert (cards["b"]["parent"], cards["b"]["root"]) == ("tiny", str(b_dir))

        texts = {}
        for name in ("tiny", "a", "b", "a"):
            status, body = _get(f"{base}/v1/completions", {"model": name, "prompt": "Kubernetes", "max_tokens": 8, "temperature": 0})
            answer = json.loads(body)
            assert status == 200 and answer["model"] == name and answer["usage"]["completion_tokens"] == 8
            texts.setdefault(name, answer["choices"][0]["text"])
        print(f"completions: {texts}")
        assert texts["a"] != texts["tiny"] and texts["b"] != texts["tiny"] and texts["a"] != texts["b"]  # the adapters act

        _, metrics = _get(f"{base}/metrics")
        success = _samples(metrics, "vllm:request_success_total")
        latency = _samples(metrics, "vllm:e2e_request_latency_seconds_count")
        info = _samples(metrics, "vllm:lora_requests_info")
        print("request_success_total:", success, "\ne2e_request_latency_seconds_count:", latency, "\nlora_requests_info:", info)
        # Per adapter? No: 4 requests (base, a, b, a) all under the base's served name.
        assert {k: v for k, v in success.items() if v} == {'engine="0",finished_reason="length",model_name="tiny"': 4.0}
        assert latency == {'engine="0",model_name="tiny"': 4.0}
        assert not any('model_name="a"' in line or 'model_name="b"' in line for line in metrics.splitlines())
        # The adapters' names appear in vllm:lora_requests_info alone: one series per combination of adapters running
        # and waiting ever seen at a scheduler step (comma-separated names, "" for none; the old ones stay), each valued
        # at the Unix time that combination was last seen. Measured: running="" (idle, or the base alone), running="a",
        # running="b"; the base's own requests never appear there.
        running = {re.search(r'running_lora_adapters="([^"]*)"', labels)[1] for labels in info}
        assert {"a", "b"} <= running <= {"", "a", "b", "a,b", "b,a"}
        assert all('max_lora="2"' in labels for labels in info) and all(value > time.time() - 600 for value in info.values())
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=60) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def test_an_adapter_of_another_base_stops_the_pod_before_vllm_starts(vllm_python, tiny_model, tmp_path):
    """An adapter whose adapter_config.json says it was trained on another model: the entrypoint exits 5 in seconds,
    before vLLM loads anything, with the reason in the termination log (here a file: the test redirects it)."""
    other = _lora(vllm_python, tiny_model, tmp_path / "qwen-lora", "--base-name", "Qwen/Qwen2.5-0.5B-Instruct")
    termination = tmp_path / "termination-log"
    env = {**os.environ, "LLMOPS_MODEL_URI": str(tiny_model), "LLMOPS_SERVED_MODEL_NAME": "tiny", "LLMOPS_GPUS": "0",
           "LLMOPS_ADAPTERS": json.dumps([{"name": "sql", "uri": str(other), "dir": None, "base": None}])}
    # The entrypoint as the container runs it, its termination log moved off /dev.
    run = f"import llmops_runtime._entrypoint as e; e.TERMINATION_LOG = {str(termination)!r}; e.main()"
    started = time.monotonic()
    result = subprocess.run([vllm_python, "-c", run, "--model", str(tiny_model), "--served-model-name", "tiny", *LORA_ARGS,
                             "--lora-modules", f"sql={other}"], env=env, capture_output=True, text=True, timeout=120,
                            cwd=ROOT / "runtime-image")
    assert result.returncode == 5, result.stderr[-2000:]
    reason = termination.read_text()
    assert reason == (f"adapter 'sql' ({other}) was trained on 'Qwen/Qwen2.5-0.5B-Instruct' (base_model_name_or_path in its "
                      f"adapter_config.json) but this pod serves '{tiny_model}' (known as 'tiny'); if that is this model under "
                      "another name, set the adapter's base to it")
    refused = [json.loads(x) for x in result.stderr.splitlines() if x.startswith("{") and '"adapter_refused"' in x]
    assert refused and refused[0]["reason"] == reason
    assert "exec_vllm" not in result.stderr and "gpu_preflight" not in result.stderr
    assert time.monotonic() - started < 30
