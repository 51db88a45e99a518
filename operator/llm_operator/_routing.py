"""Traffic routers: what splits an LLMDeployment's traffic between its stable and canary revisions.

One small interface, :class:`Router`, with one implementation per mesh or gateway API, after Flagger's
``router.Interface``: the planner and the rollout decision know only the interface. A router builds the objects
that carry the weights, mirror and preview route (its ``Reconcile``), reads the weights back from the live objects
(``GetRoutes``; they belong to the rollout, so reconciling an LLMDeployment never resets them), and names the objects
it may own, which are observed each pass and deleted when another router takes over (its clean-up).

Both routers route to the revisions through the two role Services the planner builds whatever the router
(``<name>`` on the stable revision, ``<name>-canary`` on the canary's; :func:`~llm_operator._builders.build_service`).

- :data:`ISTIO`: a VirtualService over the two Services, a DestinationRule on each (load balancing, connection
  limits, outlier detection).
- :data:`GATEWAY_API`: an HTTPRoute on the user's Gateways, whose backends are the two Services, or, with endpoint
  pickers configured, one InferencePool per role (Gateway API Inference Extension) selecting that role's revision.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from . import _builders as b
from . import _contract as c
from ._api import LLMDeploymentSpec
from ._api import Router as RouterName

#: ``(apiVersion, kind, name)`` of one object a router may own.
ObjectRef = tuple[str, str, str]
#: The live children as the planner observed them: ``(kind, name)`` -> the object, or None when it does not exist.
Children = Mapping[tuple[str, str], "dict[str, Any] | None"]


class Router(Protocol):
    """What splits the traffic. Pure: builds manifests and reads live ones; the planner applies and deletes."""

    @property
    def name(self) -> RouterName:
        """``spec.traffic.router``'s value for this router."""
        ...

    def children(self, name: str) -> tuple[ObjectRef, ...]:
        """Every object this router may own for the LLMDeployment ``name``, in the order they are applied."""
        ...

    def build(self, name: str, namespace: str, spec: LLMDeploymentSpec, stable: str, canary: str | None,
              routes: b.Routes, preview_header: str | None) -> list[dict[str, Any]]:
        """The router's objects for this pass (the role Services aside): the split at ``routes`` (percent 0..100)
        between the ``stable`` and ``canary`` revisions (None: only stable is served), and a route sending requests
        whose header ``preview_header`` is ``true`` to the canary (blue-green's preview) when it is not None."""
        ...

    def live_routes(self, children: Children, name: str) -> b.Routes | None:
        """The weights and mirror percent on the live objects (None when the router's route object does not exist)."""
        ...


@dataclass(frozen=True)
class _Istio:
    name: RouterName = "istio"

    def children(self, name: str) -> tuple[ObjectRef, ...]:
        return (*(("networking.istio.io/v1", "DestinationRule", b.service_name(name, role)) for role in b.ROLES),
                ("networking.istio.io/v1", "VirtualService", name))

    def build(self, name: str, namespace: str, spec: LLMDeploymentSpec, stable: str, canary: str | None,
              routes: b.Routes, preview_header: str | None) -> list[dict[str, Any]]:
        return ([b.build_destination_rule(name, namespace, role, spec) for role in b.ROLES]
                + [b.build_virtual_service(name, namespace, spec, routes, preview_header)])

    def live_routes(self, children: Children, name: str) -> b.Routes | None:
        return b.routes_of(children.get(("VirtualService", name)))


@dataclass(frozen=True)
class _GatewayApi:
    name: RouterName = "gatewayAPI"

    def children(self, name: str) -> tuple[ObjectRef, ...]:
        return (*((b.INFERENCE_API_VERSION, "InferencePool", b.service_name(name, role)) for role in b.ROLES),
                (b.GATEWAY_API_VERSION, "HTTPRoute", name))

    def build(self, name: str, namespace: str, spec: LLMDeploymentSpec, stable: str, canary: str | None,
              routes: b.Routes, preview_header: str | None) -> list[dict[str, Any]]:
        gateway = spec.traffic.gateway_api
        revisions = {c.SUBSET_STABLE: stable, c.SUBSET_CANARY: canary or stable}
        pools = ([b.build_inference_pool(name, namespace, spec, role, revisions[role]) for role in b.ROLES]
                 if gateway is not None and gateway.endpoint_picker is not None else [])
        return [*pools, b.build_http_route(name, namespace, spec, routes, preview_header)]

    def live_routes(self, children: Children, name: str) -> b.Routes | None:
        return b.http_routes_of(children.get(("HTTPRoute", name)))


ISTIO: Router = _Istio()
GATEWAY_API: Router = _GatewayApi()
#: Every router by its ``spec.traffic.router`` name.
ROUTERS: Mapping[str, Router] = {router.name: router for router in (ISTIO, GATEWAY_API)}


def router_for(name: str | None) -> Router:
    """The router named ``name`` (``spec.traffic.router``, or ``status.router``; None: Istio, the only router of the
    releases before ``router`` existed).

    Raises:
        KeyError: ``name`` is no router's.
    """
    return ROUTERS[name or ISTIO.name]


def observed_routers(spec_router: str | None, status: Mapping[str, Any]) -> tuple[Router, ...]:
    """The routers whose objects a pass reads: the spec's, and the one ``status`` (the LLMDeployment's) records when
    it differs (its objects are deleted once the spec's router carries the traffic). A status with a stable revision
    and no router is a release's before ``router`` existed: Istio's."""
    wanted = router_for(spec_router)
    recorded = status.get("router") or (ISTIO.name if status.get("stableRevision") else wanted.name)
    return (wanted,) if recorded == wanted.name else (wanted, router_for(recorded))
