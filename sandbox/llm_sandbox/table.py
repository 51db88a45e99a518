"""``kubectl get``-style tables from a CRD's additionalPrinterColumns (JSONPath via jsonpath-ng)."""

from __future__ import annotations

import datetime
from typing import Any

from jsonpath_ng.ext import parse


def age(timestamp: str | None, now: datetime.datetime | None = None) -> str:
    """kubectl's short age: 45s, 3m12s, 5h, 2d."""
    if not timestamp:
        return "<unknown>"
    now = now or datetime.datetime.now(tz=datetime.UTC)
    seconds = int((now - datetime.datetime.fromisoformat(timestamp.replace("Z", "+00:00"))).total_seconds())
    if seconds < 120:
        return f"{seconds}s"
    if seconds < 600:
        return f"{seconds // 60}m{seconds % 60}s"
    if seconds < 3 * 3600:
        return f"{seconds // 60}m"
    if seconds < 2 * 86400:
        return f"{seconds // 3600}h"
    return f"{seconds // 86400}d"


def cell(obj: dict[str, Any], column: dict[str, Any]) -> str:
    """One column's value for ``obj``, formatted as kubectl formats it ('' for a missing value)."""
    values = [m.value for m in parse("$" + column["jsonPath"]).find(obj)]
    if not values:
        return ""
    if column["type"] == "date":
        return age(values[0])
    return ",".join(str(v) for v in values)


def columns(crd: dict[str, Any], wide: bool = False) -> list[dict[str, Any]]:
    """NAME plus the printer columns (priority 0, or all of them for ``-o wide``)."""
    version = next(v for v in crd["spec"]["versions"] if v.get("served", True))
    printer = [c for c in version.get("additionalPrinterColumns", []) if wide or c.get("priority", 0) == 0]
    return [{"name": "Name", "type": "string", "jsonPath": ".metadata.name"}, *printer]


def render_table(rows: list[list[str]], headers: list[str]) -> str:
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(headers)]
    lines = ["   ".join(h.upper().ljust(w) for h, w in zip(headers, widths)).rstrip()]
    lines += ["   ".join(v.ljust(w) for v, w in zip(row, widths)).rstrip() for row in rows]
    return "\n".join(lines)


def table(crd: dict[str, Any], objects: list[dict[str, Any]], wide: bool = False, namespaces: bool = False) -> str:
    """The table ``kubectl get <kind> [-A] [-o wide]`` prints for ``objects``."""
    cols = columns(crd, wide)
    headers = (["Namespace"] if namespaces else []) + [c["name"] for c in cols]
    rows = [([o["metadata"].get("namespace", "")] if namespaces else []) + [cell(o, c) for c in cols] for o in objects]
    return render_table(rows, headers)
