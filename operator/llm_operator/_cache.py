"""Reading an LLMDeployment's children: from watch-fed copies, or from the API server.

A pass reads its LLMDeployment from the API server (never a stale spec) and everything the LLMDeployment owns
through a :class:`Reader`:

- :class:`ApiReader` asks the API server: one LIST of the revision Deployments (label selector), one LIST of the
  LLMRollouts (field selector ``spec.deploymentName``), and one LIST per other child by ``metadata.name`` field
  selector (a LIST, not a GET: the watch needs the ``list`` grant anyway, so the role grants no ``get`` on children).
- :class:`CachedReader` answers from :class:`Cache`, the copies the official client's informers keep
  (:class:`~._kube.Informers`: LIST then WATCH, filtered by the API server on the operator's ``managed-by`` label;
  a relist after 410 Gone deletes what vanished meanwhile) for the kinds the cluster served at start-up, once their
  first LIST is in, and falls back to an :class:`ApiReader` otherwise (a CRD installed later, the first seconds).

What the operator itself just wrote is read back from the write's response until the watch delivers it
(:class:`WriteThroughKube` records it), as client-go's ``MutationCache`` does
(``k8s.io/client-go/tools/cache/mutation_cache.go``): the newer of the watched and the written object by
``resourceVersion``, compared as integers (kube-apiserver's are etcd revisions; comparable by contract since
Kubernetes 1.35, KEP-5504), the watched one when either is not an integer. Unlike client-go's, a write the watch has
not shown after ``ttl`` seconds is not dropped in favour of the watch's older copy: that key is read from the API
server until the watch catches up. A child the operator deleted is hidden until its watch says it is gone. Without
this a pass following a write (often started by that very write's event on another kind) would see the child as
it was and write it again, or act on a rollout's previous step.
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

#: The kinds a pass reads (besides its LLMDeployment): ``(api version, kind, plural)``. Deployments are filed under
#: their LLMDeployment (label ``llmops.dev/deployment``), LLMRollouts under ``spec.deploymentName``, the others by name.
KINDS: tuple[tuple[str, str, str], ...] = (
    ("apps/v1", "Deployment", "deployments"),
    (API_VERSION_ROLLOUT, "LLMRollout", "llmrollouts"),
    ("v1", "Service", "services"),
    ("autoscaling/v2", "HorizontalPodAutoscaler", "horizontalpodautoscalers"),
    ("policy/v1", "PodDisruptionBudget", "poddisruptionbudgets"),
    ("networking.istio.io/v1", "DestinationRule", "destinationrules"),
    ("networking.istio.io/v1", "VirtualService", "virtualservices"),
    ("gateway.networking.k8s.io/v1", "HTTPRoute", "httproutes"),
    ("inference.networking.k8s.io/v1", "InferencePool", "inferencepools"),
    ("security.istio.io/v1", "PeerAuthentication", "peerauthentications"),
    ("security.istio.io/v1", "RequestAuthentication", "requestauthentications"),
    ("security.istio.io/v1", "AuthorizationPolicy", "authorizationpolicies"),
    ("keda.sh/v1alpha1", "ScaledObject", "scaledobjects"),
)
#: The kinds the operator creates, labelled ``app.kubernetes.io/managed-by: llm-operator``: their watches are
#: filtered by the API server on that label. (LLMRollouts are users' too, and watched whole.)
LABELLED = frozenset(kind for _, kind, _ in KINDS if kind != "LLMRollout")

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


class Source(Protocol):
    """Watch-fed copies of objects (:class:`~._kube.Informers`; a dict-backed fake in the unit tests)."""

    def synced(self, kind: str) -> bool:
        """Whether the copies of ``kind`` are complete (the first LIST is in)."""

    def get(self, kind: str, namespace: str, name: str) -> dict[str, Any] | None:
        """The object as last seen (a fresh dict, the caller's to keep), or None."""

    def owned(self, kind: str, namespace: str, owner: str) -> list[dict[str, Any]]:
        """The objects of ``kind`` filed under ``owner`` (:func:`index_key`; fresh dicts)."""


#: :meth:`Cache.filed`'s answer when a write of the operator's the watch has still not shown after ``ttl`` seconds:
#: the copies cannot be believed for that key, ask the API server.
UNSURE = None


class Cache:
    """Watch-fed copies of the children (a :class:`Source`), and what the operator wrote that they do not show yet.

    Args:
        source: the copies; a kind is answered from them once :meth:`Source.synced` (until then, and for a kind it
            does not keep, :class:`CachedReader` asks the API server).
        ttl: seconds a write is read back while the watch has not shown it; a key whose write the watch has still not
            shown then is read from the API server (a watch that far behind is not believed) until it does.
        clock: monotonic seconds.
    """

    def __init__(self, source: Source, kinds: Iterable[str], *, ttl: float = 30.0, clock: Callable[[], float] = time.monotonic):
        self.source, self.kinds = source, frozenset(kinds)
        self.ttl, self.clock = ttl, clock
        #: (kind, namespace, key) -> name -> (the object written or None for a delete, until when it is read back)
        self._written: dict[tuple[str, str, str], dict[str, tuple[dict[str, Any] | None, float]]] = {}
        self._lock = threading.Lock()

    def covers(self, kind: str) -> bool:
        return kind in self.kinds and self.source.synced(kind)

    def _note(self, kind: str, namespace: str, key: str, name: str, obj: dict[str, Any] | None) -> None:
        with self._lock:
            self._written.setdefault((kind, namespace, key), {})[name] = (obj, self.clock() + self.ttl)

    def wrote(self, obj: Mapping[str, Any]) -> None:
        """The API server's answer to a write of ``obj`` (apply, create, status patch, scale): read it back until
        the copies hold it or something newer."""
        kind = str(obj.get("kind"))
        key = index_key(kind, obj) if kind in self.kinds else None
        if key is not None:
            self._note(kind, key[0], key[1], obj["metadata"]["name"], stored(obj))

    def deleted(self, kind: str, namespace: str, name: str, key: str | None = None) -> None:
        """The operator deleted it: hidden until the copies lose it (``key``: what it is filed under, its name
        unless given)."""
        if kind in self.kinds and (key is not None or kind not in ("Deployment", "LLMRollout")):
            self._note(kind, namespace, key or name, name, None)

    def owner_of(self, kind: str, namespace: str, name: str) -> str | None:
        """What the object is filed under, from its copy or a pending write (None when neither knows it)."""
        held = self.source.get(kind, namespace, name) if kind in self.kinds else None
        if held is not None:
            key = index_key(kind, held)
            return key[1] if key else None
        with self._lock:
            return next((owner for (k, ns, owner), names in self._written.items() if k == kind and ns == namespace and name in names), None)

    def held(self, kind: str, key: tuple[str, str]) -> dict[str, dict[str, Any]]:
        """The copies filed under ``key``, by name (taken before asking the API server: see :meth:`settle`)."""
        namespace, owner = key
        if kind in ("Deployment", "LLMRollout"):
            return {o["metadata"]["name"]: o for o in self.source.owned(kind, namespace, owner)}
        found = self.source.get(kind, namespace, owner)
        return {owner: found} if found is not None else {}

    def settle(self, kind: str, key: tuple[str, str], answer: list[dict[str, Any]], held: Mapping[str, Mapping[str, Any]]) -> None:
        """The API server was asked about ``key`` (the watch stayed behind) and gave ``answer``; ``held`` is what the
        copies held just before. The answer replaces the pending writes and is read back like them until the copies
        hold it or something newer (a lagging watch is not believed over it at the next read): an object the answer
        has that the copies held as new or newer is left to them, and one they held that the answer lacks is hidden
        until they lose it (one created since is not: it was not held)."""
        namespace, owner = key
        until = self.clock() + self.ttl
        entries: dict[str, tuple[dict[str, Any] | None, float]] = {
            o["metadata"]["name"]: (stored(o), until) for o in answer
            if o["metadata"]["name"] not in held or _newer(dict(held[o["metadata"]["name"]]), o)}
        entries.update({name: (None, until) for name in set(held) - {o["metadata"]["name"] for o in answer}})
        with self._lock:
            if entries:
                self._written[(kind, namespace, owner)] = entries
            else:
                self._written.pop((kind, namespace, owner), None)

    def filed(self, kind: str, key: tuple[str, str]) -> list[dict[str, Any]] | None:
        """Copies of the objects of ``kind`` filed under ``key``, each the newer of the watch's and the written, or
        :data:`UNSURE`."""
        namespace, owner = key
        if kind in ("Deployment", "LLMRollout"):
            seen = {o["metadata"]["name"]: o for o in self.source.owned(kind, namespace, owner)}
        else:
            found = self.source.get(kind, namespace, owner)
            seen = {owner: found} if found is not None else {}
        written: dict[str, Any] = {}  # what is answered from pending writes (copied: they are kept)
        with self._lock:
            pending = self._written.get((kind, namespace, owner))
            if pending:
                now = self.clock()
                for name, (obj, until) in list(pending.items()):
                    held = seen.get(name)
                    shown = (held is None) if obj is None else (held is not None and not _newer(held, obj))
                    if shown:  # the watch caught up: the copies are believed from now on
                        del pending[name]
                    elif until <= now:
                        return UNSURE
                    elif obj is None:
                        seen.pop(name, None)
                    else:
                        seen[name] = written[name] = obj
                if not pending:
                    del self._written[(kind, namespace, owner)]
        return [copy.deepcopy(o) if o is written.get(name) else o for name, o in seen.items()]


class CachedReader:
    """:class:`Reader` from a :class:`Cache` for the kinds it covers, from ``fallback`` for the others (and for a
    key the cache is unsure of)."""

    def __init__(self, cache: Cache, fallback: Reader):
        self.cache, self.fallback = cache, fallback

    def _read(self, kind: str, key: tuple[str, str], ask: Callable[[], Any]) -> Any:
        if not self.cache.covers(kind):
            return ask()
        found = self.cache.filed(kind, key)
        if found is UNSURE:
            held = self.cache.held(kind, key)
            answer = ask()
            self.cache.settle(kind, key, answer if isinstance(answer, list) else [answer] if answer is not None else [], held)
            return answer
        return found

    def child(self, api_version: str, kind: str, namespace: str, name: str) -> dict[str, Any] | None:
        found = self._read(kind, (namespace, name), lambda: self.fallback.child(api_version, kind, namespace, name))
        return found if not isinstance(found, list) else (found[0] if found else None)

    def revisions(self, namespace: str, deployment: str) -> list[dict[str, Any]]:
        return self._read("Deployment", (namespace, deployment), lambda: self.fallback.revisions(namespace, deployment))

    def rollouts(self, namespace: str, deployment: str) -> list[dict[str, Any]]:
        return self._read("LLMRollout", (namespace, deployment), lambda: self.fallback.rollouts(namespace, deployment))


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
        owner = self.cache.owner_of(kind, namespace, name)
        gone = self._inner.delete(api_version, kind, namespace, name)
        self.cache.deleted(kind, namespace, name, key=owner)
        return gone

    def patch_status(self, api_version: str, kind: str, namespace: str, name: str, ops: JsonPatch) -> dict[str, Any]:
        out = self._inner.patch_status(api_version, kind, namespace, name, ops)
        self.cache.wrote(out)
        return out

    def patch(self, api_version: str, kind: str, namespace: str, name: str, body: dict[str, Any]) -> dict[str, Any]:
        return self._inner.patch(api_version, kind, namespace, name, body)

    def scale(self, namespace: str, name: str, replicas: int) -> dict[str, Any] | None:
        out = self._inner.scale(namespace, name, replicas)
        if out is not None:
            self.cache.wrote(out)
        return out

    def serves(self, api_version: str, kind: str) -> bool:
        return self._inner.serves(api_version, kind)
