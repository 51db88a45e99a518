"""Validation of emitted objects against upstream schemas.

Built-in kinds: ``kubernetes-validate`` (the upstream OpenAPI schemas, strict: unknown fields fail).
Custom kinds: the upstream CRDs under ``../shared/schemas`` (Istio, KEDA, Prometheus Operator, Argo CD,
Gateway API), and this project's own ``crds/``, with jsonschema.
"""

from __future__ import annotations

import functools
import os
import pathlib
from collections.abc import Mapping
from typing import Any

import jsonschema
import kubernetes_validate
import yaml

ROOT = pathlib.Path(__file__).resolve().parents[1]
SHARED_SCHEMAS = pathlib.Path(os.environ.get("LLMOPS_SHARED_SCHEMAS", ROOT.parent / "shared" / "schemas"))
_BUILTIN_GROUPS = {"", "apps", "autoscaling", "policy", "batch", "networking.k8s.io", "rbac.authorization.k8s.io",
                   "apiextensions.k8s.io", "coordination.k8s.io", "events.k8s.io"}
KUBERNETES_VERSION = "1.33.0"


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


@functools.cache
def _crd_schemas() -> dict[tuple[str, str], dict[str, Any]]:
    """(apiVersion, kind) -> openAPIV3Schema, from the shared upstream CRDs and our own."""
    out: dict[tuple[str, str], dict[str, Any]] = {}
    files = sorted(SHARED_SCHEMAS.glob("*.yaml")) + sorted((ROOT / "crds").glob("*.yaml"))
    for path in files:
        for doc in yaml.safe_load_all(path.read_text()):
            if not doc or doc.get("kind") != "CustomResourceDefinition":
                continue
            spec = doc["spec"]
            for version in spec["versions"]:
                schema = version.get("schema", {}).get("openAPIV3Schema")
                if schema:
                    out[(f"{spec['group']}/{version['name']}", spec["names"]["kind"])] = schema
    return out


def validate(obj: dict[str, Any]) -> None:
    """Raise when ``obj`` breaks its upstream schema (or its kind has none we know)."""
    key = (obj.get("apiVersion"), obj.get("kind"))
    if key in _crd_schemas():
        jsonschema.validate(obj, object_schema(_crd_schemas()[key]), cls=jsonschema.Draft7Validator)
        return
    group = str(obj.get("apiVersion", "")).rpartition("/")[0]
    if group not in _BUILTIN_GROUPS:
        raise LookupError(f"no upstream schema for {key}: expected its CRD under {SHARED_SCHEMAS} "
                          "(the shared/ folder beside the checkout, or LLMOPS_SHARED_SCHEMAS)")
    kubernetes_validate.validate(obj, KUBERNETES_VERSION, strict=True)
