"""``python -m llmops_runtime [vLLM args...]``: fetch the model, check the GPUs, exec vLLM's OpenAI server.

The container's args are vLLM's engine arguments exactly as the operator renders them; the environment
(:mod:`._contract`) says what to fetch and how many GPUs the pod has. The entrypoint replaces itself with
``python -m vllm.entrypoints.openai.api_server ARGS`` (``os.execv``): vLLM becomes the container's main
process, so SIGTERM reaches it directly and it drains in-flight requests.

LoRA adapters (``LLMOPS_ADAPTERS``, :mod:`._adapters`) are fetched after the model, each into its directory with
the same completion marker, and checked before the preflight: an adapter of another base model, without
``adapter_config.json`` or of a rank above ``--max-lora-rank`` stops the pod before vLLM spends a minute loading.

Every step logs one JSON line on stderr (``{"event": ..., ...}``). A failed preflight, download or adapter check
exits non-zero (:data:`EXIT_PREFLIGHT`, :data:`EXIT_FETCH`, :data:`EXIT_ADAPTER`) with the reason in the log and in
``/dev/termination-log``, which ``kubectl describe pod`` shows.

Nothing logged comes from the environment but the contract's own variables: vLLM's API key (``VLLM_API_KEY``, from
a Secret) and the registry token pass to vLLM through the environment, unread and unlogged. An ``--api-key`` among
the args (the operator refuses it in ``extraArgs``) is logged as ``<redacted>``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import pathlib
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any, NoReturn

from . import _contract as c
from ._adapters import VLLM_DEFAULT_MAX_LORA_RANK, Adapter, AdapterError, check, parse, served_names
from ._fetch import ADAPTER_SCHEMES, Fetched, any_download, fetch, size_of
from ._gpu import Nvml, PreflightError, PynvmlBackend, Request, preflight

EXIT_PREFLIGHT = 3
EXIT_FETCH = 4
#: LLMOPS_ADAPTERS unreadable, or an adapter refused (another base, no adapter_config.json, rank too large).
EXIT_ADAPTER = 5
TERMINATION_LOG = "/dev/termination-log"


def log(event: str, **fields: Any) -> None:
    """One structured log line (never a credential: fields are URIs, paths, counts and timings)."""
    print(json.dumps({"ts": round(time.time(), 3), "event": event, **fields}, default=str), file=sys.stderr, flush=True)


#: Flags whose value is a credential: never written to the log (:func:`redacted`).
SECRET_FLAGS = ("--api-key",)
REDACTED = "<redacted>"


def redacted(argv: Sequence[str]) -> list[str]:
    """``argv`` with the values of :data:`SECRET_FLAGS` (``--api-key KEY`` and ``--api-key=KEY``) replaced.

    >>> redacted(["--port", "8000", "--api-key", "s3cret", "--api-key=other"])
    ['--port', '8000', '--api-key', '<redacted>', '--api-key=<redacted>']
    """
    out: list[str] = []
    hide = False
    for arg in argv:
        flag = arg.split("=", 1)[0]
        if hide:
            out.append(REDACTED)
        elif flag in SECRET_FLAGS and "=" in arg:
            out.append(f"{flag}={REDACTED}")
        else:
            out.append(arg)
        hide = not hide and arg in SECRET_FLAGS
    return out


def engine_settings(args: Sequence[str]) -> argparse.Namespace:
    """The engine arguments the preflight needs, read from vLLM's own flag names (the rest are passed on)."""
    parser = argparse.ArgumentParser(add_help=False, allow_abbrev=False)
    parser.add_argument("--model")
    parser.add_argument("--tensor-parallel-size", "-tp", type=int, default=1)
    parser.add_argument("--pipeline-parallel-size", "-pp", type=int, default=1)
    parser.add_argument("--gpu-memory-utilization", type=float, default=0.9)
    parser.add_argument("--served-model-name", nargs="+", default=[])
    parser.add_argument("--max-lora-rank", type=int)
    known, _ = parser.parse_known_args(list(args))
    return known


def _fail(code: int, message: str) -> NoReturn:
    with contextlib.suppress(OSError):
        pathlib.Path(TERMINATION_LOG).write_text(message[:4096])
    print(message, file=sys.stderr, flush=True)
    raise SystemExit(code)


def fetch_adapter(adapter: Adapter, *, known: list[str], max_rank: int, download: Callable[..., Any] | None = None) -> Fetched:
    """Fetch one adapter into its directory (a local one is served where it is) and check it; exits on failure."""
    def adapter_log(event: str, **fields: Any) -> None:
        log(event, name=adapter.name, **fields)

    dest = pathlib.Path(adapter.dir or adapter.uri)
    try:
        got = fetch(adapter.uri, dest, log=adapter_log, download=download or any_download, schemes=ADAPTER_SCHEMES, what="adapter")
    except Exception as error:  # the message names the URI; credentials never appear in it
        _fail(EXIT_FETCH, f"could not fetch adapter {adapter.name!r} from {adapter.uri}: {type(error).__name__}: {str(error)[:500]}")
    files, total = (got.files, got.bytes) if got.source != "local" else size_of(pathlib.Path(got.path))
    try:
        checked = check(adapter, pathlib.Path(got.path), known=known, max_rank=max_rank)
    except AdapterError as error:
        log("adapter_refused", name=adapter.name, uri=adapter.uri, dir=got.path, reason=str(error))
        _fail(EXIT_ADAPTER, str(error))
    log("adapter_fetched", name=adapter.name, uri=adapter.uri, dir=got.path, source=got.source, files=files, bytes=total,
        seconds=got.seconds, base=checked.base, base_check=checked.base_check, rank=checked.rank)
    return got


def main(argv: Sequence[str] | None = None, *, environ: dict[str, str] | None = None, nvml: Nvml | None = None,
         execv: Callable[[str, list[str]], Any] = os.execv, download: Callable[..., Any] | None = None) -> None:
    """Run the entrypoint; with the defaults, never returns (execs vLLM) or exits non-zero."""
    started = time.monotonic()
    args = list(sys.argv[1:] if argv is None else argv)
    env = os.environ if environ is None else environ
    uri = env.get(c.ENV_MODEL_URI)
    settings = engine_settings(args)
    if not uri:
        _fail(EXIT_FETCH, f"{c.ENV_MODEL_URI} is not set: the operator sets it on every serving container")
    try:
        adapters = parse(env.get(c.ENV_ADAPTERS))
    except AdapterError as error:
        _fail(EXIT_ADAPTER, str(error))
    served = {n for n in [env.get(c.ENV_SERVED_MODEL_NAME) or "", *settings.served_model_name] if n}
    for adapter in adapters:  # vLLM refuses it too, but only after loading the whole model
        if adapter.name in served:
            _fail(EXIT_ADAPTER, f"adapter {adapter.name!r} is named like the served model ({', '.join(sorted(served))}): "
                                "vLLM refuses an adapter that conflicts with a served base model")
    dest = pathlib.Path(env.get(c.ENV_MODEL_DIR) or settings.model or f"{c.MODEL_CACHE_DIR}/models/default")
    log("runtime_started", uri=uri, model_dir=str(dest), revision=env.get(c.ENV_REVISION), gpus=env.get(c.ENV_GPUS, "0"),
        adapters=[a.name for a in adapters])
    try:
        fetched = fetch(uri, dest, log=log, download=download) if download else fetch(uri, dest, log=log)
    except Exception as error:  # the message names the URI; credentials never appear in it
        _fail(EXIT_FETCH, f"could not fetch {uri}: {type(error).__name__}: {str(error)[:500]}")
    if adapters:
        known = served_names(uri=uri, model_path=fetched.path, source=fetched.source, model_arg=settings.model,
                             served_model_names=[env.get(c.ENV_SERVED_MODEL_NAME) or "", *settings.served_model_name])
        for adapter in adapters:
            fetch_adapter(adapter, known=known, max_rank=settings.max_lora_rank or VLLM_DEFAULT_MAX_LORA_RANK, download=download)
    model_bytes = int(env.get(c.ENV_MODEL_BYTES) or 0) or (fetched.bytes or (size_of(pathlib.Path(fetched.path))[1]
                                                                             if fetched.source == "local" else 0))
    request = Request(gpus=int(env.get(c.ENV_GPUS) or 0), tensor_parallel_size=settings.tensor_parallel_size,
                      pipeline_parallel_size=settings.pipeline_parallel_size,
                      gpu_memory_utilization=settings.gpu_memory_utilization, model_bytes=model_bytes)
    try:
        report = preflight(request, nvml or PynvmlBackend())
    except PreflightError as error:
        log("gpu_preflight_failed", reason=str(error), gpus=request.gpus, tensor_parallel_size=request.tensor_parallel_size,
            pipeline_parallel_size=request.pipeline_parallel_size, gpu_memory_utilization=request.gpu_memory_utilization,
            model_bytes=model_bytes)
        _fail(EXIT_PREFLIGHT, f"GPU preflight failed: {error}")
    log(**report.to_log())
    command = [sys.executable, "-m", c.VLLM_SERVER_MODULE, *args]
    log("exec_vllm", argv=redacted(command), fetch=fetched.source, seconds=round(time.monotonic() - started, 3))
    sys.stderr.flush()
    execv(sys.executable, command)
