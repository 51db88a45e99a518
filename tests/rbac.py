"""What an API call needs from RBAC: (API group, resource[/subresource], verb), as the API server's
authorizer sees it (https://kubernetes.io/docs/reference/access-authn-authz/authorization/#determine-the-request-verb)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

VERBS = {"POST": "create", "PUT": "update", "PATCH": "patch"}


def needed(method: str, path: str, query: dict[str, str]) -> tuple[str, str, str] | None:
    """The (group, resource, verb) a request to ``path`` needs; None for non-resource paths (discovery)."""
    parts = [p for p in path.split("/") if p]
    if parts[:1] == ["api"] and len(parts) >= 2:
        group, rest = "", parts[2:]
    elif parts[:1] == ["apis"] and len(parts) >= 3:
        group, rest = parts[1], parts[3:]
    else:
        return None
    if not rest:
        return None  # discovery of a group version
    if rest[0] == "namespaces" and len(rest) >= 3:
        rest = rest[2:]
    resource, name, sub = rest[0], rest[1] if len(rest) > 1 else None, rest[2] if len(rest) > 2 else None
    if method == "GET":
        verb = "watch" if query.get("watch") in ("true", "1") else ("get" if name else "list")
    elif method == "DELETE":
        verb = "delete" if name else "deletecollection"
    else:
        verb = VERBS[method]
    return group, f"{resource}/{sub}" if sub else resource, verb


def granted(rules: Iterable[dict[str, Any]], need: tuple[str, str, str]) -> bool:
    group, resource, verb = need
    return any(group in r.get("apiGroups", []) and (resource in r.get("resources", []) or "*" in r.get("resources", []))
               and (verb in r.get("verbs", []) or "*" in r.get("verbs", [])) for r in rules)
