"""An in-memory :class:`llm_operator._kube.Kube` for unit tests: it records every write, and stores what it is
given the way kube-apiserver does (a JSON round trip), so the unit tests model the real server."""

from __future__ import annotations

import copy
import itertools
import json
import uuid
from collections.abc import Callable
from typing import Any

import jsonpatch

from llm_operator._kube import Conflict, KubeError


def _go_float(text: str) -> float | int:
    """A JSON number with a fraction or exponent, as it reads back from kube-apiserver. The server decodes a custom
    resource into ``int64`` where it can, else ``float64`` (sigs.k8s.io/json), and Go's encoding/json writes a
    ``float64`` below 1e21 that has no fractional part without one: ``3.0`` is stored and returned as ``3``."""
    value = float(text)
    return int(value) if value.is_integer() and abs(value) < 1e21 else value


def stored(body: Any) -> Any:
    """``body`` as kube-apiserver stores and returns it.

    Raises:
        KubeError: 400, as the API server answers a body that is not JSON: NaN and infinities are not JSON
            numbers (the Python client would send the bare words ``NaN`` / ``Infinity``).
    """
    try:
        text = json.dumps(body, allow_nan=False)
    except ValueError as error:
        raise KubeError(f"BadRequest (400): the request body is not valid JSON: {error}", 400) from error
    return json.loads(text, parse_float=_go_float)


class FakeKube:
    """Objects keyed by (apiVersion, kind, namespace, name); ``writes`` lists (verb, kind, name).

    ``fail`` injects errors: ``fail[(verb, kind)]`` is a function of the object's name returning a
    :class:`KubeError` to raise instead of writing (or None to let the write through)."""

    def __init__(self, served: set[str] | None = None):
        self.objects: dict[tuple[str, str, str, str], dict[str, Any]] = {}
        self.writes: list[tuple[str, str, str]] = []
        self.lists: list[tuple[str, str, str]] = []  # (kind, label selector, field selector) of every LIST
        self.served = served or {"HorizontalPodAutoscaler"}
        self.fail: dict[tuple[str, str], Callable[[str], KubeError | None]] = {}
        self._rv = itertools.count(1)
        self._created = itertools.count(1)

    def _inject(self, verb: str, kind: str, name: str) -> None:
        error = self.fail.get((verb, kind), lambda _: None)(name)
        if error is not None:
            raise error

    def add(self, obj: dict[str, Any]) -> dict[str, Any]:
        obj = stored(obj)
        meta = obj.setdefault("metadata", {})
        meta.setdefault("uid", str(uuid.uuid4()))
        meta.setdefault("generation", 1)
        meta["resourceVersion"] = str(next(self._rv))
        self.objects[self._key(obj)] = obj
        return obj

    @staticmethod
    def _key(obj: dict[str, Any]) -> tuple[str, str, str, str]:
        return (obj["apiVersion"], obj["kind"], obj["metadata"].get("namespace", ""), obj["metadata"]["name"])

    def get(self, api_version: str, kind: str, namespace: str, name: str) -> dict[str, Any] | None:
        found = self.objects.get((api_version, kind, namespace, name))
        return copy.deepcopy(found) if found else None

    def list(self, api_version: str, kind: str, namespace: str | None, label_selector: str,
             field_selector: str = "") -> list[dict[str, Any]]:
        key, _, value = label_selector.partition("=")
        path, _, wanted = field_selector.partition("=")

        def field(o: dict[str, Any]) -> Any:
            for part in path.split("."):
                o = o.get(part) if isinstance(o, dict) else None
            return o
        self.lists.append((kind, label_selector, field_selector))
        return [
            copy.deepcopy(o) for (av, k, ns, _), o in self.objects.items()
            if av == api_version and k == kind and namespace in (None, ns)
            and (not key or o["metadata"].get("labels", {}).get(key) == value)
            and (not path or field(o) == wanted)
        ]

    def apply(self, obj: dict[str, Any]) -> dict[str, Any]:
        self._inject("apply", obj["kind"], obj["metadata"]["name"])
        self.writes.append(("apply", obj["kind"], obj["metadata"]["name"]))
        live = self.objects.get(self._key(obj))
        merged = copy.deepcopy(obj)
        if live:
            merged["metadata"] = {**live["metadata"], **obj["metadata"]}
            if "status" in live:
                merged["status"] = live["status"]
        return self.add(merged)

    def create(self, obj: dict[str, Any]) -> dict[str, Any]:
        self._inject("create", obj["kind"], obj["metadata"]["name"])
        self.writes.append(("create", obj["kind"], obj["metadata"]["name"]))
        if self._key(obj) in self.objects:
            raise Conflict("exists", 409)
        created = next(self._created)  # the API server stamps creation (to the second); here one second apart
        stamp = f"2026-01-01T{created // 3600:02d}:{created // 60 % 60:02d}:{created % 60:02d}Z"
        obj.setdefault("metadata", {}).setdefault("creationTimestamp", stamp)
        return self.add(obj)

    def delete(self, api_version: str, kind: str, namespace: str, name: str) -> bool:
        self._inject("delete", kind, name)
        self.writes.append(("delete", kind, name))
        return self.objects.pop((api_version, kind, namespace, name), None) is not None

    def patch_status(self, api_version: str, kind: str, namespace: str, name: str, ops: list[dict[str, Any]]) -> dict[str, Any]:
        self._inject("status", kind, name)
        self.writes.append(("status", kind, name))
        ops = stored(ops)  # the request body: refused when it is not JSON
        live = self.objects[(api_version, kind, namespace, name)]
        try:
            patched = jsonpatch.apply_patch(live, ops)
        except jsonpatch.JsonPatchTestFailed as error:
            raise Conflict(str(error), 422) from error
        patched = stored(patched)
        patched["metadata"]["resourceVersion"] = str(next(self._rv))
        self.objects[(api_version, kind, namespace, name)] = patched
        return copy.deepcopy(patched)

    def patch(self, api_version: str, kind: str, namespace: str, name: str, body: dict[str, Any]) -> dict[str, Any]:
        """A merge patch (RFC 7386: null deletes a key, maps merge, anything else replaces)."""
        self._inject("patch", kind, name)
        self.writes.append(("patch", kind, name))
        live = self.objects.get((api_version, kind, namespace, name))
        if live is None:
            raise KubeError(f"{kind} {name} not found", 404)

        def merge(into: dict[str, Any], patch: dict[str, Any]) -> dict[str, Any]:
            for key, value in patch.items():
                if value is None:
                    into.pop(key, None)
                elif isinstance(value, dict) and isinstance(into.get(key), dict):
                    merge(into[key], value)
                else:
                    into[key] = copy.deepcopy(value)
            return into

        patched = stored(merge(copy.deepcopy(live), body))
        patched["metadata"]["resourceVersion"] = str(next(self._rv))
        self.objects[(api_version, kind, namespace, name)] = patched
        return copy.deepcopy(patched)

    def scale(self, namespace: str, name: str, replicas: int) -> None:
        self._inject("scale", "Deployment", name)
        self.writes.append(("scale", "Deployment", name))
        self.objects[("apps/v1", "Deployment", namespace, name)]["spec"]["replicas"] = replicas

    def serves(self, api_version: str, kind: str) -> bool:
        return kind in self.served


class FakeMetrics:
    """A MetricsProvider answering from ``answer(promql)``: a list of Samples, a number, None (no data), or an
    exception to raise. Records every query."""

    def __init__(self, answer):
        self.answer = answer
        self.queries: list[str] = []

    def query(self, promql: str):
        from llm_operator._metrics import Sample

        self.queries.append(promql)
        value = self.answer(promql)
        if isinstance(value, Exception):
            raise value
        if isinstance(value, list):
            return value
        return [] if value is None else [Sample({}, float(value))]


class FakeRegistry:
    """An in-memory :class:`llm_operator._registry.ModelRegistry`; ``down`` makes every call fail, ``calls``
    counts reads and ``writes`` lists writes."""

    def __init__(self):
        from llm_operator._registry import ModelInfo, VersionInfo  # noqa: F401 (types used below)

        self.aliases: dict[str, dict[str, str]] = {}
        self.stages: dict[str, dict[str, str]] = {}
        self.versions: dict[tuple[str, str], Any] = {}
        self.down = False
        self.calls = 0
        self.writes: list[tuple] = []

    def register(self, name: str, version: str, *, metrics: dict[str, float] | None = None, alias: str | None = None,
                 stage: str | None = None) -> None:
        from llm_operator._registry import VersionInfo

        self.versions[(name, version)] = VersionInfo(name=name, version=version, source=f"mlflow-artifacts:/1/{version}/artifacts/model",
                                                     run_id=f"run{version}", metrics=metrics or {}, params={"lr": "1e-4"})
        self.aliases.setdefault(name, {})
        if alias:
            self.aliases[name][alias] = version
        if stage:
            self.stages.setdefault(name, {})[stage] = version

    def _check(self) -> None:
        from llm_operator._registry import RegistryError

        self.calls += 1
        if self.down:
            raise RegistryError("GET /api/2.0/mlflow/registered-models/get: 503 Service Unavailable")

    def get_model(self, name: str):
        from llm_operator._registry import ModelInfo, ModelNotFound

        self._check()
        if name not in self.aliases:
            raise ModelNotFound(f"registered model {name!r} not found")
        return ModelInfo(name, dict(self.aliases[name]), dict(self.stages.get(name, {})))

    def get_version(self, name: str, version: str):
        from llm_operator._registry import ModelNotFound

        self._check()
        if (name, version) not in self.versions:
            raise ModelNotFound(f"model version {name}/{version} not found")
        return self.versions[(name, version)]

    def set_alias(self, name: str, alias: str, version: str) -> None:
        self._check()
        self.writes.append(("alias", name, alias, version))
        self.aliases[name][alias] = version

    def transition_stage(self, name: str, version: str, stage: str) -> None:
        self._check()
        self.writes.append(("stage", name, version, stage))
        self.stages.setdefault(name, {})[stage] = version

    def set_tags(self, name: str, version: str, tags) -> None:
        self._check()
        self.writes.append(("tags", name, version, dict(tags)))


def owned_by(body: dict[str, Any]) -> Callable[[dict[str, Any]], None]:
    """What the handler's ``kopf.append_owner_reference`` does to each child: a controller reference to ``body``."""
    def add(obj: dict[str, Any]) -> None:
        obj["metadata"].setdefault("ownerReferences", []).append({
            "apiVersion": "llmops.dev/v1alpha1", "kind": "LLMDeployment", "name": body["metadata"]["name"],
            "uid": body["metadata"].get("uid"), "controller": True, "blockOwnerDeletion": True})
    return add


def fake_deps(kube: FakeKube, now: str, *, resolve: Any = None, metrics: FakeMetrics | None = None,
              events: list[Any] | None = None, served: frozenset[str] = frozenset({"HorizontalPodAutoscaler"})) -> Any:
    """The :class:`~llm_operator._reconcile.Deps` of one pass over fakes, as the handlers build them over the real
    clients: ``resolve`` as in Deps (None: a model from a URI, no registry), ``metrics`` for every Prometheus address
    (None: none, so a guard says nothing and an analysis run is an Error), each Event appended to ``events``."""
    from llm_operator._metrics import MetricsError
    from llm_operator._reconcile import Deps

    def provider(address: str | None) -> FakeMetrics:
        if metrics is None:
            raise MetricsError("no Prometheus in this test")
        return metrics

    return Deps(kube=kube, resolve=resolve or (lambda body, spec, rollouts: (None, None)), provider=provider,
                post=lambda about, event, at: None if events is None else events.append(event),
                owner=lambda body, obj: owned_by(body)(obj), clock=lambda: now, autoscaler_kinds=served)
