"""The operator's one boundary for Kubernetes reads and writes (kopf does the watching).

:class:`Kube` is the Protocol the reconcilers use; :class:`DynamicKube` implements it with the official
``kubernetes`` client's DynamicClient, and the unit tests use an in-memory fake. Children are written by
server-side apply under one field manager (``llm-operator``), so a field the operator stops setting is
removed and fields other managers own (an HPA's replicas) are left alone.
"""

from __future__ import annotations

import functools
import json
import logging
import threading
import time
from typing import Any, Protocol

from . import _contract as c
from ._backoff import Backoff

log = logging.getLogger(__name__)

#: A JSON patch (RFC 6902): its operations. (A name of its own: inside the classes below, ``list`` is their method.)
JsonPatch = list[dict[str, Any]]


class KubeError(Exception):
    """A Kubernetes API call failed; ``status`` is the HTTP status (0 when none was received) and
    ``retry_after`` the server's ``Retry-After`` in seconds (429 from API Priority and Fairness, some 503s)."""

    def __init__(self, message: str, status: int = 0, retry_after: float | None = None):
        super().__init__(message)
        self.status = status
        self.retry_after = retry_after


class Conflict(KubeError):
    """HTTP 409: the object changed since it was read (or already exists)."""


class Kube(Protocol):
    """Reads and writes the reconcilers need. Objects are plain dicts as the API returns them."""

    def get(self, api_version: str, kind: str, namespace: str, name: str) -> dict[str, Any] | None:
        """The object, or None when it (or its kind) does not exist."""

    def list(self, api_version: str, kind: str, namespace: str | None, label_selector: str,
             field_selector: str = "") -> list[dict[str, Any]]:
        """Objects of ``kind`` in ``namespace`` (all namespaces when None) matching ``label_selector`` and
        ``field_selector`` (both filtered by the API server; ``""``: no filter); none when the cluster does not
        serve the kind."""

    def apply(self, obj: dict[str, Any]) -> dict[str, Any]:
        """Server-side apply ``obj`` (field manager ``llm-operator``, conflicts forced); creates it if absent."""

    def create(self, obj: dict[str, Any]) -> dict[str, Any]:
        """Create ``obj``; raises :class:`Conflict` when it exists."""

    def delete(self, api_version: str, kind: str, namespace: str, name: str) -> bool:
        """Delete with background propagation: whether the object was there (an absent one is not an error)."""

    def patch_status(self, api_version: str, kind: str, namespace: str, name: str, ops: JsonPatch) -> dict[str, Any]:
        """Apply a JSON patch (RFC 6902) through the status subresource; a failed ``test`` is a :class:`Conflict`."""

    def patch(self, api_version: str, kind: str, namespace: str, name: str, body: dict[str, Any]) -> dict[str, Any]:
        """A JSON merge patch (RFC 7386) of the object (an Event's count, say); 404 when it is gone."""

    def scale(self, namespace: str, name: str, replicas: int) -> dict[str, Any] | None:
        """Set a Deployment's ``spec.replicas`` with a merge patch; the Deployment as patched (None from a fake)."""

    def serves(self, api_version: str, kind: str) -> bool:
        """Whether the cluster serves ``kind`` (e.g. KEDA's ScaledObject)."""


def _wrap(error: Exception) -> KubeError:
    status = int(getattr(error, "status", 0) or 0)
    text = getattr(error, "body", None) or str(error)
    if isinstance(text, bytes):
        text = text.decode(errors="replace")
    message = f"{type(error).__name__} ({status}): {str(text)[:300]}" if status else f"{type(error).__name__}: {text}"
    retry_after = None
    headers = getattr(error, "headers", None) or {}
    try:
        value = headers.get("Retry-After")
        retry_after = float(value) if value else None
    except (TypeError, ValueError):  # an HTTP date: not what kube-apiserver sends
        retry_after = None
    # A failed JSON-patch ``test`` is a 422 whose message reads "testing value /metadata/resourceVersion failed".
    if status == 409 or (status == 422 and "testing value" in str(text).lower()):
        return Conflict(message, status)
    return KubeError(message, status, retry_after)


#: kube-apiserver's message for a 422 it did not explain (apimachinery's ``NewGenericServerResponse``); a validating
#: webhook's 422 carries its own.
GENERIC_422 = "the server rejected our request due to an error in our request"


def json_patch_not_applicable(error: Exception) -> bool:
    """Whether kube-apiserver refused a JSON patch because it does not apply to the stored object (a ``test`` that
    failed, a path that is gone): a 422 with reason ``Invalid``, the generic message and no causes. Its patch handler
    (``k8s.io/apiserver/pkg/endpoints/handlers/patch.go``) answers any ``jsonpatch`` apply error with
    ``NewGenericServerResponse(422, ...)``, which drops the error's text, so "testing value ... failed" never reaches
    the client; a patch the schema refuses is a 422 that names its field causes instead."""
    if int(getattr(error, "status", 0) or 0) != 422:
        return False
    try:
        body = json.loads(getattr(error, "body", None) or "{}")
    except (TypeError, ValueError):
        return False
    return (body.get("reason") == "Invalid" and body.get("message") == GENERIC_422
            and not (body.get("details") or {}).get("causes"))


class DynamicKube:
    """:class:`Kube` over ``kubernetes.dynamic.DynamicClient`` (thread-safe; build once at start-up)."""

    def __init__(self, api_client: Any):
        from kubernetes import dynamic

        self.api_client = api_client
        self._client = dynamic.DynamicClient(api_client)
        self._lock = threading.Lock()
        self._resources: dict[tuple[str, str], Any] = {}
        self._unserved: dict[tuple[str, str], float] = {}  # a kind discovery did not find -> when to ask again

    @classmethod
    def from_environment(cls, kubeconfig: str | None = None) -> DynamicKube:
        """In-cluster credentials when running in a pod, the kubeconfig otherwise."""
        import kubernetes

        try:
            kubernetes.config.load_incluster_config()
            return cls(kubernetes.client.ApiClient())
        except kubernetes.config.ConfigException:
            return cls(kubernetes.config.new_client_from_config(config_file=kubeconfig))

    def _resource(self, api_version: str, kind: str) -> Any:
        """The kind's API resource from discovery. A kind discovery does not find is not asked about again for
        60 s: the client refetches all of discovery on every miss (several requests, under this lock)."""
        from kubernetes.dynamic.exceptions import ResourceNotFoundError

        key = (api_version, kind)
        with self._lock:
            if key not in self._resources:
                if self._unserved.get(key, 0.0) > time.monotonic():
                    raise ResourceNotFoundError(f"{kind} ({api_version}) is not served")
                try:
                    self._resources[key] = self._client.resources.get(api_version=api_version, kind=kind)
                except ResourceNotFoundError:
                    self._unserved[key] = time.monotonic() + 60.0
                    raise
            return self._resources[key]

    def serves(self, api_version: str, kind: str) -> bool:
        from kubernetes.dynamic.exceptions import ResourceNotFoundError

        try:
            self._resource(api_version, kind)
            return True
        except ResourceNotFoundError:
            return False

    def get(self, api_version: str, kind: str, namespace: str, name: str) -> dict[str, Any] | None:
        from kubernetes.dynamic.exceptions import NotFoundError, ResourceNotFoundError

        try:
            return self._resource(api_version, kind).get(name=name, namespace=namespace).to_dict()
        except (NotFoundError, ResourceNotFoundError):
            return None
        except Exception as error:
            raise _wrap(error) from error

    def list(self, api_version: str, kind: str, namespace: str | None, label_selector: str,
             field_selector: str = "") -> list[dict[str, Any]]:
        from kubernetes.dynamic.exceptions import ResourceNotFoundError

        try:
            result = self._resource(api_version, kind).get(namespace=namespace, label_selector=label_selector or None,
                                                           field_selector=field_selector or None)
            return [item for item in result.to_dict().get("items", [])]
        except ResourceNotFoundError:  # a kind the cluster does not serve has no objects
            return []
        except Exception as error:
            raise _wrap(error) from error

    def apply(self, obj: dict[str, Any]) -> dict[str, Any]:
        meta = obj["metadata"]
        try:
            resource = self._resource(obj["apiVersion"], obj["kind"])
            return self._client.server_side_apply(
                resource, body=obj, name=meta["name"], namespace=meta.get("namespace"),
                field_manager=c.FIELD_MANAGER, force_conflicts=True,
            ).to_dict()
        except Exception as error:
            raise _wrap(error) from error

    def create(self, obj: dict[str, Any]) -> dict[str, Any]:
        try:
            resource = self._resource(obj["apiVersion"], obj["kind"])
            return resource.create(body=obj, namespace=obj["metadata"].get("namespace"), field_manager=c.FIELD_MANAGER).to_dict()
        except Exception as error:
            raise _wrap(error) from error

    def delete(self, api_version: str, kind: str, namespace: str, name: str) -> bool:
        from kubernetes.dynamic.exceptions import NotFoundError, ResourceNotFoundError

        try:
            self._resource(api_version, kind).delete(name=name, namespace=namespace, body={"propagationPolicy": "Background"})
        except (NotFoundError, ResourceNotFoundError):
            return False
        except Exception as error:
            raise _wrap(error) from error
        return True

    def patch(self, api_version: str, kind: str, namespace: str, name: str, body: dict[str, Any]) -> dict[str, Any]:
        try:
            return self._resource(api_version, kind).patch(body=body, name=name, namespace=namespace,
                                                           content_type="application/merge-patch+json",
                                                           field_manager=c.FIELD_MANAGER).to_dict()
        except Exception as error:
            raise _wrap(error) from error

    def scale(self, namespace: str, name: str, replicas: int) -> dict[str, Any] | None:
        try:
            return self._resource("apps/v1", "Deployment").patch(
                body={"spec": {"replicas": replicas}}, name=name, namespace=namespace,
                content_type="application/merge-patch+json", field_manager=c.FIELD_MANAGER).to_dict()
        except Exception as error:
            raise _wrap(error) from error

    def patch_status(self, api_version: str, kind: str, namespace: str, name: str, ops: JsonPatch) -> dict[str, Any]:
        try:
            resource = self._resource(api_version, kind)
            return resource.status.patch(
                body=ops, name=name, namespace=namespace, content_type="application/json-patch+json",
                field_manager=c.FIELD_MANAGER,
            ).to_dict()
        except Exception as error:
            wrapped = _wrap(error)
            if any(op.get("op") == "test" for op in ops) and json_patch_not_applicable(error):
                raise Conflict(str(wrapped), 422) from error
            raise wrapped from error


class CountingKube:
    """A :class:`Kube` that counts every request of the one it wraps: ``record(verb, kind, code)`` after each, with
    the verb as kube-apiserver's authoriser names it (``get``, ``list``, ``create``, ``patch``, ``delete``; a
    server-side apply is a ``patch``), the kind, and the HTTP status (200 for success, 404 for a GET or DELETE of
    an absent object, 0 when no response came)."""

    def __init__(self, inner: Kube, record: Any):
        self._inner, self._record = inner, record

    def _call(self, verb: str, kind: str, call: Any) -> Any:
        try:
            result = call()
        except KubeError as error:
            self._record(verb, kind, error.status)
            raise
        absent = (verb == "get" and result is None) or (verb == "delete" and result is False)
        self._record(verb, kind, 404 if absent else 200)
        return result

    def get(self, api_version: str, kind: str, namespace: str, name: str) -> dict[str, Any] | None:
        return self._call("get", kind, lambda: self._inner.get(api_version, kind, namespace, name))

    def list(self, api_version: str, kind: str, namespace: str | None, label_selector: str,
             field_selector: str = "") -> list[dict[str, Any]]:
        return self._call("list", kind, lambda: self._inner.list(api_version, kind, namespace, label_selector, field_selector))

    def apply(self, obj: dict[str, Any]) -> dict[str, Any]:
        return self._call("patch", obj["kind"], lambda: self._inner.apply(obj))

    def create(self, obj: dict[str, Any]) -> dict[str, Any]:
        return self._call("create", obj["kind"], lambda: self._inner.create(obj))

    def delete(self, api_version: str, kind: str, namespace: str, name: str) -> bool:
        return bool(self._call("delete", kind, lambda: self._inner.delete(api_version, kind, namespace, name)))

    def patch_status(self, api_version: str, kind: str, namespace: str, name: str, ops: JsonPatch) -> dict[str, Any]:
        return self._call("patch", f"{kind}/status", lambda: self._inner.patch_status(api_version, kind, namespace, name, ops))

    def patch(self, api_version: str, kind: str, namespace: str, name: str, body: dict[str, Any]) -> dict[str, Any]:
        return self._call("patch", kind, lambda: self._inner.patch(api_version, kind, namespace, name, body))

    def scale(self, namespace: str, name: str, replicas: int) -> dict[str, Any] | None:
        return self._call("patch", "Deployment", lambda: self._inner.scale(namespace, name, replicas))

    def serves(self, api_version: str, kind: str) -> bool:
        return self._inner.serves(api_version, kind)


# ----------------------------------------------------------------------------------- watch-fed copies

#: kube-apiserver closes a watch after this many seconds and the informer resumes from its last resourceVersion
#: (kopf's ``settings.watching.server_timeout`` as the operator sets it); the client gives up 30 s later, so a
#: connection dead without a FIN is noticed.
WATCH_SERVER_TIMEOUT, WATCH_CLIENT_TIMEOUT = 300, 330
#: A watch that ends sooner than this (seconds) after it was opened counts as a failure (see :func:`_lister`).
WATCH_MIN_LIFE = 10.0


class _Listing:
    """A LIST's answer as ``SharedInformer`` reads it: ``items`` (plain dicts) and ``metadata.resource_version``."""

    def __init__(self, body: dict[str, Any]):
        self.items = body.get("items") or []
        self.metadata = type("ListMeta", (), {"resource_version": (body.get("metadata") or {}).get("resourceVersion")})()


def _stripped_cache(owner: Any = lambda obj: None) -> Any:
    """A ``kubernetes.informer.cache.ObjectCache`` keeping each object as compact JSON without
    ``metadata.managedFields`` (client-go's ``TransformStripManagedFields``: no pass reads them), and answering
    with a fresh dict decoded from it: a parsed object takes about 5 times its JSON's size in Python (measured on the
    children built for a sample, before the server's defaults: a revision Deployment's 4.3 KB of JSON takes 23 KB as
    dicts, a Service's 0.9 KB 4.9 KB), and a pass decodes only the dozen objects it reads.

    It also files each object under ``owner(obj)`` (a name or None), updated under the same lock as the objects (as
    client-go's indexer keeps its indices), so a read by owner never sees the objects and the filing disagree (a
    relist replaces both at once); :meth:`owned` reads it."""
    from kubernetes.informer.cache import ObjectCache

    def encode(obj: Any) -> Any:
        if not isinstance(obj, dict):
            return obj
        if (obj.get("metadata") or {}).get("managedFields") is not None:
            obj = {**obj, "metadata": {k: v for k, v in obj["metadata"].items() if k != "managedFields"}}
        return json.dumps(obj, separators=(",", ":")).encode()

    def decode(value: Any) -> Any:
        return json.loads(value) if isinstance(value, bytes) else value

    def filing(obj: Any) -> Any:
        name = owner(obj) if isinstance(obj, dict) else None
        return ((obj.get("metadata") or {}).get("namespace") or "", name) if name else None

    class CompactCache(ObjectCache):
        def __init__(self) -> None:
            super().__init__()
            self._filed: dict[Any, Any] = {}  # key -> (namespace, owner)
            self._owned: dict[Any, set[str]] = {}  # (namespace, owner) -> keys

        def _file(self, key: Any, where: Any) -> None:  # under _rlock
            old = self._filed.pop(key, None)
            if old is not None and old in self._owned:
                self._owned[old].discard(key)
                if not self._owned[old]:
                    del self._owned[old]
            if where is not None:
                self._filed[key] = where
                self._owned.setdefault(where, set()).add(key)

        def _put(self, obj: Any) -> None:
            key, value, where = self._key_func(obj), encode(obj), filing(obj)
            with self._rlock:
                self._objects[key] = value
                self._file(key, where)

        def _remove(self, obj: Any) -> None:
            key = self._key_func(obj)
            with self._rlock:
                self._objects.pop(key, None)
                self._file(key, None)

        def _replace_all(self, objects: Any) -> None:
            rebuilt = {self._key_func(o): (encode(o), filing(o)) for o in objects}
            with self._rlock:
                self._objects = {key: value for key, (value, _) in rebuilt.items()}
                self._filed, self._owned = {}, {}
                for key, (_, where) in rebuilt.items():
                    self._file(key, where)

        def list(self) -> Any:
            return [decode(v) for v in super().list()]

        def get_by_key(self, key: Any) -> Any:
            return decode(super().get_by_key(key))

        def owned(self, namespace: str, name: str) -> Any:
            with self._rlock:
                values = [self._objects[key] for key in sorted(self._owned.get((namespace, name), ())) if key in self._objects]
            return [decode(v) for v in values]

    return CompactCache()


def _lister(call: Any, kind: str, api_version: str, what: str = "", stopping: threading.Event | None = None,
            state: dict[str, Any] | None = None) -> Any:
    """A list function for ``SharedInformer`` over one of the client's generated list calls (``call(**kwargs)``):
    objects stay plain dicts (the JSON as served, ``apiVersion`` and ``kind`` added to a LIST's items, which omit
    them), watches ask for bookmarks and end server-side after :data:`WATCH_SERVER_TIMEOUT`.

    ``SharedInformer`` opens a new watch at once after one fails (a 403, a 404 once a CRD is gone, the API server
    restarting, a stream reset), and lists again only after a 410: a watch that failed to open or lived less than
    :data:`WATCH_MIN_LIFE` seconds counts as a failure, the next opening waits 1 s doubling to 30 s (+-20%, or until
    ``stopping`` is set) first, and after 5 failures in a row it is refused with a 410 of our own, so the informer
    lists again (its copies are not left frozen behind a watch that keeps failing; a LIST that fails is retried by
    the informer every 5 s, its copies no longer believed meanwhile: :class:`Informers`)."""
    from kubernetes.client.exceptions import ApiException

    stopping = stopping or threading.Event()

    backoff = Backoff(base=1.0, cap=30.0)
    state = state if state is not None else {}  # the informer's ERROR handler clears "opened" on an expired watch
    state.update(failures=0, opened=None)

    def list_objects(**kwargs: Any) -> Any:
        if kwargs.get("watch"):
            now = time.monotonic()
            if state["opened"] is not None:  # the last watch ended (or failed to open): was it a failure?
                if now - state["opened"] < WATCH_MIN_LIFE:
                    state["failures"] += 1
                else:
                    state["failures"] = 0
                    backoff.success("watch")
            state["opened"] = None
            if state["failures"] >= 5:
                state["failures"] = 0
                raise ApiException(status=410, reason=f"{what}: its watch failed 5 times in a row; listing again")
            if state["failures"] and stopping.wait(backoff.failure("watch")):
                raise ApiException(status=0, reason=f"{what}: stopping")
            kwargs.setdefault("allow_watch_bookmarks", True)
            kwargs.setdefault("timeout_seconds", WATCH_SERVER_TIMEOUT)
            kwargs.setdefault("_request_timeout", WATCH_CLIENT_TIMEOUT)
            state["opened"] = time.monotonic()
            try:
                return call(**kwargs)
            except ApiException as error:
                if error.status == 410:  # expired: the informer lists again, as it should; not a failure
                    state["opened"] = None
                raise
        kwargs.pop("_preload_content", None)
        body = json.loads(call(_preload_content=False, _request_timeout=60, **kwargs).data)
        for item in body.get("items") or []:
            item.setdefault("apiVersion", api_version)
            item.setdefault("kind", kind)
        return _Listing(body)
    # Watch.stream deserialises events by the list function's return annotation: ``object`` keeps them dicts and
    # tracks their resourceVersion (with none, it would resume every watch from the LIST's).
    list_objects.__annotations__ = {"return": object}
    return list_objects


class Informers:
    """Watch-fed copies of some kinds' objects, one ``kubernetes.informer.SharedInformer`` (the official client's:
    LIST, then WATCH from its resourceVersion; after a 410 Gone a new LIST whose diff deletes what vanished meanwhile;
    reconnects on any error, never raising) per kind and namespace (all namespaces when ``namespaces`` is empty).

    Args:
        api_client: a ``kubernetes.client.ApiClient``; the informers use a client of their own over its
            configuration, with a connection pool holding every watch.
        kinds: ``(api version, kind, plural)`` of each kind to keep.
        label_selector: the selector each kind's LIST and WATCH carry (filtered by the API server; None: all).
        owner: ``owner(kind, obj)`` the name ``obj`` is filed under besides its own (the LLMDeployment a revision
            Deployment or an LLMRollout belongs to), or None.
    """

    def __init__(self, api_client: Any, kinds: Any, *, namespaces: tuple[str, ...] = (),
                 label_selector: Any = lambda kind: None, owner: Any = lambda kind, obj: None,
                 on_change: Any = lambda kind, obj: None):
        import copy as _copy

        from kubernetes import client as k8s
        from kubernetes.informer import ADDED, DELETED, ERROR, MODIFIED, SharedInformer

        class _Informer(SharedInformer):
            """A SharedInformer that keeps its copies compact (:func:`_stripped_cache`) and says when its first LIST
            is in them (client-go's ``HasSynced``)."""

            def __init__(self, *args: Any, owner: Any, **kwargs: Any):
                super().__init__(*args, **kwargs)
                self._cache = _stripped_cache(owner)
                self.synced = threading.Event()  # the copies are believed: the last LIST succeeded
                self.primed = threading.Event()  # a first LIST has succeeded (its events are the start-up's, not changes)

            def _build_kwargs(self) -> dict[str, Any]:
                # timeout_seconds where Watch.stream sees it: it then makes no reconnects of its own (after an expired
                # resourceVersion, say), every new watch goes through the informer's loop and the back-off's count.
                return {**super()._build_kwargs(), "timeout_seconds": WATCH_SERVER_TIMEOUT}

            def _initial_list(self) -> None:
                try:
                    super()._initial_list()
                except Exception:
                    self.synced.clear()  # a LIST that fails: the copies are not believed until one succeeds
                    raise
                self.synced.set()
                self.primed.set()

        config = _copy.copy(api_client.configuration)
        config.connection_pool_maxsize = max(4, len(list(kinds)) * max(1, len(namespaces)) + 2)
        self._api = k8s.ApiClient(config)
        core, custom = k8s.CoreV1Api(self._api), k8s.CustomObjectsApi(self._api)
        self._informers: dict[tuple[str, str | None], Any] = {}
        self._stopping = threading.Event()
        self.kinds = {kind for _, kind, _ in kinds}
        for api_version, kind, plural in kinds:
            group, _, version = api_version.rpartition("/")
            for namespace in namespaces or (None,):
                if not group:  # the core group: the generated calls (/api/v1/...), e.g. list_service_for_all_namespaces
                    call = (getattr(core, f"list_{kind.lower()}_for_all_namespaces") if namespace is None else
                            functools.partial(getattr(core, f"list_namespaced_{kind.lower()}"), namespace))
                elif namespace is None:
                    call = functools.partial(custom.list_cluster_custom_object, group, version, plural)
                else:
                    call = functools.partial(custom.list_namespaced_custom_object, group, version, namespace, plural)
                state: dict[str, Any] = {}
                informer = _Informer(_lister(call, kind, api_version, f"{kind} in {namespace or 'all namespaces'}", self._stopping, state),
                                     label_selector=label_selector(kind),
                                     owner=functools.partial(owner, kind) if kind in ("Deployment", "LLMRollout") else lambda obj: None)
                # kube-apiserver answers an expired resourceVersion with a 200 and an ERROR event (410): the informer
                # lists again, and that watch's short life is no failure.
                informer.add_event_handler(ERROR, lambda error, _state=state: _state.update(opened=None)
                                           if getattr(error, "status", None) == 410 else None)
                if kind in ("Deployment", "LLMRollout"):
                    for event in (ADDED, MODIFIED, DELETED):
                        informer.add_event_handler(event, functools.partial(self._changed, informer, kind, on_change))
                self._informers[(kind, namespace)] = informer

    @staticmethod
    def _changed(informer: Any, kind: str, on_change: Any, obj: dict[str, Any]) -> None:
        if informer.primed.is_set():  # not for the first LIST's objects: the LLMDeployments' own events start those passes
            on_change(kind, obj)

    def start(self) -> None:
        for informer in self._informers.values():
            informer.start()

    def stop(self) -> None:
        """Ask every informer to stop; their threads are daemons and are not waited for (a watch blocked on a quiet
        stream would hold the shutdown until its server timeout)."""
        self._stopping.set()
        for informer in self._informers.values():
            informer._stop_event.set()
            watch = informer._watch  # read once: the informer's thread sets it to None when a stream ends
            if watch is not None:
                watch.stop()

    def synced(self, kind: str) -> bool:
        """Whether every informer of ``kind`` has its first LIST in its cache."""
        found = [i for (k, _), i in self._informers.items() if k == kind]
        return bool(found) and all(i.synced.is_set() for i in found)

    def _cache(self, kind: str, namespace: str) -> Any:
        informer = self._informers.get((kind, None)) or self._informers.get((kind, namespace))
        return informer.cache if informer is not None else None

    def get(self, kind: str, namespace: str, name: str) -> dict[str, Any] | None:
        """The object as last seen (decoded afresh: the caller's to keep), or None."""
        cache = self._cache(kind, namespace)
        return cache.get_by_key(f"{namespace}/{name}") if cache is not None else None

    def owned(self, kind: str, namespace: str, owner: str) -> list[dict[str, Any]]:
        """The objects of ``kind`` filed under ``owner`` (see ``owner`` above; decoded afresh)."""
        cache = self._cache(kind, namespace)
        return cache.owned(namespace, owner) if cache is not None else []

    def all_synced(self) -> bool:
        """Whether every informer has its first LIST in its copies (client-go's ``WaitForCacheSync``)."""
        return all(i.synced.is_set() for i in self._informers.values())
