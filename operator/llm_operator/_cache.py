"""Reading an LLMDeployment's children: from watch-fed indexes, or from the API server.

A pass reads its LLMDeployment from the API server (never a stale spec) and everything the LLMDeployment owns
through a :class:`Reader`:

- :class:`ApiReader` asks the API server: one LIST of the revision Deployments (label selector), one LIST of the
  LLMRollouts (field selector ``spec.deploymentName``), and one LIST per other child by ``metadata.name`` field
  selector (a LIST, not a GET: the watch needs the ``list`` grant anyway, so the role grants no ``get`` on children).
- :class:`CachedReader` answers from :class:`Cache`, the indexes kopf keeps from its watches (``@kopf.index``; the
  watches filtered by the API server on the operator's ``managed-by`` label), for the kinds the cluster served
  when the operator started, and falls back to an :class:`ApiReader` for the others (a CRD installed later) and
  until the indexes are attached. kopf calls no handler before every index has its initial LIST
  (kopf ``processing.py``: ``operator_indexed.wait_for(True)``), and the indexes are attached by the first
  handler, so a cached read never sees a half-listed cache.

What the operator itself just wrote is read back from the write's response until the watch delivers it
(:class:`WriteThroughKube` records it), as client-go's ``MutationCache`` does
(``k8s.io/client-go/tools/cache/mutation_cache.go``): the newer of the indexed and the written object by
``resourceVersion``, compared as integers (kube-apiserver's are etcd revisions; comparable by contract since
Kubernetes 1.35, KEP-5504), the indexed one when either is not an integer, and a written object the watch has
not delivered for ``ttl`` seconds forgotten. Without it a pass following a write would see the object as it was
before the write and write it again.
"""

from __future__ import annotations

import copy
import threading
import time
from collections.abc import Callable, Hashable, Iterable, Mapping
from typing import Any, Protocol

from . import _contract as c
from ._api import API_VERSION as API_VERSION_ROLLOUT
from ._kube import JsonPatch, Kube

#: The kinds a pass reads (besides its LLMDeployment), with the index each is kept in: ``(api version, kind,
#: plural, index name)``. Deployments are indexed by their LLMDeployment (label ``llmops.dev/deployment``),
#: LLMRollouts by ``spec.deploymentName``, the others by name.
KINDS: tuple[tuple[str, str, str, str], ...] = (
    ("apps/v1", "Deployment", "deployments", "llmops_revisions"),
    (API_VERSION_ROLLOUT, "LLMRollout", "llmrollouts", "llmops_rollouts"),
    ("v1", "Service", "services", "llmops_services"),
    ("autoscaling/v2", "HorizontalPodAutoscaler", "horizontalpodautoscalers", "llmops_hpas"),
    ("policy/v1", "PodDisruptionBudget", "poddisruptionbudgets", "llmops_pdbs"),
    ("networking.istio.io/v1", "DestinationRule", "destinationrules", "llmops_destinationrules"),
    ("networking.istio.io/v1", "VirtualService", "virtualservices", "llmops_virtualservices"),
    ("gateway.networking.k8s.io/v1", "HTTPRoute", "httproutes", "llmops_httproutes"),
    ("inference.networking.k8s.io/v1", "InferencePool", "inferencepools", "llmops_inferencepools"),
    ("security.istio.io/v1", "PeerAuthentication", "peerauthentications", "llmops_peerauthentications"),
    ("security.istio.io/v1", "RequestAuthentication", "requestauthentications", "llmops_requestauthentications"),
    ("security.istio.io/v1", "AuthorizationPolicy", "authorizationpolicies", "llmops_authorizationpolicies"),
    ("keda.sh/v1alpha1", "ScaledObject", "scaledobjects", "llmops_scaledobjects"),
)
#: The kinds the operator creates, labelled ``app.kubernetes.io/managed-by: llm-operator``: their watches are
#: filtered by the API server on that label. (LLMRollouts are users' too, and watched whole.)
LABELLED = frozenset(kind for _, kind, _, _ in KINDS if kind != "LLMRollout")

#: An index as kopf keeps it: a key -> the values of the objects filed under it (a ``kopf.Index`` of ``kopf.Store``).
Index = Mapping[Hashable, Iterable[dict[str, Any]]]


def index_key(kind: str, body: Mapping[str, Any]) -> tuple[str, str] | None:
    """The key ``body`` (an object of ``kind``) is filed under: ``(namespace, name)``, or for a Deployment the
    ``(namespace, LLMDeployment name)`` of its label and for an LLMRollout of its ``spec.deploymentName``; None
    when it has none (a Deployment without the label, an LLMRollout naming no deployment: not filed)."""
    meta = body.get("metadata") or {}
    if kind == "Deployment":
        owner = (meta.get("labels") or {}).get(c.LABEL_DEPLOYMENT)
    elif kind == "LLMRollout":
        owner = (body.get("spec") or {}).get("deploymentName")
    else:
        owner = meta.get("name")
    return (meta.get("namespace") or "", owner) if owner else None


def stored(body: Mapping[str, Any]) -> dict[str, Any]:
    """What the index keeps of an object: a deep copy without ``metadata.managedFields`` (which no pass reads, and
    which is often the larger part of a small object), as client-go informers' ``TransformStripManagedFields``."""
    out = copy.deepcopy(dict(body))
    meta = dict(out.get("metadata") or {})
    meta.pop("managedFields", None)
    out["metadata"] = meta
    return out


def _rv(obj: Mapping[str, Any]) -> int | None:
    try:
        return int(str((obj.get("metadata") or {}).get("resourceVersion")))
    except (TypeError, ValueError):
        return None


def _newer(indexed: dict[str, Any], written: dict[str, Any]) -> bool:
    """Whether ``written`` is newer than ``indexed`` (client-go ``MutationCache.newerObject``: the indexed object
    unless both resourceVersions are integers and the written one's is greater)."""
    a, b = _rv(indexed), _rv(written)
    return a is not None and b is not None and b > a


class Reader(Protocol):
    """What a pass reads of an LLMDeployment's children (plain dicts, the caller's to keep)."""

    def child(self, api_version: str, kind: str, namespace: str, name: str) -> dict[str, Any] | None:
        """The object of ``kind`` named ``name``, or None when there is none (or the cluster does not serve it)."""

    def revisions(self, namespace: str, deployment: str) -> list[dict[str, Any]]:
        """The Deployments labelled ``llmops.dev/deployment: <deployment>``."""

    def rollouts(self, namespace: str, deployment: str) -> list[dict[str, Any]]:
        """The LLMRollouts whose ``spec.deploymentName`` is ``deployment``."""


class ApiReader:
    """:class:`Reader` by requests to the API server, every read a LIST (see the module's docstring)."""

    def __init__(self, kube: Kube):
        self.kube = kube

    def child(self, api_version: str, kind: str, namespace: str, name: str) -> dict[str, Any] | None:
        found = self.kube.list(api_version, kind, namespace, "", field_selector=f"metadata.name={name}")
        return found[0] if found else None

    def revisions(self, namespace: str, deployment: str) -> list[dict[str, Any]]:
        return self.kube.list("apps/v1", "Deployment", namespace, f"{c.LABEL_DEPLOYMENT}={deployment}")

    def rollouts(self, namespace: str, deployment: str) -> list[dict[str, Any]]:
        # Filtered by the API server (the CRD's selectableFields): this deployment's rollouts only.
        return self.kube.list(API_VERSION_ROLLOUT, "LLMRollout", namespace, "", field_selector=f"spec.deploymentName={deployment}")


class Cache:
    """kopf's watch-fed indexes of the children, and what the operator wrote that they have not shown yet.

    Args:
        kinds: the kinds to answer from the indexes (those the cluster served at start-up, so kopf watches them).
        ttl: seconds a written object is read back while its watch event has not arrived (then the index is
            believed again).
        clock: monotonic seconds.
    """

    def __init__(self, kinds: Iterable[str], *, ttl: float = 30.0, clock: Callable[[], float] = time.monotonic):
        self.kinds = frozenset(kinds)
        self.ttl, self.clock = ttl, clock
        self._indexes: dict[str, Index] = {}
        self._written: dict[tuple[str, str, str], tuple[dict[str, Any], float]] = {}  # (kind, namespace, name) -> obj, until
        self._lock = threading.Lock()

    @property
    def ready(self) -> bool:
        """Whether the indexes are attached (every index of ``kinds`` has had its initial LIST)."""
        return bool(self._indexes) or not self.kinds

    def attach(self, indexes: Mapping[str, Any]) -> None:
        """Take kopf's indexes (a handler's keyword arguments, named as :data:`KINDS` names them). Idempotent."""
        if self._indexes:
            return
        found = {kind: indexes[index] for _, kind, _, index in KINDS if kind in self.kinds and index in indexes}
        missing = sorted(self.kinds - set(found))
        if missing:
            raise KeyError(f"kopf passed no index for {', '.join(missing)}")
        self._indexes = found

    def covers(self, kind: str) -> bool:
        return kind in self._indexes

    def wrote(self, obj: Mapping[str, Any]) -> None:
        """The API server's answer to a write of ``obj`` (apply, create, status patch): read it back until the
        index holds it or something newer, or ``ttl`` seconds pass."""
        kind, meta = obj.get("kind"), obj.get("metadata") or {}
        if kind not in self.kinds or not meta.get("name"):
            return
        with self._lock:
            now = self.clock()
            self._written = {k: v for k, v in self._written.items() if v[1] > now}  # bounded by the writes of one ttl
            self._written[(str(kind), meta.get("namespace") or "", meta["name"])] = (stored(obj), now + self.ttl)

    def deleted(self, kind: str, namespace: str, name: str) -> None:
        with self._lock:
            self._written.pop((kind, namespace, name), None)

    def filed(self, kind: str, key: tuple[str, str]) -> list[dict[str, Any]]:
        """Copies of the objects of ``kind`` filed under ``key``, each the newer of the indexed and the written."""
        store = self._indexes[kind].get(key)
        indexed: list[dict[str, Any]] = []
        for _ in range(3):  # kopf mutates its stores on the event loop; a copy racing one is retried
            try:
                indexed = list(store) if store is not None else []
                break
            except RuntimeError:
                continue
        by_name = {(o.get("metadata") or {}).get("name"): o for o in indexed}
        with self._lock:
            now = self.clock()
            for (wkind, namespace, name), (obj, until) in list(self._written.items()):
                if wkind != kind or namespace != key[0] or until <= now or index_key(kind, obj) != key:
                    continue
                held = by_name.get(name)
                if held is None or _newer(held, obj):
                    by_name[name] = obj
                else:  # the watch caught up: the index is believed from now on
                    del self._written[(wkind, namespace, name)]
        return [copy.deepcopy(o) for o in by_name.values()]


class CachedReader:
    """:class:`Reader` from a :class:`Cache` for the kinds it covers, from ``fallback`` for the others."""

    def __init__(self, cache: Cache, fallback: Reader):
        self.cache, self.fallback = cache, fallback

    def child(self, api_version: str, kind: str, namespace: str, name: str) -> dict[str, Any] | None:
        if not self.cache.covers(kind):
            return self.fallback.child(api_version, kind, namespace, name)
        found = self.cache.filed(kind, (namespace, name))
        return found[0] if found else None

    def revisions(self, namespace: str, deployment: str) -> list[dict[str, Any]]:
        if not self.cache.covers("Deployment"):
            return self.fallback.revisions(namespace, deployment)
        return self.cache.filed("Deployment", (namespace, deployment))

    def rollouts(self, namespace: str, deployment: str) -> list[dict[str, Any]]:
        if not self.cache.covers("LLMRollout"):
            return self.fallback.rollouts(namespace, deployment)
        return self.cache.filed("LLMRollout", (namespace, deployment))


class WriteThroughKube:
    """A :class:`~._kube.Kube` that tells a :class:`Cache` what it wrote (every call goes to ``inner``)."""

    def __init__(self, inner: Kube, cache: Cache):
        self._inner, self.cache = inner, cache

    def get(self, api_version: str, kind: str, namespace: str, name: str) -> dict[str, Any] | None:
        return self._inner.get(api_version, kind, namespace, name)

    def list(self, api_version: str, kind: str, namespace: str | None, label_selector: str,
             field_selector: str = "") -> list[dict[str, Any]]:
        return self._inner.list(api_version, kind, namespace, label_selector, field_selector)

    def apply(self, obj: dict[str, Any]) -> dict[str, Any]:
        out = self._inner.apply(obj)
        self.cache.wrote(out)
        return out

    def create(self, obj: dict[str, Any]) -> dict[str, Any]:
        out = self._inner.create(obj)
        self.cache.wrote(out)
        return out

    def delete(self, api_version: str, kind: str, namespace: str, name: str) -> bool:
        self.cache.deleted(kind, namespace, name)
        return self._inner.delete(api_version, kind, namespace, name)

    def patch_status(self, api_version: str, kind: str, namespace: str, name: str, ops: JsonPatch) -> dict[str, Any]:
        out = self._inner.patch_status(api_version, kind, namespace, name, ops)
        self.cache.wrote(out)
        return out

    def patch(self, api_version: str, kind: str, namespace: str, name: str, body: dict[str, Any]) -> dict[str, Any]:
        return self._inner.patch(api_version, kind, namespace, name, body)

    def scale(self, namespace: str, name: str, replicas: int) -> None:
        self._inner.scale(namespace, name, replicas)

    def serves(self, api_version: str, kind: str) -> bool:
        return self._inner.serves(api_version, kind)
