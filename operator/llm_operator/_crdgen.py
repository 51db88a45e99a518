"""CustomResourceDefinitions generated from the pydantic API types.

pydantic emits JSON Schema 2020-12 (``$defs``/``$ref``, ``anyOf`` with a null branch for optional fields,
numeric ``exclusiveMinimum``); the API server wants a *structural* OpenAPI v3 schema: every node typed,
no references, no null branches. :func:`structural` rewrites one into the other (kube-rs calls its version
``StructuralSchemaRewriter``); :func:`crd_manifests` wraps the result into CRDs. ``crds/*.yaml`` is this
module's committed output and a unit test fails when the two drift apart.
"""

from __future__ import annotations

import copy
from typing import Any

from ._api import GROUP, KINDS, OPERATOR_ONLY, VERSION, _Kind

_DROP = {"title", "default", "$defs"}


def _resolve(node: Any, defs: dict[str, Any]) -> Any:
    if isinstance(node, list):
        return [_resolve(item, defs) for item in node]
    if not isinstance(node, dict):
        return node
    if "$ref" in node:
        target = copy.deepcopy(defs[node["$ref"].rsplit("/", 1)[-1]])
        extra = {key: value for key, value in node.items() if key != "$ref"}
        node = {**target, **extra}  # the referring field's description wins over the model's
    return {key: _resolve(value, defs) for key, value in node.items()}


def _rewrite(node: dict[str, Any]) -> dict[str, Any]:
    node = {key: value for key, value in node.items() if key not in _DROP}

    branches = node.pop("anyOf", None)
    if branches is not None:
        branches = [branch for branch in branches if branch.get("type") != "null"]
        types = {branch.get("type") for branch in branches}
        if len(branches) == 1:
            node = {**branches[0], **node}  # outer description wins
        elif types == {"integer", "string"} or node.get("x-kubernetes-int-or-string"):
            node["x-kubernetes-int-or-string"] = True
            patterns = [branch["pattern"] for branch in branches if "pattern" in branch]
            if patterns:
                node["pattern"] = patterns[0]
            node["anyOf"] = [{"type": "integer"}, {"type": "string"}]
            return node
        else:
            raise ValueError(f"cannot express anyOf {branches!r} in a structural schema")
        return _rewrite(node)

    if "const" in node:
        node["enum"] = [node.pop("const")]
    for bound, limit in (("exclusiveMinimum", "minimum"), ("exclusiveMaximum", "maximum")):
        if isinstance(node.get(bound), (int, float)) and not isinstance(node.get(bound), bool):
            node[limit] = node.pop(bound)
            node[bound] = True

    if node.get("additionalProperties") is True or (node.get("x-kubernetes-preserve-unknown-fields") and "properties" not in node):
        node.pop("additionalProperties", None)
        node["type"] = "object"
        node["x-kubernetes-preserve-unknown-fields"] = True
    elif node.get("additionalProperties") is False:
        del node["additionalProperties"]
    elif isinstance(node.get("additionalProperties"), dict):
        node["additionalProperties"] = _rewrite(node["additionalProperties"])

    if "properties" in node:
        node["properties"] = {name: _rewrite(sub) for name, sub in node["properties"].items()}
        node.setdefault("type", "object")
    if isinstance(node.get("items"), dict):
        node["items"] = _rewrite(node["items"])
    if "type" not in node and not node.get("x-kubernetes-int-or-string"):
        raise ValueError(f"untyped schema node: {node!r}")
    return node


def structural(model: type) -> dict[str, Any]:
    """The structural OpenAPI v3 schema of a pydantic model (wire names, no ``$ref``, no null branches).

    Raises:
        ValueError: when the model uses a construct a structural schema cannot express.
    """
    raw = model.model_json_schema(by_alias=True, mode="validation")  # type: ignore[attr-defined]
    return _rewrite(_resolve(raw, raw.get("$defs", {})))


def _api_server_view(node: Any) -> Any:
    """``node`` without the operator-only keys (:data:`~._api.OPERATOR_ONLY`), which kube-apiserver must not see."""
    if isinstance(node, list):
        return [_api_server_view(item) for item in node]
    if isinstance(node, dict):
        return {key: _api_server_view(value) for key, value in node.items() if not key.startswith(OPERATOR_ONLY)}
    return node


def _metadata(kind: type[_Kind]) -> dict[str, Any]:
    """The ``metadata`` schema: the constraints ``kind`` puts on ``metadata.name`` (kube-apiserver accepts those on
    ``name`` and ``generateName`` only), else an untyped object."""
    name: dict[str, Any] = {}
    if kind.name_max_length is not None:
        name["maxLength"] = kind.name_max_length
    if kind.name_rules:
        name["x-kubernetes-validations"] = [{"rule": rule, "message": message} for rule, message in kind.name_rules]
    if not name:
        return {"type": "object"}
    return {"type": "object", "properties": {"name": {"type": "string", **({"description": kind.name_description}
                                                                           if kind.name_description else {}), **name}}}


def crd_manifest(kind: type[_Kind], *, operator_view: bool = False) -> dict[str, Any]:
    """One ``apiextensions.k8s.io/v1`` CustomResourceDefinition for ``kind``; ``operator_view`` keeps the
    operator-only keys (the detailed CEL messages) that the committed CRD leaves out."""
    root: dict[str, Any] = {
        "type": "object",
        "description": kind.spec_model.__doc__.strip().split("\n")[0].replace("Desired state of", "An") if kind.spec_model.__doc__ else kind.kind,
        "properties": {
            "apiVersion": {"type": "string"},
            "kind": {"type": "string"},
            "metadata": _metadata(kind),
            "spec": structural(kind.spec_model),
            "status": structural(kind.status_model),
        },
        "required": ["spec"],
    }
    if not operator_view:
        root = _api_server_view(root)
    subresources: dict[str, Any] = {"status": {}}
    if "replicas" in kind.spec_model.model_fields:
        subresources["scale"] = {"specReplicasPath": ".spec.replicas", "statusReplicasPath": ".status.replicas"}
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {
            "name": f"{kind.plural}.{GROUP}",
            "labels": {"app.kubernetes.io/name": "llm-operator", "app.kubernetes.io/part-of": "llm-operator"},
        },
        "spec": {
            "group": GROUP,
            "scope": "Namespaced",
            "names": {
                "kind": kind.kind,
                "listKind": f"{kind.kind}List",
                "plural": kind.plural,
                "singular": kind.singular,
                "shortNames": list(kind.short_names),
                "categories": list(kind.categories),
            },
            "versions": [
                {
                    "name": VERSION,
                    "served": True,
                    "storage": True,
                    "subresources": subresources,
                    "additionalPrinterColumns": [col.to_wire() for col in kind.printer_columns],
                    **({"selectableFields": [{"jsonPath": path} for path in kind.selectable_fields]}
                       if kind.selectable_fields else {}),
                    "schema": {"openAPIV3Schema": root},
                }
            ],
        },
    }


def crd_manifests() -> dict[str, dict[str, Any]]:
    """All CRDs, keyed by the file name they are committed under in ``crds/``."""
    return {f"{GROUP}_{kind.plural}.yaml": crd_manifest(kind) for kind in KINDS}
