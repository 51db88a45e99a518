"""The operator's one boundary for Kubernetes reads and writes (kopf does the watching).

:class:`Kube` is the Protocol the reconcilers use; :class:`DynamicKube` implements it with the official
``kubernetes`` client's DynamicClient, and the unit tests use an in-memory fake. Children are written by
server-side apply under one field manager (``llm-operator``), so a field the operator stops setting is
removed and fields other managers own (an HPA's replicas) are left alone.
"""

from __future__ import annotations

import json
import logging
import threading
from typing import Any, Protocol

from . import _contract as c

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

    def scale(self, namespace: str, name: str, replicas: int) -> None:
        """Set a Deployment's ``spec.replicas`` with a merge patch."""

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

        self._client = dynamic.DynamicClient(api_client)
        self._lock = threading.Lock()
        self._resources: dict[tuple[str, str], Any] = {}

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
        key = (api_version, kind)
        with self._lock:
            if key not in self._resources:
                self._resources[key] = self._client.resources.get(api_version=api_version, kind=kind)
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

    def scale(self, namespace: str, name: str, replicas: int) -> None:
        try:
            self._resource("apps/v1", "Deployment").patch(
                body={"spec": {"replicas": replicas}}, name=name, namespace=namespace,
                content_type="application/merge-patch+json", field_manager=c.FIELD_MANAGER)
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

    def scale(self, namespace: str, name: str, replicas: int) -> None:
        self._call("patch", "Deployment", lambda: self._inner.scale(namespace, name, replicas))

    def serves(self, api_version: str, kind: str) -> bool:
        return self._inner.serves(api_version, kind)
