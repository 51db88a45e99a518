"""The operator agrees with the vLLM it pins: ``_vllm_facts`` is what that vLLM says about itself.

The ``vllm`` tests run vLLM in a subprocess of the vLLM environment's Python (``LLMOPS_VLLM_PYTHON``, default
``.venv-vllm/bin/python``, built by ``make vllm-env``; ``make test`` sets it). Without that variable and without
the default environment they are skipped; with the variable set to a missing Python they fail.
"""

import os
import pathlib
import re
import subprocess

import pytest

from llm_operator import _vllm_facts
from llm_operator._api import DEFAULT_RUNTIME_IMAGE
from tests.conftest import ROOT

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
