"""Structural OpenAPI v3 (a CRD's openAPIV3Schema) to JSON Schema, and CEL rule checking, as an API server
applies them to custom resources."""

from __future__ import annotations

import functools
import re
import json
from collections.abc import Iterator, Mapping
from typing import Any

import celpy
import jsonschema


def to_jsonschema(node: Any, *, strict: bool = True) -> Any:
    """OpenAPI v3.0 structural schema -> JSON Schema (draft 7): ``nullable``, int-or-string, boolean exclusive
    bounds, and unknown fields refused where the schema lists properties (``strict``; an API server prunes them
    otherwise)."""
    if isinstance(node, list):
        return [to_jsonschema(item, strict=strict) for item in node]
    if not isinstance(node, dict):
        return node
    out = {k: to_jsonschema(v, strict=strict) for k, v in node.items() if not k.startswith("x-kubernetes-")}
    pattern = out.get("pattern")
    if isinstance(pattern, str) and pattern.startswith("^(?i)"):
        out["pattern"] = "(?i)^" + pattern[5:]  # Go allows the flag after the anchor; Python wants it first
    if node.get("x-kubernetes-int-or-string"):
        out.pop("type", None)
        out.setdefault("anyOf", [{"type": "integer"}, {"type": "string"}])
    if node.get("nullable") and "type" in out:
        out["type"] = [out["type"], "null"]
    out.pop("nullable", None)
    for bound, limit in (("exclusiveMinimum", "minimum"), ("exclusiveMaximum", "maximum")):
        if out.get(bound) is True:
            out[bound] = out.pop(limit)
        elif out.get(bound) is False:
            del out[bound]
    if node.get("x-kubernetes-preserve-unknown-fields"):
        out.setdefault("additionalProperties", True)
    elif strict and out.get("type") == "object" and "properties" in out and "additionalProperties" not in out:
        out["additionalProperties"] = False
    return out


def object_schema(crd_schema: Mapping[str, Any], *, strict: bool = True) -> dict[str, Any]:
    """A JSON Schema for whole objects of a kind: the API server handles apiVersion, kind and metadata itself."""
    schema = to_jsonschema(dict(crd_schema), strict=strict)
    schema.setdefault("properties", {}).update(apiVersion={"type": "string"}, kind={"type": "string"}, metadata={"type": "object"})
    return schema


def _path(error: jsonschema.ValidationError) -> str:
    return ".".join(str(p) if not isinstance(p, int) else f"[{p}]" for p in error.absolute_path).replace(".[", "[")


def schema_errors(crd_schema: Mapping[str, Any], obj: Mapping[str, Any], *, strict: bool = True) -> list[tuple[str, str]]:
    """(field, message) pairs in the API server's style: ``("spec.runtime.maxModelLen", "Invalid value: 0: ...")``."""
    validator = jsonschema.Draft7Validator(object_schema(crd_schema, strict=strict))
    out = []
    for error in sorted(validator.iter_errors(obj), key=lambda e: list(map(str, e.absolute_path))):
        where = _path(error) or "<root>"
        if error.validator == "additionalProperties":
            out.append((where, f"Unsupported value: {error.message}"))
        else:
            out.append((where, f"Invalid value: {json.dumps(error.instance)}: {error.message}"))
    return out


_MISSING = object()


def value_at(obj: Any, path: str) -> Any:
    """The value at a field path like ``spec.runtime.maxModelLen`` or ``spec.steps[0].pause`` (a sentinel when absent)."""
    for part in re.findall(r"[^.\[\]]+|\[\d+\]", path):
        if part.startswith("["):
            index = int(part[1:-1])
            obj = obj[index] if isinstance(obj, list) and index < len(obj) else _MISSING
        else:
            obj = obj.get(part, _MISSING) if isinstance(obj, Mapping) else _MISSING
    return obj


@functools.cache
def _program(expression: str) -> Any:
    env = celpy.Environment()
    return env.program(env.compile(expression))


def _walk(schema: Mapping[str, Any], value: Any, path: str) -> Iterator[tuple[str, str]]:
    for rule in schema.get("x-kubernetes-validations", []):
        try:
            ok = bool(_program(rule["rule"]).evaluate({"self": celpy.json_to_cel(value)}))
        except Exception:
            ok = False
        if not ok:
            message = rule.get("message") or f"failed rule: {rule['rule']}"
            if "messageExpression" in rule:
                try:
                    message = str(_program(rule["messageExpression"]).evaluate({"self": celpy.json_to_cel(value)}))
                except Exception:
                    pass
            yield (path + rule.get("fieldPath", "")).lstrip(".") or "<root>", f"Invalid value: {message}"
    if isinstance(value, Mapping):
        for name, sub in schema.get("properties", {}).items():
            if name in value:
                yield from _walk(sub, value[name], f"{path}.{name}")
    elif isinstance(value, list) and isinstance(schema.get("items"), Mapping):
        for index, item in enumerate(value):
            yield from _walk(schema["items"], item, f"{path}[{index}]")


def cel_errors(crd_schema: Mapping[str, Any], obj: Mapping[str, Any]) -> list[tuple[str, str]]:
    """Every ``x-kubernetes-validations`` rule the object breaks, with its field path."""
    return list(_walk(crd_schema, obj, ""))
