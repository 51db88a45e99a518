"""Server-side ``meta.k8s.io/v1`` Tables for ``kubectl get``, built from a CRD's additionalPrinterColumns the
way kube-apiserver's table convertor does: the first JSONPath result per column, ``date`` columns as a
human-readable age, missing values as null (kubectl prints ``<none>``)."""

from __future__ import annotations

import datetime
from typing import Any

from jsonpath_ng.ext import parse

_NAME_COLUMN = {"name": "Name", "type": "string", "format": "name", "description": "Name must be unique within a namespace.", "priority": 0}
_AGE_COLUMN = {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"}


def human_age(timestamp: str, now: datetime.datetime | None = None) -> str:
    """Kubernetes' ``ConvertToHumanReadableDateType``/``HumanDuration``: 45s, 3m12s, 5h, 2d."""
    now = now or datetime.datetime.now(tz=datetime.UTC)
    seconds = int((now - datetime.datetime.fromisoformat(timestamp.replace("Z", "+00:00"))).total_seconds())
    if seconds < 0:
        return "0s"
    if seconds < 120:
        return f"{seconds}s"
    minutes = seconds // 60
    if minutes < 10:
        return f"{minutes}m{seconds % 60}s" if seconds % 60 else f"{minutes}m"
    if minutes < 180:
        return f"{minutes}m"
    hours = minutes // 60
    if hours < 8:
        return f"{hours}h{minutes % 60}m" if minutes % 60 else f"{hours}h"
    if hours < 48:
        return f"{hours}h"
    days = hours // 24
    return f"{days}d" if days < 365 * 2 else f"{days // 365}y"


def _cell(column: dict[str, Any], obj: dict[str, Any]) -> Any:
    found = parse("$" + column["jsonPath"]).find(obj)
    if not found or found[0].value is None:
        return None
    value = found[0].value
    kind = column["type"]
    if kind == "date":
        return human_age(value) if isinstance(value, str) else None
    if kind == "integer":
        return int(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None
    if kind == "number":
        return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None
    if kind == "boolean":
        return value if isinstance(value, bool) else None
    return value if isinstance(value, str) else str(value).lower() if isinstance(value, bool) else str(value)


def table(printer_columns: list[dict[str, Any]] | None, objects: list[dict[str, Any]], resource_version: str) -> dict[str, Any]:
    """The Table for ``objects``; without printer columns, Name and Age as for any custom resource."""
    columns = printer_columns if printer_columns else [_AGE_COLUMN]
    definitions = [_NAME_COLUMN] + [
        {"name": c["name"], "type": c["type"], "format": c.get("format", ""),
         "description": c.get("description") or f"Custom resource definition column (in JSONPath format): {c['jsonPath']}",
         "priority": c.get("priority", 0)}
        for c in columns
    ]
    rows = [
        {
            "cells": [obj["metadata"]["name"], *(_cell(c, obj) for c in columns)],
            "object": {"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1", "metadata": obj["metadata"]},
        }
        for obj in objects
    ]
    return {"kind": "Table", "apiVersion": "meta.k8s.io/v1", "metadata": {"resourceVersion": resource_version},
            "columnDefinitions": definitions, "rows": rows}
