"""The serving entrypoint (runtime-image/llmops_runtime): GPU preflight decisions over a fake NVML, the
fetch-once cache with its completion marker, the launch, and LoRA adapters (fetched like the model, their
adapter_config.json checked against the served base and --max-lora-rank before vLLM starts)."""

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


# ------------------------------------------------------------------------------------------ LoRA adapters


class ModelAndAdapters:
    """A stand-in download for the model (a config.json naming its origin) and for adapters: ``adapters`` maps an
    adapter URI to its adapter_config.json (None: a directory without one)."""

    def __init__(self, adapters, model_name_or_path="meta-llama/Llama-3.1-8B-Instruct"):
        self.adapters, self.model_name_or_path, self.calls = adapters, model_name_or_path, []

    def __call__(self, uri, dest):
        self.calls.append(uri)
        if uri in self.adapters:
            if self.adapters[uri] is not None:
                (dest / "adapter_config.json").write_text(json.dumps(self.adapters[uri]))
            (dest / "adapter_model.safetensors").write_bytes(b"\0" * 100)
        else:
            (dest / "config.json").write_text(json.dumps({"_name_or_path": self.model_name_or_path}))
        return dest


def lora(base="meta-llama/Llama-3.1-8B-Instruct", r=8, **extra):
    return {"peft_type": "LORA", "base_model_name_or_path": base, "r": r, "lora_alpha": 16, "target_modules": ["q_proj"], **extra}


def _adapter_env(tmp_path, adapters, **extra):
    entries = [{"name": name, "uri": uri, "dir": str(tmp_path / "adapters" / name), "base": None} | more
               for name, uri, *rest in adapters for more in [rest[0] if rest else {}]]
    return {**_env(tmp_path), runtime_contract.ENV_ADAPTERS: json.dumps(entries), **extra}


def _run(tmp_path, monkeypatch, args, environ, download):
    """main() up to exec: (its exit code or None, the argv it exec'd or None)."""
    monkeypatch.setattr(entry, "TERMINATION_LOG", str(tmp_path / "termination-log"))
    calls, code = [], None
    try:
        entry.main(args, environ=environ, nvml=FakeNvml(error="unused"), execv=lambda *a: calls.append(a), download=download)
    except SystemExit as exit_:
        code = exit_.code
    return code, (calls[0][1] if calls else None)


def _lines(capsys):
    return [json.loads(x) for x in capsys.readouterr().err.splitlines() if x.startswith("{")]


LORA_ARGS = ["--enable-lora", "--lora-modules", "sql=/a/sql", "chat=/a/chat", "--max-loras", "2", "--max-lora-rank", "16"]


def test_adapters_are_fetched_into_their_dirs_and_reused_on_restart(tmp_path, monkeypatch, capsys):
    download = ModelAndAdapters({"s3://lora/sql": lora(), "models:/sql-lora/2": lora(r=16)})
    environ = _adapter_env(tmp_path, [("sql", "s3://lora/sql"), ("chat", "models:/sql-lora/2")])
    code, argv = _run(tmp_path, monkeypatch, LORA_ARGS, environ, download)
    assert code is None and argv[3:] == LORA_ARGS  # vLLM gets the operator's args unchanged
    assert download.calls == ["models:/chat/3", "s3://lora/sql", "models:/sql-lora/2"]
    for name, uri in (("sql", "s3://lora/sql"), ("chat", "models:/sql-lora/2")):
        marker = json.loads((tmp_path / "adapters" / name / runtime_contract.COMPLETE_MARKER).read_text())
        assert marker["uri"] == uri and (tmp_path / "adapters" / name / "adapter_config.json").exists()
    lines = _lines(capsys)
    assert [x["event"] for x in lines] == ["runtime_started", "model_download_started", "model_download_finished",
                                           "adapter_download_started", "adapter_download_finished", "adapter_fetched",
                                           "adapter_download_started", "adapter_download_finished", "adapter_fetched",
                                           "gpu_preflight", "exec_vllm"]
    assert lines[0]["adapters"] == ["sql", "chat"]
    fetched = [x for x in lines if x["event"] == "adapter_fetched"]
    assert {k: fetched[0][k] for k in ("name", "uri", "dir", "source", "files", "base", "base_check", "rank")} == {
        "name": "sql", "uri": "s3://lora/sql", "dir": str(tmp_path / "adapters" / "sql"), "source": "downloaded", "files": 2,
        "base": "meta-llama/Llama-3.1-8B-Instruct", "base_check": "name", "rank": 8}
    assert fetched[0]["bytes"] > 100 and fetched[0]["seconds"] >= 0 and fetched[1]["rank"] == 16
    assert all(x["name"] == "sql" for x in lines[3:5])  # the fetch's own events name the adapter

    # A restarted pod: the markers say the adapters are there; nothing is downloaded again.
    code, argv = _run(tmp_path, monkeypatch, LORA_ARGS, environ, download)
    assert code is None and argv is not None and len(download.calls) == 3
    lines = _lines(capsys)
    assert [x["event"] for x in lines if x["event"].startswith("adapter_")] == ["adapter_cached", "adapter_fetched"] * 2
    assert [x["source"] for x in lines if x["event"] == "adapter_fetched"] == ["reused", "reused"]


def test_an_adapter_of_another_base_is_refused_before_vllm_starts(tmp_path, monkeypatch, capsys):
    download = ModelAndAdapters({"s3://lora/sql": lora(), "hf://acme/qwen-sql-lora": lora(base="Qwen/Qwen2.5-0.5B-Instruct")})
    environ = _adapter_env(tmp_path, [("sql", "s3://lora/sql"), ("qsql", "hf://acme/qwen-sql-lora")],
                           **{runtime_contract.ENV_SERVED_MODEL_NAME: "support-assistant"})
    code, argv = _run(tmp_path, monkeypatch, LORA_ARGS, environ, download)
    assert (code, argv) == (entry.EXIT_ADAPTER, None)
    reason = (tmp_path / "termination-log").read_text()
    assert reason == ("adapter 'qsql' (hf://acme/qwen-sql-lora) was trained on 'Qwen/Qwen2.5-0.5B-Instruct' (base_model_name_or_path "
                      "in its adapter_config.json) but this pod serves 'models:/chat/3' (known as "
                      "'meta-llama/Llama-3.1-8B-Instruct', 'support-assistant'); if that is this model under "
                      "another name, set the adapter's base to it")
    assert "\n" not in reason
    lines = _lines(capsys)
    refused = [x for x in lines if x["event"] == "adapter_refused"]
    assert refused == [{"ts": refused[0]["ts"], "event": "adapter_refused", "name": "qsql", "uri": "hf://acme/qwen-sql-lora",
                        "dir": str(tmp_path / "adapters" / "qsql"), "reason": reason}]
    assert "gpu_preflight" not in [x["event"] for x in lines]


@pytest.mark.parametrize("config_base, asserted, accepted", [
    ("/home/alice/checkpoints/llama-ft-base", "/home/alice/checkpoints/llama-ft-base", True),  # "that name is this model"
    ("/home/alice/checkpoints/llama-ft-base", "llama-ft-base", True),  # the same, by its last component
    ("Qwen/Qwen2.5-0.5B-Instruct", "models:/chat/3", True),  # "trained on this model, whatever its config says"
    ("Qwen/Qwen2.5-0.5B-Instruct", "mistralai/Mistral-7B-v0.3", False),  # an assertion about a third model
])
def test_the_base_override(tmp_path, monkeypatch, config_base, asserted, accepted):
    download = ModelAndAdapters({"s3://lora/sql": lora(base=config_base)})
    environ = _adapter_env(tmp_path, [("sql", "s3://lora/sql", {"base": asserted})])
    code, argv = _run(tmp_path, monkeypatch, LORA_ARGS, environ, download)
    if accepted:
        assert code is None and argv is not None
    else:
        assert code == entry.EXIT_ADAPTER and argv is None
        assert (tmp_path / "termination-log").read_text().endswith("its base is set to 'mistralai/Mistral-7B-v0.3', which is neither")


def test_without_the_override_a_local_checkpoint_name_is_refused(tmp_path, monkeypatch):
    download = ModelAndAdapters({"s3://lora/sql": lora(base="/home/alice/checkpoints/llama-ft-base")})
    code, _ = _run(tmp_path, monkeypatch, LORA_ARGS, _adapter_env(tmp_path, [("sql", "s3://lora/sql")]), download)
    assert code == entry.EXIT_ADAPTER


def test_an_adapter_directory_without_adapter_config_is_refused(tmp_path, monkeypatch):
    download = ModelAndAdapters({"gs://lora/sql": None})
    code, argv = _run(tmp_path, monkeypatch, LORA_ARGS, _adapter_env(tmp_path, [("sql", "gs://lora/sql")]), download)
    assert (code, argv) == (entry.EXIT_ADAPTER, None)
    assert (tmp_path / "termination-log").read_text() == (
        f"adapter 'sql' (gs://lora/sql): {tmp_path / 'adapters' / 'sql'} has no adapter_config.json; a LoRA adapter is a PEFT "
        "directory (adapter_config.json and adapter_model.safetensors)")


@pytest.mark.parametrize("config, args, message", [
    (lora(r=16), ["--max-lora-rank", "8"], "its rank 16 is above --max-lora-rank 8"),
    (lora(r=8, rank_pattern={"q_proj": 32}), ["--max-lora-rank", "16"], "its rank 32 is above --max-lora-rank 16"),
    (lora(r=32), [], "its rank 32 is above --max-lora-rank 16"),  # vLLM 0.32's default maximum
    (lora(r=0), [], "has no positive integer rank r (r=0"),
    (lora(peft_type="PREFIX_TUNING"), [], "has peft_type 'PREFIX_TUNING'; vLLM serves LoRA adapters only"),
])
def test_an_adapter_vllm_would_refuse_late_is_refused_first(tmp_path, monkeypatch, config, args, message):
    download = ModelAndAdapters({"s3://lora/sql": config})
    code, argv = _run(tmp_path, monkeypatch, ["--enable-lora", *args], _adapter_env(tmp_path, [("sql", "s3://lora/sql")]), download)
    assert (code, argv) == (entry.EXIT_ADAPTER, None)
    reason = (tmp_path / "termination-log").read_text()
    assert reason.startswith("adapter 'sql' (s3://lora/sql): ") and message in reason


def test_a_rank_at_the_maximum_is_served(tmp_path, monkeypatch):
    download = ModelAndAdapters({"s3://lora/sql": lora(r=8)})
    code, argv = _run(tmp_path, monkeypatch, ["--max-lora-rank", "8"], _adapter_env(tmp_path, [("sql", "s3://lora/sql")]), download)
    assert code is None and argv is not None


@pytest.mark.parametrize("value, message", [
    ("[{name: sql}]", "LLMOPS_ADAPTERS is not JSON (Expecting property name enclosed in double quotes: line 1 column 3 (char 2))"),
    ('{"name": "sql"}', "LLMOPS_ADAPTERS must be a JSON list of adapters, not dict"),
    ('["sql"]', "LLMOPS_ADAPTERS[0] must be an object with name, uri, dir and base, not str"),
    ('[{"uri": "s3://lora/sql", "dir": "/a"}]', "LLMOPS_ADAPTERS[0] has no name (a non-empty string)"),
    ('[{"name": "sql", "dir": "/a"}]', "LLMOPS_ADAPTERS[0] (sql) has no uri (a non-empty string)"),
    ('[{"name": "sql", "uri": "s3://lora/sql"}]', "LLMOPS_ADAPTERS[0] (sql): no dir to fetch s3://lora/sql into"),
    ('[{"name": "sql", "uri": "s3://lora/sql", "dir": "/a", "base": 3}]', "LLMOPS_ADAPTERS[0] (sql): base must be a string or null, not int"),
    ('[{"name": "sql", "uri": "s3://a", "dir": "/a"}, {"name": "sql", "uri": "s3://b", "dir": "/b"}]',
     "LLMOPS_ADAPTERS uses the name 'sql' for more than one adapter"),
    ('[{"name": "a", "uri": "s3://a", "dir": "/a"}, {"name": "b", "uri": "s3://b", "dir": "/a"}]',
     "LLMOPS_ADAPTERS uses the dir '/a' for more than one adapter"),
])
def test_unreadable_adapters_are_refused_before_any_download(tmp_path, monkeypatch, value, message):
    download = ModelAndAdapters({})
    code, argv = _run(tmp_path, monkeypatch, [], {**_env(tmp_path), runtime_contract.ENV_ADAPTERS: value}, download)
    assert (code, argv, download.calls) == (entry.EXIT_ADAPTER, None, [])
    assert (tmp_path / "termination-log").read_text() == message


def test_a_failed_adapter_download_exits_like_the_model_s(tmp_path, monkeypatch):
    def download(uri, dest):
        if uri.startswith("hf://"):
            raise OSError("401 Client Error: Unauthorized")
        return ModelAndAdapters({})(uri, dest)
    code, argv = _run(tmp_path, monkeypatch, [], _adapter_env(tmp_path, [("sql", "hf://acme/sql-lora")]), download)
    assert (code, argv) == (entry.EXIT_FETCH, None)
    assert (tmp_path / "termination-log").read_text() == (
        "could not fetch adapter 'sql' from hf://acme/sql-lora: OSError: 401 Client Error: Unauthorized")
    assert not (tmp_path / "adapters" / "sql").exists()


def test_a_local_adapter_is_checked_and_served_where_it_is(tmp_path, monkeypatch, capsys):
    local = tmp_path / "pvc" / "sql-lora"
    local.mkdir(parents=True)
    (local / "adapter_config.json").write_text(json.dumps(lora(base="/mnt/models/Llama-3.1-8B-Instruct")))
    download = ModelAndAdapters({})
    environ = {**_env(tmp_path), runtime_contract.ENV_ADAPTERS: json.dumps([{"name": "sql", "uri": str(local), "dir": None, "base": None}])}
    code, argv = _run(tmp_path, monkeypatch, [], environ, download)
    assert code is None and argv is not None and download.calls == ["models:/chat/3"]
    (fetched,) = [x for x in _lines(capsys) if x["event"] == "adapter_fetched"]
    assert (fetched["source"], fetched["dir"], fetched["files"], fetched["base_check"]) == ("local", str(local), 1, "name")


@pytest.mark.parametrize("value", [None, "", "[]"])
def test_no_adapters_is_the_unchanged_launch(tmp_path, capsys, value):
    calls = []
    environ = _env(tmp_path) | ({} if value is None else {runtime_contract.ENV_ADAPTERS: value})
    entry.main(["--model", str(tmp_path / "m")], environ=environ, nvml=FakeNvml(error="unused"), execv=lambda *a: calls.append(a),
               download=Downloads())
    assert len(calls) == 1
    assert [json.loads(x)["event"] for x in capsys.readouterr().err.splitlines()] == [
        "runtime_started", "model_download_started", "model_download_finished", "gpu_preflight", "exec_vllm"]


@pytest.mark.parametrize("adapter_base, known, expected", [
    ("meta-llama/Llama-3.1-8B-Instruct", ["hf://meta-llama/Llama-3.1-8B-Instruct"], True),
    ("meta-llama/llama-3.1-8b-instruct", ["hf://Meta-Llama/Llama-3.1-8B-Instruct/"], True),  # case, trailing slash
    ("/data/ckpt/Llama-3.1-8B-Instruct", ["hf://meta-llama/Llama-3.1-8B-Instruct"], True),  # a local copy of the repo
    ("/root/.cache/huggingface/hub/models--meta-llama--Llama-3.1-8B-Instruct/snapshots/0e9e3", ["meta-llama/Llama-3.1-8B-Instruct"], True),
    ("other-org/Llama-3.1-8B-Instruct", ["hf://meta-llama/Llama-3.1-8B-Instruct"], False),  # another repo of that name
    ("support-assistant", ["models:/support-assistant@champion"], True),  # the MLflow registered model name
    ("support-assistant", ["models:/support-assistant/7"], True),
    ("llama-8b", ["s3://models/prod/llama-8b/"], True),
    ("Llama-3.1-8B", ["hf://meta-llama/Llama-3.1-8B-Instruct"], False),  # the base, not its instruct tune
    ("", ["anything"], False),
])
def test_the_base_match_rule(adapter_base, known, expected):
    from llmops_runtime._adapters import match
    assert match(adapter_base, known) is expected


def test_the_served_base_is_known_by_its_uri_dir_config_and_served_names(tmp_path):
    from llmops_runtime._adapters import served_names
    (tmp_path / "config.json").write_text(json.dumps({"_name_or_path": "meta-llama/Llama-3.1-8B-Instruct"}))
    # The cache directory of a fetched model is named after the revision: not a name of the model.
    assert served_names(uri="models:/chat@champion", model_path=str(tmp_path), source="reused", served_model_names=["chat", "", "llama"],
                        model_arg=str(tmp_path)) == ["models:/chat@champion", "meta-llama/Llama-3.1-8B-Instruct", "chat", "llama"]
    assert served_names(uri="/mnt/models/llama", model_path="/mnt/models/llama", source="local", model_arg="/mnt/models/llama") == [
        "/mnt/models/llama"]
    assert served_names(uri="hf://org/m", model_path="org/m", source="hub", model_arg="org/m") == ["hf://org/m", "org/m"]


def test_the_adapter_module_doctests():
    import doctest

    from llmops_runtime import _adapters
    assert doctest.testmod(_adapters).failed == 0


def test_hf_adapters_are_downloaded_by_the_entrypoint(tmp_path, monkeypatch):
    """vLLM 0.32 would download an ``org/repo`` given as a --lora-modules path itself (into HF_HOME), but only after
    loading the model, and the operator points --lora-modules at the adapter's dir: the entrypoint fetches it there."""
    import types

    from llmops_runtime import _fetch
    got = []

    def snapshot_download(repo_id, local_dir):
        got.append(repo_id)
        (pathlib.Path(local_dir) / "adapter_config.json").write_text("{}")
        (pathlib.Path(local_dir) / ".cache" / "huggingface").mkdir(parents=True)
        return local_dir
    monkeypatch.setitem(sys.modules, "huggingface_hub", types.SimpleNamespace(snapshot_download=snapshot_download))
    fetched = fetch("hf://acme/sql-lora", tmp_path / "sql", log=lambda *a, **k: None, download=_fetch.any_download,
                    schemes=_fetch.ADAPTER_SCHEMES, what="adapter")
    assert (fetched.source, got) == ("downloaded", ["acme/sql-lora"])
    assert sorted(p.name for p in (tmp_path / "sql").iterdir()) == [runtime_contract.COMPLETE_MARKER, "adapter_config.json"]
    assert fetch("hf://acme/sql-lora", tmp_path / "m", log=lambda *a, **k: None).source == "hub"  # the model's: vLLM's download


def test_an_adapter_named_like_the_served_model_is_refused_before_anything_is_fetched(tmp_path, monkeypatch):
    """vLLM refuses it too ("conflicts with a served base model"), but only once the whole model is loaded."""
    download = ModelAndAdapters({"s3://lora/sql": lora()})
    environ = _adapter_env(tmp_path, [("support-assistant", "s3://lora/sql")],
                           **{runtime_contract.ENV_SERVED_MODEL_NAME: "support-assistant"})
    code, argv = _run(tmp_path, monkeypatch, LORA_ARGS, environ, download)
    assert (code, argv, download.calls) == (entry.EXIT_ADAPTER, None, [])
    assert (tmp_path / "termination-log").read_text().startswith("adapter 'support-assistant' is named like the served model")
