"""Validation of emitted objects against upstream schemas.

Built-in kinds: ``kubernetes-validate`` (the upstream OpenAPI schemas, strict: unknown fields fail).
Custom kinds: the upstream CRDs under ``../shared/schemas`` (Istio, KEDA, Prometheus Operator, Argo CD,
Gateway API), and this project's own ``crds/``, with jsonschema.
"""

from __future__ import annotations

import functools
import os
import pathlib
from typing import Any

import jsonschema
import kubernetes_validate
import yaml
from llm_sandbox.openapi import object_schema

ROOT = pathlib.Path(__file__).resolve().parents[1]
SHARED_SCHEMAS = pathlib.Path(os.environ.get("LLMOPS_SHARED_SCHEMAS", ROOT.parent / "shared" / "schemas"))
_BUILTIN_GROUPS = {"", "apps", "autoscaling", "policy", "batch", "networking.k8s.io", "rbac.authorization.k8s.io",
                   "apiextensions.k8s.io", "coordination.k8s.io", "events.k8s.io"}
KUBERNETES_VERSION = "1.33.0"


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
