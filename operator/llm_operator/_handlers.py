"""kopf handlers: thin wiring from watch events to the reconcilers. Nothing here decides.

Every LLMDeployment is reconciled level-based: on each watch event of the object itself, on each event
of a Deployment it owns (so readiness shows in status promptly), and by a periodic resync of all of them
(one LIST per interval). All three call :func:`reconcile`, which serialises passes per object and re-reads
the object first, so a pass never acts on a stale spec.

The operator writes nothing onto the objects it watches but their status: event handlers keep no progress
annotations, and there are no per-object timers or daemons, which in kopf would each add a finalizer.
Deleting an LLMDeployment is therefore plain garbage collection of its owned children.
"""

from __future__ import annotations

import asyncio
import datetime
import logging
import threading
from collections import defaultdict
from typing import Any

import kopf

from . import _contract as c
from ._api import GROUP, VERSION
from ._kube import DynamicKube, Kube, KubeError
from ._reconcile import Event, execute, observe, plan_llmdeployment
from ._settings import Settings

SETTINGS = Settings.from_env()
log = logging.getLogger(__name__)


def _now() -> str:
    return datetime.datetime.now(tz=datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@kopf.on.login()
def login(**kwargs: Any) -> kopf.ConnectionInfo | None:
    """kopf's watches use the same credentials as the operator's client."""
    if SETTINGS.kubeconfig:  # ``--kubeconfig``: read at call time (the client library read KUBECONFIG at import)
        return kopf.login_with_kubeconfig(**kwargs)
    return kopf.login_via_client(**kwargs)


@kopf.on.startup()
async def configure(settings: kopf.OperatorSettings, memo: kopf.Memo, **_: Any) -> None:
    """Operator-wide settings and the clients, built once."""
    settings.persistence.finalizer = "llmops.dev/finalizer"
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix="llmops.dev")
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(prefix="llmops.dev", key="last-handled-configuration")
    settings.posting.level = logging.WARNING  # our own Events are posted explicitly
    settings.watching.server_timeout = 300
    settings.watching.client_timeout = 330
    settings.networking.request_timeout = 60
    if "kube" not in memo:
        memo.kube = await asyncio.to_thread(DynamicKube.from_environment, SETTINGS.kubeconfig)
    memo.locks = defaultdict(threading.Lock)
    memo.autoscalers = frozenset([
        kind for api_version, kind in (("autoscaling/v2", "HorizontalPodAutoscaler"), ("keda.sh/v1alpha1", "ScaledObject"))
        if await asyncio.to_thread(memo.kube.serves, api_version, kind)
    ])
    # A task of kopf's own loop, so passes it starts can post Events through kopf like any handler.
    memo.resync = asyncio.create_task(_resync_loop(memo), name="llm-operator-resync")


def reconcile(kube: Kube, memo: kopf.Memo, namespace: str, name: str) -> None:
    """One level-based pass over one LLMDeployment (re-read, observe, plan, execute)."""
    with memo.locks[(namespace, name)]:
        body = kube.get(f"{GROUP}/{VERSION}", "LLMDeployment", namespace, name)
        if body is None or body["metadata"].get("deletionTimestamp"):
            return
        now = _now()
        plan = plan_llmdeployment(body, observe(kube, body, memo.autoscalers), now, autoscaler_kinds=memo.autoscalers)

        def post(event: Event) -> None:
            kopf.event(body, type=event.type, reason=event.reason, message=event.message[:1024])

        def own(obj: dict[str, Any]) -> None:
            kopf.append_owner_reference(obj, owner=kopf.Body(body))

        execute(kube, body, plan, now=now, post_event=post, owner=own)


def _guarded(memo: kopf.Memo, namespace: str, name: str, logger: logging.Logger) -> None:
    try:
        reconcile(memo.kube, memo, namespace, name)
    except KubeError as error:  # the next event or resync retries; status already says what failed
        logger.warning("reconcile of %s/%s failed: %s", namespace, name, error)


@kopf.on.event(GROUP, VERSION, "llmdeployments")
def llmdeployment_event(type: str | None, body: kopf.Body, memo: kopf.Memo, logger: logging.Logger, **_: Any) -> None:
    if type == "DELETED":
        return
    _guarded(memo, body.metadata.namespace, body.metadata.name, logger)


async def _resync_loop(memo: kopf.Memo) -> None:
    """Reconcile every LLMDeployment each ``resync_seconds`` (the level-based safety net)."""
    while True:
        await asyncio.sleep(SETTINGS.resync_seconds)
        try:
            bodies = await asyncio.to_thread(memo.kube.list, f"{GROUP}/{VERSION}", "LLMDeployment", None, "")
        except KubeError as error:
            log.warning("resync: cannot list LLMDeployments: %s", error)
            continue
        for body in bodies:
            await asyncio.to_thread(_guarded, memo, body["metadata"]["namespace"], body["metadata"]["name"], log)


@kopf.on.cleanup()
async def stop_resync(memo: kopf.Memo, **_: Any) -> None:
    memo.resync.cancel()


@kopf.on.event("apps", "v1", "deployments", labels={c.LABEL_MANAGED_BY: c.MANAGER})
def revision_deployment_event(body: kopf.Body, memo: kopf.Memo, logger: logging.Logger, **_: Any) -> None:
    for ref in body.metadata.get("ownerReferences", []):
        if ref.get("controller") and ref.get("kind") == "LLMDeployment" and ref.get("apiVersion", "").startswith(GROUP + "/"):
            _guarded(memo, body.metadata.namespace, ref["name"], logger)
