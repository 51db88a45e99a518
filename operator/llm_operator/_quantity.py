"""Kubernetes resource quantities (``"500m"``, ``"16Gi"``) by value, with the Kubernetes client's own parser.

The one module the import contracts let reach into the Kubernetes client for something pure: the planner compares
what it would apply with what the API server returned, which writes quantities in canonical form (``"1024Mi"`` comes
back as ``"1Gi"``). Keeping the import here keeps every other pure module's contract whole (pyproject.toml).
"""

from __future__ import annotations

from decimal import Decimal

from kubernetes.utils.quantity import parse_quantity


def quantity(value: str | int | float) -> Decimal:
    """The value of a quantity (``"1Gi"`` -> 1073741824, ``"500m"`` -> 0.5), as
    ``kubernetes.utils.quantity.parse_quantity`` reads it.

    >>> quantity("1024Mi") == quantity("1Gi"), quantity("500m")
    (True, Decimal('0.500'))

    Raises:
        ValueError: ``value`` is not a quantity (also ``decimal.InvalidOperation`` for some malformed numbers).
    """
    return parse_quantity(value)
