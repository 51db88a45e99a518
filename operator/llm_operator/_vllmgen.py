"""What the operator needs to know about the pinned vLLM, read from vLLM itself. Runs in the vLLM environment.

The operator does not import vLLM (it would need PyTorch); this module is its bridge to the vLLM environment
(``make vllm-env`` builds ``.venv-vllm``), run there as a script. It imports only the standard library at module
level, so the operator's own test run imports it too (doctests), and vLLM inside the commands::

    .venv-vllm/bin/python operator/llm_operator/_vllmgen.py facts > operator/llm_operator/_vllm_facts.py
    .venv-vllm/bin/python operator/llm_operator/_vllmgen.py check-args < command-lines.json

``facts`` writes the committed module :mod:`llm_operator._vllm_facts`: the vLLM version, its quantization methods
(``vllm.model_executor.layers.quantization``) and the values of ``finished_reason`` on
``vllm:request_success_total`` (``vllm.v1.engine.FinishReason``, labelled with ``str(reason)`` by
``vllm/v1/metrics/loggers.py``). A test regenerates it in memory and fails when the two differ.

``check-args`` reads a JSON list of argument lists (the container's ``args``) and parses each exactly as
``python -m vllm.entrypoints.openai.api_server`` does before it loads anything (``make_arg_parser``,
``validate_parsed_serve_args``, then ``AsyncEngineArgs.from_cli_args``), writing a JSON list of
``{"ok": bool, "error": str}``, one per argument list, in order.
"""

from __future__ import annotations

import contextlib
import io
import json
import sys
from typing import Any


def facts() -> dict[str, Any]:
    """The facts, from the installed vLLM: ``version`` (str), ``quantization_methods`` and
    ``deprecated_quantization_methods`` (sorted lists of str), ``finished_reasons`` (tuple of str, in
    ``FinishReason`` order).

    Quantization methods that plugins register at engine start (``register_quantization_config``) are not
    included: importing the module loads no plugin.
    """
    import vllm
    from vllm.model_executor.layers import quantization
    from vllm.v1.engine import FinishReason

    return {
        "version": vllm.__version__,
        "quantization_methods": sorted(quantization.QUANTIZATION_METHODS),
        "deprecated_quantization_methods": sorted(quantization.DEPRECATED_QUANTIZATION_METHODS),
        "finished_reasons": tuple(str(reason) for reason in FinishReason),
    }


def _frozenset(values: list[str], indent: str = "    ") -> str:
    lines, line = [], indent
    for value in values:
        item = f'"{value}", '
        if len(line) + len(item) > 112:
            lines.append(line.rstrip())
            line = indent
        line += item
    lines.append(line.rstrip())
    return "frozenset({\n" + "\n".join(lines) + "\n})"


def render(found: dict[str, Any]) -> str:
    """The source of ``_vllm_facts.py`` for ``found`` (the shape :func:`facts` returns).

    >>> print(render({"version": "1.0", "quantization_methods": ["a"], "deprecated_quantization_methods": [],
    ...               "finished_reasons": ("stop",)}).splitlines()[-1])
    FINISHED_REASONS = ("stop",)
    """
    reasons = ", ".join(f'"{r}"' for r in found["finished_reasons"]) + ("," if len(found["finished_reasons"]) == 1 else "")
    deprecated = _frozenset(found["deprecated_quantization_methods"]) if found["deprecated_quantization_methods"] else "frozenset()"
    return f'''"""Facts about vLLM {found["version"]}, the version the serving image pins. Generated: do not edit.

Regenerate in the vLLM environment after changing the pin (a test fails until you do):
    .venv-vllm/bin/python operator/llm_operator/_vllmgen.py facts > operator/llm_operator/_vllm_facts.py
"""

#: ``vllm.__version__``.
VLLM_VERSION = "{found["version"]}"

#: ``vllm.model_executor.layers.quantization.QUANTIZATION_METHODS``: what ``--quantization`` accepts.
QUANTIZATION_METHODS = {_frozenset(found["quantization_methods"])}

#: ``DEPRECATED_QUANTIZATION_METHODS``: refused at start unless ``--allow-deprecated-quantization`` is given.
DEPRECATED_QUANTIZATION_METHODS = {deprecated}

#: ``vllm.v1.engine.FinishReason`` as the ``finished_reason`` label of ``vllm:request_success_total`` carries it.
FINISHED_REASONS = ({reasons})
'''


def check_args(command_lines: list[list[str]]) -> list[dict[str, Any]]:
    """Parse each argument list as vLLM's OpenAI server does at start; ``{"ok", "error"}`` for each.

    ``error`` is argparse's message (``unrecognized arguments: --disable-log-requests``) or the exception
    vLLM's validation raised; empty when ``ok``.
    """
    from vllm.engine.arg_utils import AsyncEngineArgs
    from vllm.entrypoints.launchers.cli_args import make_arg_parser, validate_parsed_serve_args
    from vllm.utils.argparse_utils import FlexibleArgumentParser

    parser = make_arg_parser(FlexibleArgumentParser(prog="vllm.entrypoints.openai.api_server"))
    out = []
    for argv in command_lines:
        stderr = io.StringIO()
        try:
            with contextlib.redirect_stderr(stderr):
                args = parser.parse_args(list(argv))
            validate_parsed_serve_args(args)
            AsyncEngineArgs.from_cli_args(args)
        except SystemExit:
            lines = [line for line in stderr.getvalue().splitlines() if line.strip()]
            out.append({"ok": False, "error": lines[-1] if lines else "argparse exited"})
        except Exception as error:  # vLLM's own validation: ValueError, TypeError and friends
            out.append({"ok": False, "error": f"{type(error).__name__}: {error}"})
        else:
            out.append({"ok": True, "error": ""})
    return out


def main(argv: list[str]) -> int:
    if argv not in (["facts"], ["check-args"]):
        sys.stderr.write("usage: _vllmgen.py facts | check-args < command-lines.json\n")
        return 2
    out = sys.stdout
    # vLLM logs to stdout (its default logging config binds sys.stdout when vllm.logger is imported): keep
    # stdout for the result alone.
    with contextlib.redirect_stdout(sys.stderr):
        text = render(facts()) if argv == ["facts"] else json.dumps(check_args(json.load(sys.stdin)))
    out.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
