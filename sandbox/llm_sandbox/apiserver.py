"""A local Kubernetes API endpoint for tests and the demo: kmock's ``KubernetesEmulator``, extended.

kmock (by kopf's author) keeps objects in memory and serves list/watch/get/create/patch/delete. A real
API server does more, and the operator relies on some of it, so this subclass adds (and nothing else):

* ``metadata.uid``, ``resourceVersion`` (a cluster-wide counter), ``generation`` (bumped when anything
  outside ``metadata`` and ``status`` changes) and ``creationTimestamp``;
* the ``status`` subresource: writes to the object ignore ``status``, writes to ``/status`` change only it;
* a patch that changes nothing is not stored and raises no watch event (as a real server does);
* merge, strategic-merge (approximated as merge), JSON and apply patches by Content-Type; PUT replaces;
* ``labelSelector`` on lists and watches; ``kind``/``apiVersion`` on list responses;
* discovery of built-in kinds, of the add-on CRDs a cluster would have (Istio, KEDA), and of every
  CustomResourceDefinition created through the API (deleting the CRD unregisters it);
* garbage collection: deleting an object deletes the objects whose controller ownerReference names it;
* ``kubectl`` support: server-side ``Table`` responses built from CRDs' printer columns, ``/openapi/v3`` with
  the CRDs' schemas and the ``fieldValidation`` parameter, and server-side validation of custom resources
  against their CRD's schema and CEL rules (unknown fields refused under ``fieldValidation=Strict``);
* ``fieldSelector`` on ``metadata.name`` and ``metadata.namespace``;
* a compact request log (:attr:`ApiServer.log`) instead of kmock's, whose matching scans every request
  ever received (quadratic over a long run); served requests are dropped from kmock's list.

It is a test stand-in, not a product: there is no admission, no RBAC, no validation of built-in kinds, no
pruning of unknown fields, and server-side apply assumes a single field manager.
"""

from __future__ import annotations

import asyncio
import copy
import dataclasses
import datetime
import json
import re
import uuid
from typing import Any

import hashlib

import aiohttp.web
import jsonpatch
import kmock
from kmock._internal import dicts, enums

from . import openapi
from .table import table

_VERBS = {"get", "list", "watch", "create", "update", "patch", "delete", "deletecollection"}

#: (group/version/plural, kind, namespaced, subresources, short names)
BUILTIN_RESOURCES: list[tuple[str, str, bool, set[str], set[str]]] = [
    ("v1/namespaces", "Namespace", False, {"status"}, {"ns"}),
    ("v1/events", "Event", True, set(), {"ev"}),
    ("v1/services", "Service", True, {"status"}, {"svc"}),
    ("v1/secrets", "Secret", True, set(), set()),
    ("v1/configmaps", "ConfigMap", True, set(), {"cm"}),
    ("v1/pods", "Pod", True, {"status"}, {"po"}),
    ("events.k8s.io/v1/events", "Event", True, set(), {"ev"}),
    ("apps/v1/deployments", "Deployment", True, {"status", "scale"}, {"deploy"}),
    ("autoscaling/v2/horizontalpodautoscalers", "HorizontalPodAutoscaler", True, {"status"}, {"hpa"}),
    ("policy/v1/poddisruptionbudgets", "PodDisruptionBudget", True, {"status"}, {"pdb"}),
    ("apiextensions.k8s.io/v1/customresourcedefinitions", "CustomResourceDefinition", False, {"status"}, {"crd", "crds"}),
    # Add-ons a serving cluster has installed: Istio and KEDA.
    ("networking.istio.io/v1/virtualservices", "VirtualService", True, {"status"}, {"vs"}),
    ("networking.istio.io/v1/destinationrules", "DestinationRule", True, {"status"}, {"dr"}),
    ("keda.sh/v1alpha1/scaledobjects", "ScaledObject", True, {"status"}, {"so"}),
]

_MERGE_TYPES = ("application/merge-patch+json", "application/strategic-merge-patch+json", "application/apply-patch+yaml")


@dataclasses.dataclass(frozen=True)
class Logged:
    """One request as the API server saw it."""

    method: str
    path: str
    query: dict[str, str]
    user_agent: str
    content_type: str
    text: str


def _now() -> str:
    return datetime.datetime.now(tz=datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _strip_directives(value: Any) -> Any:
    """Drop strategic-merge directives (``$patch``, ``$setElementOrder/...``), approximating SMP as merge."""
    if isinstance(value, dict):
        return {key: _strip_directives(item) for key, item in value.items() if not key.startswith("$")}
    if isinstance(value, list):
        return [_strip_directives(item) for item in value]
    return value


def _label_matcher(selector: str | None):
    """A predicate over label dicts for a Kubernetes label selector string (equality- and set-based)."""
    if not selector:
        return lambda labels: True
    checks = []
    for term in re.split(r",(?![^()]*\))", selector):
        term = term.strip()
        if m := re.fullmatch(r"([^\s!=]+)\s+(in|notin)\s+\(([^)]*)\)", term):
            key, op, values = m.group(1), m.group(2), {v.strip() for v in m.group(3).split(",")}
            checks.append(lambda l, k=key, o=op, v=values: (l.get(k) in v) if o == "in" else (l.get(k) not in v))
        elif m := re.fullmatch(r"([^\s!=]+)\s*(==|=|!=)\s*(\S*)", term):
            key, op, value = m.groups()
            checks.append(lambda l, k=key, o=op, v=value: (l.get(k) == v) if o != "!=" else (l.get(k) != v))
        elif term.startswith("!"):
            checks.append(lambda l, k=term[1:]: k not in l)
        else:
            checks.append(lambda l, k=term: k in l)
    return lambda labels: all(check(labels or {}) for check in checks)


def _field_matcher(selector: str | None):
    """A predicate over objects for field selectors (``metadata.name=x``, ``reason=InvalidSpec``, ``a.b!=c``)."""
    if not selector:
        return lambda obj: True

    def lookup(obj: dict, path: str) -> str | None:
        for part in path.split("."):
            obj = obj.get(part) if isinstance(obj, dict) else None
        return None if obj is None else str(obj)

    checks = []
    for term in selector.split(","):
        key, op, value = re.fullmatch(r"\s*([^!=\s]+)\s*(==|=|!=)\s*(\S*)\s*", term).groups()
        checks.append(lambda o, k=key, neg=op == "!=", v=value: (lookup(o, k) == v) != neg)
    return lambda obj: all(check(obj) for check in checks)


def _status(code: int, reason: str, message: str, details: dict | None = None) -> dict:
    return {"apiVersion": "v1", "kind": "Status", "metadata": {}, "status": "Failure", "code": code,
            "reason": reason, "message": message, "details": details or {}}


class ApiServer(kmock.KubernetesEmulator):
    """kmock's emulator with the API-server behaviours listed in the module docstring."""

    def __attrs_post_init__(self) -> None:
        super().__attrs_post_init__()
        self._rv_counter = 0
        self.log: list[Logged] = []
        #: Off stands for objects stored before their CRD carried today's rules (or a server without CEL).
        self.validate_custom_resources = True
        self._crds: dict[str, list[str]] = {}  # CRD name -> resource keys it registered
        for key, kind, namespaced, subresources, shortnames in BUILTIN_RESOURCES:
            self.resources[key] = kmock.ResourceInfo(
                kind=kind, namespaced=namespaced, verbs=_VERBS, subresources=subresources, shortnames=shortnames,
                singular=kind.lower(),
            )

    # ------------------------------------------------------------------------------------ writes

    async def _handle(self, request: kmock.Request) -> aiohttp.web.StreamResponse:
        self.log.append(Logged(
            method=request.method.value, path=request.url.path, query=dict(request.params),
            user_agent=request.headers.get("User-Agent", ""), content_type=request.headers.get("Content-Type", ""),
            text=request.text if request.method.value != "GET" else "",
        ))
        try:
            return await self._handle_logged(request)
        finally:
            try:
                self._requests.remove(request)
            except ValueError:
                pass

    async def _handle_logged(self, request: kmock.Request) -> aiohttp.web.StreamResponse:
        if request.method == enums.method.GET and request.url.path.startswith("/openapi/v3"):
            return self._serve_openapi(request.url.path)
        if (request.method == enums.method.GET and request.resource is not None and request.subresource is None
                and "as=Table" in request.headers.get("Accept", "") and request.params.get("watch") != "true"):
            return await self._serve_table(request)
        if request.resource is None or request.method not in (enums.method.POST, enums.method.PATCH, enums.method.PUT, enums.method.DELETE):
            return await super()._handle(request)
        try:
            async with self._lock:
                response, events, gc_roots = self._mutate(request)
        except kmock.KubernetesError as exc:
            return await self._render_error(exc)
        for resource, event in events:
            await self._buses[resource].put(event)
        if gc_roots:
            await self._collect_garbage(gc_roots)
        return aiohttp.web.json_response(response[1], status=response[0])

    def _key(self, request: kmock.Request, name: str | None = None, namespace: str | None = None):
        return (request.resource, request.namespace or namespace, request.name or name)

    def _subresources(self, resource: Any) -> set[str]:
        return set(self.resources[resource].subresources) if resource in self.resources else set()

    def _mutate(self, request: kmock.Request) -> tuple[tuple[int, dict], list, list]:
        """Apply one write under the lock; returns ((HTTP status, body), watch events, uids of deleted objects)."""
        resource = request.resource
        events: list[tuple[Any, dict]] = []
        method = request.method
        content_type = request.headers.get("Content-Type", "application/json").split(";")[0].strip()
        if content_type == "application/vnd.kubernetes.protobuf":  # not decoded here: refuse it loudly
            raise kmock.KubernetesError(status=415, reason="UnsupportedMediaType",
                                        message="the local API endpoint reads JSON and YAML bodies only, not protobuf")

        if method == enums.method.POST:
            obj = copy.deepcopy(request.data or {})
            meta = obj.setdefault("metadata", {})
            if not meta.get("name") and meta.get("generateName"):
                meta["name"] = meta["generateName"] + uuid.uuid4().hex[:5]
            if request.namespace and self.resources[resource].namespaced is not False:
                meta["namespace"] = request.namespace
            key = (resource, meta.get("namespace"), meta.get("name"))
            if key in self.objects and not self.objects[key].deleted:
                raise kmock.KubernetesError(status=409, reason="AlreadyExists", message=f"{resource.plural} {meta.get('name')!r} already exists")
            if "status" in self._subresources(resource):
                obj.pop("status", None)
            self._validate(request, obj)
            _secret_string_data(obj)
            meta.update(uid=str(uuid.uuid4()), resourceVersion=self._next_rv(), generation=1, creationTimestamp=_now())
            meta.pop("deletionTimestamp", None)
            if key in self.objects:
                self.objects[key].create(obj)
            else:
                self.objects[key] = obj
            events.append((resource, {"type": "ADDED", "object": copy.deepcopy(obj)}))
            self._on_created(resource, obj)
            return (201, copy.deepcopy(obj)), events, []

        key = self._key(request)
        exists = key in self.objects and not self.objects[key].deleted

        if method == enums.method.DELETE:
            if not exists:
                raise kmock.KubernetesObjectNotFoundError()
            current = copy.deepcopy(self.objects[key].raw)
            if current["metadata"].get("finalizers"):
                if not current["metadata"].get("deletionTimestamp"):
                    current["metadata"]["deletionTimestamp"] = _now()
                    current["metadata"]["resourceVersion"] = self._next_rv()
                    self.objects[key].create(current)
                    events.append((resource, {"type": "MODIFIED", "object": copy.deepcopy(current)}))
                return (200, current), events, []
            self.objects[key].delete()
            events.append((resource, {"type": "DELETED", "object": current}))
            self._on_deleted(resource, current)
            return (200, current), events, [current["metadata"]["uid"]]

        # PATCH / PUT
        data = request.data
        applying = method == enums.method.PATCH and content_type == "application/apply-patch+yaml"
        if not exists and applying:
            # Server-side apply creates what is absent.
            obj = copy.deepcopy(data)
            obj.setdefault("metadata", {})["namespace"] = request.namespace
            if "status" in self._subresources(resource):
                obj.pop("status", None)
            self._validate(request, obj)
            _secret_string_data(obj)
            obj["metadata"].update(uid=str(uuid.uuid4()), resourceVersion=self._next_rv(), generation=1, creationTimestamp=_now())
            if key in self.objects:
                self.objects[key].create(obj)
            else:
                self.objects[key] = obj
            events.append((resource, {"type": "ADDED", "object": copy.deepcopy(obj)}))
            return (201, copy.deepcopy(obj)), events, []
        if not exists:
            raise kmock.KubernetesObjectNotFoundError()
        current = self.objects[key].raw
        on_status = request.subresource == "status"
        if method == enums.method.PUT:
            new = copy.deepcopy(data)
        elif applying:
            # Server-side apply, approximated for a single field manager: the applied configuration replaces
            # the object's content (status and server-owned metadata are kept below). A real server keeps
            # fields other managers own; nothing else writes these objects in the sandbox.
            new = copy.deepcopy(data)
        elif content_type == "application/json-patch+json" or isinstance(data, list):
            try:
                new = jsonpatch.apply_patch(copy.deepcopy(current), data)
            except jsonpatch.JsonPatchTestFailed as exc:
                raise kmock.KubernetesError(status=422, reason="Invalid", message=f"testing value failed: {exc}") from exc
            except (jsonpatch.JsonPatchException, jsonpatch.JsonPointerException) as exc:
                raise kmock.KubernetesError(status=422, reason="Invalid", message=str(exc)) from exc
        elif content_type in _MERGE_TYPES or content_type == "application/json":
            new = dict(dicts.merge_patch_dict(copy.deepcopy(current), _strip_directives(data or {})))
        else:
            raise kmock.KubernetesError(status=415, reason="UnsupportedMediaType", message=content_type)

        wanted_rv = (data or {}).get("metadata", {}).get("resourceVersion") if isinstance(data, dict) else None
        if wanted_rv and wanted_rv != current["metadata"].get("resourceVersion"):
            raise kmock.KubernetesError(status=409, reason="Conflict", message="the object has been modified; please apply your changes to the latest version and try again")

        new.setdefault("metadata", {})
        if "status" in self._subresources(resource):
            if on_status:  # only status may change through /status
                new = {**copy.deepcopy(current), "status": new.get("status")}
                if new["status"] is None:
                    del new["status"]
            else:
                new.pop("status", None)
                if "status" in current:
                    new["status"] = copy.deepcopy(current["status"])
        # Server-owned metadata stays as the server set it.
        for field in ("uid", "creationTimestamp", "generation", "resourceVersion", "deletionTimestamp"):
            if field in current["metadata"]:
                new["metadata"][field] = current["metadata"][field]
            else:
                new["metadata"].pop(field, None)
        if new == current:
            return (200, copy.deepcopy(current)), events, []
        self._validate(request, new, current)
        if {k: v for k, v in new.items() if k not in ("metadata", "status")} != {k: v for k, v in current.items() if k not in ("metadata", "status")}:
            new["metadata"]["generation"] = current["metadata"].get("generation", 1) + 1
        new["metadata"]["resourceVersion"] = self._next_rv()
        if new["metadata"].get("deletionTimestamp") and not new["metadata"].get("finalizers"):
            self.objects[key].create(new)
            self.objects[key].delete()
            events.append((resource, {"type": "DELETED", "object": copy.deepcopy(new)}))
            self._on_deleted(resource, new)
            return (200, new), events, [new["metadata"]["uid"]]
        self.objects[key].create(new)
        events.append((resource, {"type": "MODIFIED", "object": copy.deepcopy(new)}))
        if resource.plural == "customresourcedefinitions":
            self._on_created(resource, new)
        return (200, copy.deepcopy(new)), events, []

    async def _collect_garbage(self, roots: list[str]) -> None:
        """Background cascading deletion: delete dependents of deleted owners, transitively."""
        pending = list(roots)
        while pending:
            owner_uid = pending.pop()
            async with self._lock:
                victims = [
                    (key, obj.raw) for key, obj in list(self.objects.items())
                    if not obj.deleted
                    and any(ref.get("uid") == owner_uid for ref in obj.raw.get("metadata", {}).get("ownerReferences", []))
                ]
                events = []
                for key, raw in victims:
                    remaining = [r for r in raw["metadata"]["ownerReferences"] if r.get("uid") != owner_uid]
                    alive = any(self._uid_exists(r.get("uid")) for r in remaining)
                    if alive:
                        continue
                    if raw["metadata"].get("finalizers"):
                        if not raw["metadata"].get("deletionTimestamp"):
                            updated = copy.deepcopy(raw)
                            updated["metadata"]["deletionTimestamp"] = _now()
                            updated["metadata"]["resourceVersion"] = self._next_rv()
                            self.objects[key].create(updated)
                            events.append((key[0], {"type": "MODIFIED", "object": updated}))
                        continue
                    self.objects[key].delete()
                    events.append((key[0], {"type": "DELETED", "object": copy.deepcopy(raw)}))
                    pending.append(raw["metadata"]["uid"])
            for resource, event in events:
                await self._buses[resource].put(event)

    def _uid_exists(self, uid: str | None) -> bool:
        return any(not obj.deleted and obj.raw.get("metadata", {}).get("uid") == uid for obj in self.objects.values())

    # ------------------------------------------------------------------------------ CRD knowledge

    def _crd_version(self, resource: Any) -> dict | None:
        """The served version entry (schema, printer columns) of the CRD behind ``resource``, if any."""
        for key, obj in self.objects.items():
            if key[0].plural != "customresourcedefinitions" or obj.deleted:
                continue
            spec = obj.raw.get("spec", {})
            if spec.get("group") == resource.group and spec.get("names", {}).get("plural") == resource.plural:
                return next((v for v in spec.get("versions", []) if v["name"] == resource.version), None)
        return None

    def _validate(self, request: kmock.Request, obj: dict, old: dict | None = None) -> None:
        """Refuse a custom resource that breaks its CRD's schema or CEL rules (HTTP 422), as a real server does:
        a ``/status`` write is checked on its status, and values an update leaves unchanged are let through
        (validation ratcheting, GA in Kubernetes 1.33)."""
        version = self._crd_version(request.resource)
        schema = (version or {}).get("schema", {}).get("openAPIV3Schema")
        if not schema or not self.validate_custom_resources:
            return
        strict = request.params.get("fieldValidation", "").lower() == "strict"
        if request.subresource == "status":
            schema = {"type": "object", "properties": {"status": schema.get("properties", {}).get("status", {})}}
            obj = {"status": obj.get("status", {})}
            old = {"status": (old or {}).get("status", {})} if old is not None else None
        errors = openapi.schema_errors(schema, obj, strict=strict) or openapi.cel_errors(schema, obj)
        if old is not None:
            errors = [(f, m) for f, m in errors if openapi.value_at(obj, f) != openapi.value_at(old, f)]
        if errors:
            info = self.resources[request.resource]
            name = obj.get("metadata", {}).get("name") or request.name
            raise kmock.KubernetesError(
                status=422, reason="Invalid",
                message=f'{info.kind}.{request.resource.group} "{name}" is invalid: [{", ".join(f"{f}: {m}" for f, m in errors)}]',
                details={"name": name, "group": request.resource.group, "kind": info.kind,
                         "causes": [{"reason": "FieldValueInvalid", "message": m, "field": f} for f, m in errors]},
            )

    async def _serve_table(self, request: kmock.Request) -> aiohttp.web.StreamResponse:
        try:
            if request.name is None:
                objects = (await self._serve_list(request))["items"]
            else:
                objects = [await self._serve_fetch(request)]
        except kmock.KubernetesError as exc:
            return await self._render_error(exc)
        version = self._crd_version(request.resource) or {}
        return aiohttp.web.json_response(table(version.get("additionalPrinterColumns"), objects, str(self._rv_counter)))

    def _openapi_documents(self) -> dict[str, dict]:
        """One OpenAPI 3.0 document per served group-version, keyed like kube-apiserver's ``/openapi/v3``."""
        docs: dict[str, dict] = {}
        for resource in self.resources:
            info = self.resources[resource]
            gv_path = f"api/{resource.version}" if not resource.group else f"apis/{resource.group}/{resource.version}"
            gvk = {"group": resource.group, "version": resource.version, "kind": info.kind}
            group_prefix = ".".join(reversed(resource.group.split("."))) if resource.group else "io.k8s.api.core"
            schema_name = f"{group_prefix}.{resource.version}.{info.kind}"
            version = self._crd_version(resource)
            schema = copy.deepcopy((version or {}).get("schema", {}).get("openAPIV3Schema")) or {
                "type": "object", "x-kubernetes-preserve-unknown-fields": True}
            schema["x-kubernetes-group-version-kind"] = [gvk]
            doc = docs.setdefault(gv_path, {"openapi": "3.0.0", "info": {"title": "Kubernetes", "version": "v1.33.0"},
                                            "paths": {}, "components": {"schemas": {}}})
            doc["components"]["schemas"][schema_name] = schema
            ref = {"$ref": f"#/components/schemas/{schema_name}"}
            ok = {"200": {"description": "OK", "content": {"application/json": {"schema": ref}}}}
            params = [{"name": n, "in": "query", "schema": {"type": "string", "uniqueItems": True}}
                      for n in ("dryRun", "fieldManager", "fieldValidation")]
            base = f"/{gv_path}/namespaces/{{namespace}}/{resource.plural}" if info.namespaced else f"/{gv_path}/{resource.plural}"
            def op(action: str, with_params: bool = False, gvk=gvk, ok=ok, kind=info.kind, params=params) -> dict:
                out = {"x-kubernetes-action": action, "x-kubernetes-group-version-kind": gvk, "responses": ok,
                       "operationId": f"{action}{kind}"}
                if with_params:
                    out["parameters"] = params
                return out
            doc["paths"][base] = {"get": op("list"), "post": op("post", True)}
            doc["paths"][base + "/{name}"] = {"get": op("get"), "put": op("put", True), "patch": op("patch", True), "delete": op("delete")}
        return docs

    def _serve_openapi(self, path: str) -> aiohttp.web.StreamResponse:
        docs = self._openapi_documents()
        if path.rstrip("/") == "/openapi/v3":
            listing = {
                gv: {"serverRelativeURL": f"/openapi/v3/{gv}?hash={hashlib.sha256(json.dumps(doc, sort_keys=True).encode()).hexdigest()[:16].upper()}"}
                for gv, doc in docs.items()
            }
            return aiohttp.web.json_response({"paths": listing})
        doc = docs.get(path[len("/openapi/v3/"):])
        if doc is None:
            return aiohttp.web.json_response(_status(404, "NotFound", f"no OpenAPI document for {path}"), status=404)
        return aiohttp.web.json_response(doc)

    # ------------------------------------------------------------------------------ CRD discovery

    def _on_created(self, resource: Any, obj: dict) -> None:
        if resource.plural != "customresourcedefinitions":
            return
        spec = obj.get("spec", {})
        names = spec.get("names", {})
        keys = []
        for version in spec.get("versions", []):
            if not version.get("served", True):
                continue
            key = f"{spec['group']}/{version['name']}/{names['plural']}"
            self.resources[key] = kmock.ResourceInfo(
                kind=names.get("kind"), singular=names.get("singular"), namespaced=spec.get("scope") == "Namespaced",
                verbs=_VERBS, shortnames=set(names.get("shortNames", [])), categories=set(names.get("categories", [])),
                subresources=set(version.get("subresources", {}) or {}),
            )
            keys.append(key)
        self._crds[obj["metadata"]["name"]] = keys

    def _on_deleted(self, resource: Any, obj: dict) -> None:
        if resource.plural == "customresourcedefinitions":
            for key in self._crds.pop(obj["metadata"]["name"], []):
                del self.resources[key]

    # ------------------------------------------------------------------------------------- reads

    async def _serve_version(self, request: kmock.Request) -> Any:
        # Subresources are listed as in a real server: their own verbs, no short names or categories (kmock
        # copies the parent's, which makes kubectl warn about ambiguous short names and expand categories to them).
        payload = await super()._serve_version(request)
        payload["groupVersion"] = payload["groupVersion"].lstrip("/")  # the core group is "v1", not "/v1"
        for entry in payload["resources"]:
            if "/" in entry["name"]:
                sub = entry["name"].split("/", 1)[1]
                entry.update(shortNames=[], categories=[], singularName="", verbs=["get", "patch", "update"])
                if sub == "scale":
                    entry.update(kind="Scale", group="autoscaling", version="v1")
        return payload

    async def _serve_list(self, request: kmock.Request) -> Any:
        payload = await super()._serve_list(request)
        match = _label_matcher(request.params.get("labelSelector"))
        fields = _field_matcher(request.params.get("fieldSelector"))
        items = [item for item in payload["items"] if match(item.get("metadata", {}).get("labels")) and fields(item)]
        items.sort(key=lambda o: (o.get("metadata", {}).get("namespace") or "", o.get("metadata", {}).get("name") or ""))  # etcd key order
        info = self.resources[request.resource] if request.resource in self.resources else None
        group_version = "/".join(p for p in (request.resource.group, request.resource.version) if p)
        return {
            "apiVersion": group_version,
            "kind": f"{info.kind}List" if info and info.kind else "List",
            "metadata": {"resourceVersion": str(self._rv_counter)},
            "items": items,
        }

    def _next_rv(self) -> str:
        self._rv_counter += 1
        return str(self._rv_counter)

    async def _serve_watch(self, request: kmock.Request):
        match = _label_matcher(request.params.get("labelSelector"))
        fields = _field_matcher(request.params.get("fieldSelector"))
        async for event in super()._serve_watch(request):
            if isinstance(event, dict) and not (match(event.get("object", {}).get("metadata", {}).get("labels"))
                                                and fields(event.get("object", {}))):
                continue
            yield event


async def serve(host: str = "127.0.0.1", port: int = 0) -> tuple[ApiServer, kmock.Server]:
    """Start an :class:`ApiServer` on loopback; the caller exits both context managers."""
    handler = ApiServer()
    await handler.__aenter__()
    server = kmock.Server(handler, host=host, port=port)
    await server.__aenter__()
    return handler, server


def kubeconfig(url: str, path: str) -> str:
    """Write a kubeconfig pointing at ``url`` to ``path`` and return the path."""
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "llmops-sandbox", "cluster": {"server": url.rstrip("/")}}],
        "users": [{"name": "sandbox", "user": {"token": "sandbox"}}],
        "contexts": [{"name": "llmops-sandbox", "context": {"cluster": "llmops-sandbox", "user": "sandbox", "namespace": "default"}}],
        "current-context": "llmops-sandbox",
    }
    with open(path, "w") as handle:
        json.dump(config, handle)
    return path


async def _main(host: str, port: int, config_path: str | None) -> None:
    handler, server = await serve(host, port)
    url = str(server.url)
    if config_path:
        kubeconfig(url, config_path)
    print(f"llm-sandbox API server listening on {url}", flush=True)
    try:
        await asyncio.Event().wait()
    finally:
        await server.__aexit__(None, None, None)
        await handler.__aexit__(None, None, None)


def main() -> None:
    import argparse

    parser = argparse.ArgumentParser(description="Run the local Kubernetes API endpoint.")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--kubeconfig", help="write a kubeconfig for this endpoint here")
    args = parser.parse_args()
    try:
        asyncio.run(_main(args.host, args.port, args.kubeconfig))
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()


def _secret_string_data(obj: dict) -> None:
    """As the API server does: a Secret's write-only ``stringData`` is merged into ``data`` (base64)."""
    if obj.get("kind") == "Secret" and obj.get("stringData"):
        import base64

        data = obj.setdefault("data", {})
        for key, value in obj.pop("stringData").items():
            data[key] = base64.b64encode(str(value).encode()).decode()
