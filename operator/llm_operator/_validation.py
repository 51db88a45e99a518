"""Checking custom resources the way the API server would, and a little further.

Three layers, all reported as :class:`FieldError` with the full field path (``spec.runtime.maxModelLen``):

1. the CRD's CEL rules (``x-kubernetes-validations``), read from the generated schema and evaluated with
   cel-python, so the operator enforces exactly the rules the API server enforces (an object may predate a
   CRD upgrade, or come from a server without CEL);
2. the pydantic field constraints (types, bounds, patterns: the same ones the schema carries), and the schema's
   constraints pydantic does not see (``metadata.name``'s length, ``runtime.env`` as a map keyed by name);
3. checks that need the operator's knowledge rather than the schema's (vLLM's quantization methods change
   between releases, so they are not frozen into the CRD; ``--api-key`` is refused in ``extraArgs``, where the key
   would be logged).

kube-apiserver ratchets a rule on a value that did not change, so an object stored before a stricter rule keeps
being writable; the operator still reports it (``InvalidSpec``), as if it were new.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import celpy
import pydantic
from celpy.adapter import json_to_cel

from . import _vllm_facts
from ._api import OPERATOR_MESSAGE, LLMDeployment, LLMDeploymentSpec, LLMRollout, LLMRolloutSpec, _Kind
from ._crdgen import crd_manifest

#: Quantization methods the pinned vLLM accepts for ``--quantization``: generated from vLLM itself (``_vllmgen``).
KNOWN_QUANTIZATIONS = _vllm_facts.QUANTIZATION_METHODS


@dataclass(frozen=True, order=True)
class FieldError:
    """One problem with one field: ``path`` like ``spec.runtime.maxModelLen``, and what is wrong."""

    path: str
    message: str

    def __str__(self) -> str:
        return f"{self.path}: {self.message}"


class InvalidSpec(ValueError):
    """A custom resource the operator cannot act on; ``errors`` names every offending field."""

    def __init__(self, errors: list[FieldError]):
        self.errors = sorted(set(errors))
        super().__init__("; ".join(str(e) for e in self.errors))


# ------------------------------------------------------------------------------------------- CEL


# A dict rather than functools.cache: mypy takes a type[...] argument for unhashable (python/mypy#11470).
_SCHEMAS: dict[type[_Kind], dict[str, Any]] = {}


def _schema(kind: type[_Kind]) -> dict[str, Any]:
    if kind not in _SCHEMAS:
        _SCHEMAS[kind] = crd_manifest(kind, operator_view=True)["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    return _SCHEMAS[kind]


@functools.cache
def _program(rule: str) -> Any:
    env = celpy.Environment()
    return env.program(env.compile(rule))


def _message(entry: Mapping[str, Any], value: Any) -> str:
    """The rule's detailed message (the operator-only expression, with the figures), else its ``message``."""
    if OPERATOR_MESSAGE in entry:
        try:
            return str(_program(entry[OPERATOR_MESSAGE]).evaluate({"self": json_to_cel(value)}))
        except Exception:
            pass
    return entry["message"]


def _walk(schema: Mapping[str, Any], value: Any, path: str) -> Iterator[FieldError]:
    for entry in schema.get("x-kubernetes-validations", []):
        try:
            result = _program(entry["rule"]).evaluate({"self": json_to_cel(value)})
        except Exception:  # an ill-typed object makes the rule unevaluable; the server refuses it too
            result = None
        if result is not True and not (isinstance(result, celpy.celtypes.BoolType) and bool(result)):
            yield FieldError((path + entry.get("fieldPath", "")).lstrip("."), _message(entry, value))
    if isinstance(value, Mapping):
        for name, sub in schema.get("properties", {}).items():
            if name in value and name != "status":
                yield from _walk(sub, value[name], f"{path}.{name}" if path else name)
        if isinstance(schema.get("additionalProperties"), Mapping):
            for name, item in value.items():
                yield from _walk(schema["additionalProperties"], item, f"{path}.{name}")
    elif isinstance(value, list) and isinstance(schema.get("items"), Mapping):
        for index, item in enumerate(value):
            yield from _walk(schema["items"], item, f"{path}[{index}]")


def cel_errors(kind: type[_Kind], body: Mapping[str, Any]) -> list[FieldError]:
    """Every CEL rule of ``kind``'s CRD that ``body`` (the whole object) breaks."""
    return list(_walk(_schema(kind), body, ""))


# -------------------------------------------------------------------------------------- pydantic


def pydantic_errors(error: pydantic.ValidationError, prefix: str) -> list[FieldError]:
    out = []
    for item in error.errors():
        loc = "".join(f"[{part}]" if isinstance(part, int) else f".{part}" for part in item["loc"])
        out.append(FieldError(prefix + loc, item["msg"] + (f" (got {item['input']!r})" if not isinstance(item["input"], (dict, list)) else "")))
    return out


def _quantization_errors(runtime: Any, path: str) -> list[FieldError]:
    """``runtime`` (a ``Runtime`` as written, at ``path``) names a quantization the pinned vLLM starts with."""
    value = runtime.get("quantization") if isinstance(runtime, Mapping) else None
    if not isinstance(value, str):
        return []
    version = _vllm_facts.VLLM_VERSION
    if value not in KNOWN_QUANTIZATIONS:
        known = ", ".join(sorted(KNOWN_QUANTIZATIONS))
        return [FieldError(f"{path}.quantization", f"unknown quantization {value!r}; vLLM {version} knows {known}")]
    extra_args = runtime.get("extraArgs")
    allowed = isinstance(extra_args, list) and "--allow-deprecated-quantization" in extra_args
    if value in _vllm_facts.DEPRECATED_QUANTIZATION_METHODS and not allowed:
        return [FieldError(f"{path}.quantization", f"quantization {value!r} is deprecated in vLLM {version}, which refuses "
                           f"to start with it unless {path}.extraArgs has --allow-deprecated-quantization")]
    return []


def _env_errors(runtime: Any, path: str) -> list[FieldError]:
    """``runtime.env`` (as written, at ``path``) names each variable once: the CRD declares it a map keyed by
    ``name``, which kube-apiserver enforces only for objects written after it did (and server-side apply of the
    Deployment refuses two entries of one name)."""
    env = runtime.get("env") if isinstance(runtime, Mapping) else None
    seen: dict[str, int] = {}
    errors = []
    for index, entry in enumerate(env if isinstance(env, list) else []):
        name = entry.get("name") if isinstance(entry, Mapping) else None
        if not isinstance(name, str):
            continue
        if name in seen:
            errors.append(FieldError(f"{path}.env[{index}]", f"duplicate name {name!r} (env[{seen[name]}] has it too): one entry per name"))
        else:
            seen[name] = index
    return errors


def _api_key_arg_errors(runtime: Any, path: str) -> list[FieldError]:
    """``runtime.extraArgs`` (as written, at ``path``) carries no ``--api-key``: on the command line the key would be
    in vLLM's log of its non-default arguments, the entrypoint's and in /proc; ``spec.auth.apiKey`` puts it in the
    environment from a Secret."""
    extra_args = runtime.get("extraArgs") if isinstance(runtime, Mapping) else None
    return [FieldError(f"{path}.extraArgs[{index}]", "--api-key would put the key on the command line and in vLLM's log: "
                       "use spec.auth.apiKey.secretRef (the key reaches vLLM as VLLM_API_KEY from the Secret)")
            for index, arg in enumerate(extra_args if isinstance(extra_args, list) else [])
            if isinstance(arg, str) and (arg == "--api-key" or arg.startswith("--api-key="))]


def _adapter_name_errors(body: Mapping[str, Any]) -> list[FieldError]:
    """No LoRA adapter named like the model it is served on (``model.servedModelName``, else the LLMDeployment's
    name): vLLM refuses one at start ("conflicts with a served base model"), after loading the whole model."""
    spec = body.get("spec")
    spec = spec if isinstance(spec, Mapping) else {}
    model = spec.get("model")
    model = model if isinstance(model, Mapping) else {}
    served = model.get("servedModelName") or (body.get("metadata") or {}).get("name")
    adapters = spec.get("adapters")
    adapters = adapters if isinstance(adapters, list) else []
    return [FieldError(f"spec.adapters[{index}].name", f"{served!r} is the base model's name (model.servedModelName, else the "
                       "LLMDeployment's name): vLLM refuses an adapter named like the model it serves")
            for index, adapter in enumerate(adapters) if isinstance(adapter, Mapping) and adapter.get("name") == served]


def _adapter_registry_errors(body: Mapping[str, Any]) -> list[FieldError]:
    """One MLflow registry per deployment: the adapters' ``mlflow.secretRef`` name the Secret ``model.mlflow.secretRef``
    names, or one another (a pod gets one MLFLOW_TRACKING_URI)."""
    spec = body.get("spec")
    spec = spec if isinstance(spec, Mapping) else {}
    model = spec.get("model")
    base = ((model.get("mlflow") or {}).get("secretRef") or {}).get("name") if isinstance(model, Mapping) else None
    adapters = spec.get("adapters")
    errors, first = [], base
    for index, adapter in enumerate(adapters if isinstance(adapters, list) else []):
        ref = adapter.get("mlflow") if isinstance(adapter, Mapping) else None
        secret = ((ref or {}).get("secretRef") or {}).get("name") if isinstance(ref, Mapping) else None
        if secret and first and secret != first:
            errors.append(FieldError(f"spec.adapters[{index}].mlflow.secretRef", f"names Secret {secret!r}, but the deployment's "
                                     f"registry is {first!r}'s: one MLflow registry per deployment (its pods get one tracking URI)"))
        first = first or secret
    return errors


def _lora_arg_errors(body: Mapping[str, Any]) -> list[FieldError]:
    """With ``spec.adapters``, ``runtime.extraArgs`` does not name the LoRA flags the operator renders: argparse keeps
    the last ``--lora-modules``, so one there would silently replace the adapters the operator fetched."""
    spec = body.get("spec")
    spec = spec if isinstance(spec, Mapping) else {}
    runtime = spec.get("runtime")
    extra = runtime.get("extraArgs") if isinstance(runtime, Mapping) else None
    if not spec.get("adapters") or not isinstance(extra, list):
        return []
    owned = ("--enable-lora", "--lora-modules", "--max-loras", "--max-lora-rank")
    return [FieldError(f"spec.runtime.extraArgs[{index}]", f"{arg.split('=', 1)[0]} is set from spec.adapters and "
                       "runtime.maxLoras / maxLoraRank: set them there")
            for index, arg in enumerate(extra)  # vLLM's parser reads --lora_modules as --lora-modules
            if isinstance(arg, str) and arg.split("=", 1)[0].replace("_", "-") in owned]


def _name_errors(kind: type[_Kind], body: Mapping[str, Any]) -> list[FieldError]:
    """``metadata.name`` within the CRD's ``maxLength`` (its CEL rules are checked with the others)."""
    limit = _schema(kind)["properties"]["metadata"].get("properties", {}).get("name", {}).get("maxLength")
    name = (body.get("metadata") or {}).get("name")
    if limit is not None and isinstance(name, str) and len(name) > limit:
        return [FieldError("metadata.name", f"must be at most {limit} characters (it has {len(name)}): the children's names add to it")]
    return []


def _parse(kind: type[_Kind], model: type[pydantic.BaseModel], body: Mapping[str, Any], extra: list[FieldError]) -> Any:
    errors = cel_errors(kind, body) + _name_errors(kind, body) + extra
    spec = None
    if not isinstance(body.get("spec"), Mapping):
        errors.append(FieldError("spec", "required"))
    else:
        try:
            spec = model.model_validate(body["spec"])
        except pydantic.ValidationError as exc:
            errors += pydantic_errors(exc, "spec")
    if errors:
        raise InvalidSpec(errors)
    return spec


def parse_llmdeployment(body: Mapping[str, Any]) -> LLMDeploymentSpec:
    """The validated spec of an LLMDeployment object.

    Raises:
        InvalidSpec: naming every field that breaks a CEL rule, a field constraint, or a runtime check.
    """
    spec = body.get("spec")
    runtime = spec.get("runtime") if isinstance(spec, Mapping) else None
    where = "spec.runtime"
    return _parse(LLMDeployment, LLMDeploymentSpec, body,
                  _quantization_errors(runtime, where) + _env_errors(runtime, where) + _api_key_arg_errors(runtime, where)
                  + _adapter_name_errors(body) + _adapter_registry_errors(body) + _lora_arg_errors(body))


def parse_llmrollout(body: Mapping[str, Any]) -> LLMRolloutSpec:
    """The validated spec of an LLMRollout object.

    Raises:
        InvalidSpec: naming every field that breaks a CEL rule, a field constraint, or the quantization,
            environment and ``--api-key`` checks of ``spec.target.runtime``.
    """
    spec = body.get("spec")
    target = spec.get("target") if isinstance(spec, Mapping) else None
    runtime = target.get("runtime") if isinstance(target, Mapping) else None
    where = "spec.target.runtime"
    return _parse(LLMRollout, LLMRolloutSpec, body,
                  _quantization_errors(runtime, where) + _env_errors(runtime, where) + _api_key_arg_errors(runtime, where))
