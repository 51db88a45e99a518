"""The operator agrees with the vLLM it pins: every vLLM command line the builders render (each sample, each
LLMRollout sample's target, and variants covering every engine flag the builders emit) parses with vLLM's own
server argument parser, and ``_vllm_facts`` is what that vLLM says about itself.

The ``vllm`` tests run vLLM in a subprocess of the vLLM environment's Python (``LLMOPS_VLLM_PYTHON``, default
``.venv-vllm/bin/python``, built by ``make vllm-env``; ``make test`` sets it). Without that variable and without
the default environment they are skipped; with the variable set to a missing Python they fail.
"""

import json
import os
import pathlib
import re
import subprocess
import typing

import pytest

from llm_operator import _builders as b
from llm_operator import _vllm_facts
from llm_operator._api import DEFAULT_RUNTIME_IMAGE, Runtime
from llm_operator._progressive import target_of
from llm_operator._validation import parse_llmdeployment, parse_llmrollout
from tests.conftest import ROOT, load_samples

GENERATOR = ROOT / "operator" / "llm_operator" / "_vllmgen.py"
FACTS = ROOT / "operator" / "llm_operator" / "_vllm_facts.py"


@pytest.fixture(scope="module")
def vllm_python() -> str:
    explicit = os.environ.get("LLMOPS_VLLM_PYTHON")
    # Absolute, not resolved: the venv's python is a symlink, and resolving it would leave the venv.
    path = os.path.abspath(explicit or ROOT / ".venv-vllm" / "bin" / "python")
    if not pathlib.Path(path).exists():
        if explicit:
            pytest.fail(f"LLMOPS_VLLM_PYTHON={explicit}: no such Python (run `make vllm-env`)")
        pytest.skip(f"no vLLM environment at {path}: run `make vllm-env` (make test does)")
    return path


def _generator(python: str, command: str, stdin: str = "") -> str:
    """Run ``_vllmgen.py COMMAND`` in the vLLM environment; its stdout."""
    env = {**os.environ, "VLLM_NO_USAGE_STATS": "1", "DO_NOT_TRACK": "1"}
    done = subprocess.run([python, str(GENERATOR), command], input=stdin, capture_output=True, text=True,
                          env=env, cwd=ROOT, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout


# ------------------------------------------------------------------------------ command lines


def _args(doc: dict, spec=None, model=None) -> list[str]:
    spec = spec or parse_llmdeployment(doc)
    revision = b.make_revision(spec, model or b.static_model(spec))
    deployment = b.build_deployment(doc["metadata"]["name"], doc["metadata"].get("namespace", "default"), spec, revision, 1)
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    return container["args"]


def _variant(**runtime) -> dict:
    """An LLMDeployment whose runtime is ``runtime`` (vLLM names), on as many GPUs as its parallelism needs."""
    gpus = runtime.get("tensorParallelSize", 1) * runtime.get("pipelineParallelSize", 1)
    return {"apiVersion": "llmops.dev/v1alpha1", "kind": "LLMDeployment", "metadata": {"name": "variant", "namespace": "ns"},
            "spec": {"model": {"uri": "hf://org/model"}, "runtime": runtime, "resources": {"gpus": gpus}}}


def _literal_values(annotation) -> list[str]:
    """The values of the ``Literal`` in an annotation such as ``Literal["a", "b"] | None``: every value the CRD
    accepts for the field."""
    (literal,) = [a for a in typing.get_args(annotation) if typing.get_origin(a) is typing.Literal]
    return list(typing.get_args(literal))


#: Engine arguments the builders emit, each value at least once, both polarities of every boolean.
VARIANTS = {
    "every valued flag": _variant(maxModelLen=4096, gpuMemoryUtilization=0.85, tensorParallelSize=2, pipelineParallelSize=2,
                                  quantization="fp8", kvCacheDtype="fp8", maxNumSeqs=64, maxNumBatchedTokens=8192),
    "booleans on": _variant(enablePrefixCaching=True, enforceEager=True),
    "booleans off": _variant(enablePrefixCaching=False, enforceEager=False),
    "kv cache auto": _variant(kvCacheDtype="auto"),
    "deprecated quantization allowed": _variant(quantization="fbgemm_fp8", extraArgs=["--allow-deprecated-quantization"]),
    "mlflow version": {**_variant(), "spec": {"model": {"mlflow": {"name": "m", "version": "4"}, "servedModelName": "m"}}},
    "pvc model": {**_variant(), "spec": {"model": {"uri": "pvc://store/org/model"}, "resources": {"gpus": 0}}},
    **{f"dtype {dtype}": _variant(dtype=dtype) for dtype in _literal_values(Runtime.model_fields["dtype"].annotation)},
}


def rendered_command_lines() -> dict[str, list[str]]:
    """Every vLLM argument list the builders render for the samples and :data:`VARIANTS`, by case name."""
    samples = load_samples()
    out = {}
    for name, doc in samples.items():
        if doc["kind"] == "LLMDeployment":
            out[f"samples/{name}"] = _args(doc)
    for name, doc in samples.items():
        if doc["kind"] == "LLMRollout":  # the target revision: the deployment's spec with the rollout's model and runtime
            deployment = next(d for d in samples.values()
                              if d["kind"] == "LLMDeployment" and d["metadata"]["name"] == doc["spec"]["deploymentName"])
            spec, model = target_of(parse_llmdeployment(deployment), parse_llmrollout(doc))
            out[f"samples/{name}"] = _args(deployment, spec, model)
    for name, doc in VARIANTS.items():
        out[name] = _args(doc)
    return out


def test_the_variants_cover_every_engine_flag_the_builders_emit():
    emitted = {arg for args in rendered_command_lines().values() for arg in args if arg.startswith("--")}
    for flag in b._ENGINE_FLAGS.values():
        assert flag in emitted, flag
    for flag in ("--enable-prefix-caching", "--enforce-eager"):
        assert "--no-" + flag[2:] in emitted, flag


@pytest.mark.vllm
def test_every_rendered_command_line_parses_with_vllms_own_parser(vllm_python):
    cases = rendered_command_lines()
    negative = {"vLLM 0.31's --disable-log-requests": cases["samples/llmdeployment-minimal"] + ["--disable-log-requests"]}
    results = json.loads(_generator(vllm_python, "check-args", json.dumps(list(cases.values()) + list(negative.values()))))
    assert len(results) == len(cases) + len(negative)
    refused = {name: r["error"] for name, r in zip(cases, results[:len(cases)], strict=True) if not r["ok"]}
    assert refused == {}, json.dumps(refused, indent=1)
    # The check can fail: the flag the multi-GPU sample used to pass is refused by vLLM 0.32.
    (control,) = results[len(cases):]
    assert not control["ok"] and "unrecognized arguments: --disable-log-requests" in control["error"]


# ------------------------------------------------------------------------------------ vLLM facts


@pytest.mark.vllm
def test_vllm_facts_are_what_the_pinned_vllm_says(vllm_python):
    generated = _generator(vllm_python, "facts")
    assert generated == FACTS.read_text(), (
        "operator/llm_operator/_vllm_facts.py differs from the installed vLLM: regenerate it with\n"
        f"  {os.path.relpath(vllm_python, ROOT)} operator/llm_operator/_vllmgen.py facts > operator/llm_operator/_vllm_facts.py")


def test_vllm_facts_name_the_vllm_the_image_and_the_vllm_env_pin():
    version = _vllm_facts.VLLM_VERSION
    assert DEFAULT_RUNTIME_IMAGE.endswith(f"-vllm{version}")
    dockerfile = (ROOT / "runtime-image" / "Dockerfile").read_text()
    assert re.search(rf"^ARG VLLM_IMAGE=vllm/vllm-openai:v{re.escape(version)}$", dockerfile, re.M)
    makefile = (ROOT / "Makefile").read_text()
    assert re.search(rf"^VLLM_VERSION\s*:=\s*{re.escape(version)}$", makefile, re.M)
