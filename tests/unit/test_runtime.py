"""The serving entrypoint (runtime-image/llmops_runtime): GPU preflight decisions over a fake NVML, the
fetch-once cache with its completion marker, and the launch."""

import json
import pathlib
import sys

import pytest

from llm_operator import _builders as b
from llm_operator import _contract as operator_contract
from llm_operator._api import LLMDeploymentSpec
from llmops_runtime import _contract as runtime_contract
from llmops_runtime import _entrypoint as entry
from llmops_runtime._fetch import fetch
from llmops_runtime._gpu import GIB, Gpu, NvmlUnavailable, PreflightError, Request, preflight


class FakeNvml:
    def __init__(self, gpus=None, error=None):
        self._gpus, self.error, self.calls = gpus or [], error, 0

    def gpus(self):
        self.calls += 1
        if self.error:
            raise NvmlUnavailable(self.error)
        return self._gpus


def h100(index, free_gib=79.0):
    return Gpu(index=index, name="NVIDIA H100 80GB HBM3", total_bytes=80 * GIB, free_bytes=int(free_gib * GIB), compute_capability=(9, 0))


# ------------------------------------------------------------------------------------------ preflight


def test_the_cpu_device_needs_no_nvml():
    nvml = FakeNvml(error="should not be called")
    assert preflight(Request(gpus=0), nvml).device == "cpu"
    assert nvml.calls == 0


@pytest.mark.parametrize("request_, gpus, message", [
    (Request(gpus=1), None,
     "no NVIDIA driver: NVML could not be initialised (NVML Shared Library Not Found); this pod asked for 1 GPU(s)"),
    (Request(gpus=4, tensor_parallel_size=4), [h100(0), h100(1)],
     "tensor-parallel-size 4 x pipeline-parallel-size 1 needs 4 GPUs; 2 visible"),
    (Request(gpus=2, tensor_parallel_size=2, pipeline_parallel_size=2), [h100(0), h100(1)],
     "tensor-parallel-size 2 x pipeline-parallel-size 2 needs 4 GPUs; 2 visible"),
    (Request(gpus=1), [Gpu(0, "Tesla P100", 16 * GIB, 15 * GIB, (6, 0))],
     "GPU 0 (Tesla P100) has compute capability 6.0; vLLM needs 7.0 or newer"),
    (Request(gpus=1, gpu_memory_utilization=0.9), [h100(0, free_gib=40)],
     "GPU 0 (NVIDIA H100 80GB HBM3) has 40.0 GiB free of 80.0 GiB; gpu-memory-utilization 0.9 wants 72.0 GiB"),
    (Request(gpus=2, tensor_parallel_size=2, model_bytes=160 * GIB), [h100(0), h100(1)],
     "the model's weights need 80.0 GiB per GPU (160.0 GiB over 2 GPUs) but gpu-memory-utilization 0.9 x 80.0 GiB on GPU 0 leaves 72.0 GiB"),
])
def test_impossible_requests_fail_fast_naming_the_problem(request_, gpus, message):
    nvml = FakeNvml(gpus, error=None if gpus is not None else "NVML Shared Library Not Found")
    with pytest.raises(PreflightError) as error:
        preflight(request_, nvml)
    assert str(error.value).startswith(message)


def test_a_model_that_fits_passes_with_a_structured_report():
    report = preflight(Request(gpus=2, tensor_parallel_size=2, model_bytes=140 * GIB), FakeNvml([h100(0), h100(1)]))
    line = report.to_log()
    assert line["event"] == "gpu_preflight" and line["device"] == "cuda"
    assert (line["visible_gpus"], line["needed_gpus"], line["weights_per_gpu_gib"], line["budget_per_gpu_gib"]) == (2, 2, 70.0, 72.0)
    assert line["gpus"][0] == {"index": 0, "name": "NVIDIA H100 80GB HBM3", "total_gib": 80.0, "free_gib": 79.0, "compute_capability": "9.0"}


# ------------------------------------------------------------------------------------------ fetch


class Downloads:
    """A stand-in for MLflow's artifact download: writes two files, or fails."""

    def __init__(self, fail=False):
        self.calls, self.fail = [], fail

    def __call__(self, uri, dest):
        self.calls.append(uri)
        (dest / "config.json").write_text("{}")
        (dest / "model.safetensors").write_bytes(b"\0" * 1000)
        if self.fail:
            raise OSError("connection reset")
        return dest


def test_a_download_lands_once_with_a_marker_and_is_reused(tmp_path):
    events, download = [], Downloads()
    dest = tmp_path / "models" / "abc"
    got = fetch("models:/chat/3", dest, log=lambda e, **f: events.append(e), download=download)
    assert (got.source, got.files, got.bytes) == ("downloaded", 2, 1002)
    marker = json.loads((dest / runtime_contract.COMPLETE_MARKER).read_text())
    assert marker["uri"] == "models:/chat/3" and marker["files"] == 2
    again = fetch("models:/chat/3", dest, log=lambda e, **f: events.append(e), download=download)
    assert again.source == "reused" and download.calls == ["models:/chat/3"]
    assert events == ["model_download_started", "model_download_finished", "model_cached"]
    assert sorted(p.name for p in (tmp_path / "models").iterdir()) == ["abc"]  # no partial left behind


def test_a_half_download_is_never_served(tmp_path):
    dest = tmp_path / "abc"
    with pytest.raises(OSError):
        fetch("s3://bucket/chat", dest, log=lambda *a, **k: None, download=Downloads(fail=True))
    assert not dest.exists() and list(tmp_path.iterdir()) == []
    dest.mkdir()  # a pod killed mid-download in an older layout: files, no marker
    (dest / "config.json").write_text("{}")
    events = []
    got = fetch("s3://bucket/chat", dest, log=lambda e, **f: events.append((e, f)), download=Downloads())
    assert got.source == "downloaded" and events[0] == ("model_cache_discarded", {"path": str(dest), "reason": "no completion marker"})


def test_another_uri_replaces_the_cached_one(tmp_path):
    download = Downloads()
    fetch("models:/chat/3", tmp_path / "m", log=lambda *a, **k: None, download=download)
    assert fetch("models:/chat/4", tmp_path / "m", log=lambda *a, **k: None, download=download).source == "downloaded"
    assert download.calls == ["models:/chat/3", "models:/chat/4"]


def test_progress_is_logged_while_downloading(tmp_path):
    events = []

    def slow(uri, dest):
        (dest / "a").write_bytes(b"x" * 10)
        import time
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and not any(e == "model_download_progress" for e, _ in events):
            time.sleep(0.01)
        return dest
    fetch("models:/chat/3", tmp_path / "m", log=lambda e, **f: events.append((e, f)), download=slow, progress_seconds=0.05)
    progress = [f for e, f in events if e == "model_download_progress"]
    assert progress and progress[0]["bytes"] == 10 and progress[0]["files"] == 1


@pytest.mark.parametrize("uri, path, source", [
    ("hf://Qwen/Qwen2.5-1.5B-Instruct", "Qwen/Qwen2.5-1.5B-Instruct", "hub"),
    ("/mnt/models/llama", "/mnt/models/llama", "local"),
    ("file:///mnt/models/llama", "/mnt/models/llama", "local"),
])
def test_hub_and_local_models_are_not_fetched(tmp_path, uri, path, source):
    got = fetch(uri, tmp_path / "m", log=lambda *a, **k: None, download=Downloads(fail=True))
    assert (got.path, got.source) == (path, source)


# ------------------------------------------------------------------------------------------ launch


def _env(tmp_path, gpus="0"):
    return {runtime_contract.ENV_MODEL_URI: "models:/chat/3", runtime_contract.ENV_MODEL_DIR: str(tmp_path / "m"),
            runtime_contract.ENV_GPUS: gpus, runtime_contract.ENV_REVISION: "abc"}


def test_the_entrypoint_execs_vllm_with_the_operator_args(tmp_path, capsys):
    calls = []
    args = ["--model", str(tmp_path / "m"), "--tensor-parallel-size", "1", "--max-model-len", "256"]
    entry.main(args, environ=_env(tmp_path), nvml=FakeNvml(error="unused"), execv=lambda *a: calls.append(a), download=Downloads())
    ((program, argv),) = calls
    assert program == sys.executable
    assert argv == [sys.executable, "-m", "vllm.entrypoints.openai.api_server", *args]
    lines = [json.loads(line) for line in capsys.readouterr().err.splitlines()]
    assert [x["event"] for x in lines] == ["runtime_started", "model_download_started", "model_download_finished", "gpu_preflight", "exec_vllm"]


def test_an_api_key_among_the_args_is_never_logged(tmp_path, capsys):
    """The operator passes vLLM's key through the environment (VLLM_API_KEY) and refuses --api-key in extraArgs; an
    image started some other way with the flag still keeps the key out of its own log (vLLM gets it as given)."""
    calls = []
    args = ["--model", str(tmp_path / "m"), "--api-key", "s3cret-key", "--port", "8000", "--api-key=other-key"]
    environ = {**_env(tmp_path), "VLLM_API_KEY": "from-the-secret"}
    entry.main(args, environ=environ, nvml=FakeNvml(error="unused"), execv=lambda *a: calls.append(a), download=Downloads())
    ((_, argv),) = calls
    assert argv[-6:] == args[-6:]  # vLLM gets its arguments unchanged
    log = capsys.readouterr().err
    assert "s3cret-key" not in log and "other-key" not in log and "from-the-secret" not in log
    (exec_line,) = [json.loads(line) for line in log.splitlines() if '"exec_vllm"' in line]
    assert exec_line["argv"][-5:] == ["--api-key", "<redacted>", "--port", "8000", "--api-key=<redacted>"]


def test_a_failed_preflight_exits_with_the_reason(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(entry, "TERMINATION_LOG", str(tmp_path / "termination-log"))
    with pytest.raises(SystemExit) as exit_:
        entry.main(["--tensor-parallel-size", "2"], environ=_env(tmp_path, gpus="2"), nvml=FakeNvml([h100(0)]),
                   execv=lambda *a: pytest.fail("vLLM must not start"), download=Downloads())
    assert exit_.value.code == entry.EXIT_PREFLIGHT
    message = "GPU preflight failed: tensor-parallel-size 2 x pipeline-parallel-size 1 needs 2 GPUs; 1 visible"
    assert (tmp_path / "termination-log").read_text() == message
    failed = [json.loads(x) for x in capsys.readouterr().err.splitlines() if x.startswith("{") and "gpu_preflight_failed" in x]
    assert failed[0]["tensor_parallel_size"] == 2 and failed[0]["gpus"] == 2


def test_a_failed_fetch_exits_without_starting_vllm(tmp_path, monkeypatch):
    monkeypatch.setattr(entry, "TERMINATION_LOG", str(tmp_path / "termination-log"))
    with pytest.raises(SystemExit) as exit_:
        entry.main([], environ=_env(tmp_path), execv=lambda *a: pytest.fail("vLLM must not start"), download=Downloads(fail=True))
    assert exit_.value.code == entry.EXIT_FETCH
    assert (tmp_path / "termination-log").read_text() == "could not fetch models:/chat/3: OSError: connection reset"


# ------------------------------------------------------------------------------------------ contract


def test_one_module_defines_the_contract_for_both_sides():
    assert pathlib.Path(runtime_contract.__file__).resolve() == pathlib.Path(operator_contract.__file__).resolve()


def test_the_operator_renders_what_the_entrypoint_reads():
    spec = LLMDeploymentSpec.model_validate({"model": {"mlflow": {"name": "chat", "version": "3"}}, "resources": {"gpus": 2},
                                             "runtime": {"tensorParallelSize": 2}})
    revision = b.make_revision(spec, b.static_model(spec))
    dep = b.build_deployment("chat", "ml", spec, revision, 1)
    container = dep["spec"]["template"]["spec"]["containers"][0]
    assert container["command"] == runtime_contract.RUNTIME_COMMAND
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert env[runtime_contract.ENV_MODEL_URI] == "models:/chat/3" and env[runtime_contract.ENV_GPUS] == "2"
    settings = entry.engine_settings(container["args"])
    assert settings.model == env[runtime_contract.ENV_MODEL_DIR]  # vLLM loads what the entrypoint fetched
    assert settings.tensor_parallel_size == 2
