"""kopf handlers: thin wiring from watch events to the reconcilers. Nothing here decides.

Every LLMDeployment is reconciled level-based: on each watch event of the object itself, on each event
of a Deployment it owns (so readiness shows in status promptly), and by a periodic resync of all of them
(one LIST per interval). All three only add the object's key to the work queue (:class:`~._workqueue.WorkQueue`,
client-go's semantics); ``workers`` passes (``--workers``) run at once, one per object at a time, FIFO so no
object starves the others, each re-reading the object first, so a pass never acts on a stale spec. A pass that
wants another (a rollout step, a retry after back-off) adds its key back after the delay.

The operator writes nothing onto the objects it watches but their status: event handlers keep no progress
annotations, and there are no per-object timers or daemons, which in kopf would each add a finalizer.
Deleting an LLMDeployment is therefore plain garbage collection of its owned children.
"""

from __future__ import annotations

import asyncio
import base64
import concurrent.futures
import contextlib
import functools
import hashlib
import logging
import socket
import threading
import time
from collections import defaultdict
from collections.abc import Mapping
from typing import Any, cast

import kopf

from . import _contract as c
from . import _registry as reg
from ._api import GROUP, VERSION, LLMDeploymentSpec, MlflowModelRef
from ._backoff import Backoff
from ._events import EventRecorder
from ._kube import DynamicKube, Kube, KubeError
from ._metrics import MetricsError, MetricsProvider, PrometheusProvider
from ._mlflow import MlflowRegistry
from ._progressive import target_versions
from ._reconcile import Deps, run_pass
from ._settings import Settings
from ._telemetry import Telemetry
from ._vocabulary import utc_now
from ._workqueue import WorkQueue

SETTINGS = Settings.from_env()
INSTANCE = socket.gethostname()
log = logging.getLogger(__name__)


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
    # The Deployment watch filtered by the API server (kopf >= 1.45 sends it as labelSelector on the LIST and the
    # WATCH; a handler's labels= filter is applied client-side, after every Deployment of the cluster arrived).
    settings.watching.label_selectors["apps", "v1", "deployments"] = f"{c.LABEL_MANAGED_BY}={c.MANAGER}"
    settings.watching.client_timeout = 330
    settings.networking.request_timeout = 60
    # Serving named namespaces: no cluster-wide LIST of namespaces (for patterns) or CRDs (for resources added
    # later); kopf serves exactly these namespaces and the resources discovery shows at start-up (the install
    # applies the CRDs first), so the namespaced install needs no cluster-wide grant at all.
    settings.scanning.disabled = bool(SETTINGS.namespaces)
    if "kube" not in memo:
        memo.kube = await asyncio.to_thread(DynamicKube.from_environment, SETTINGS.kubeconfig)
    memo.events = EventRecorder(memo.kube, INSTANCE)
    # Failed passes retry after 1 s doubling to 5 min per object (controller-runtime's item back-off), +-20% jitter.
    memo.backoff, memo.retry_at, memo.errors_seen, memo.generations = Backoff(base=1.0, cap=300.0), {}, {}, {}
    memo.loop_backoff, memo.loop_errors = Backoff(base=1.0, cap=300.0), {}  # apart: no object key can collide
    memo.locks = defaultdict(threading.Lock)
    memo.providers, memo.providers_lock = {}, threading.Lock()
    memo.loop = asyncio.get_running_loop()
    memo.registries, memo.registry_lock = {}, threading.Lock()
    memo.registry_cache = reg.RegistryCache(SETTINGS.registry_poll_seconds)
    memo.followers, memo.registry_seen = {}, {}
    if "telemetry" not in memo:
        memo.telemetry = Telemetry()
        if SETTINGS.metrics_port:
            memo.telemetry.serve(SETTINGS.metrics_port)
    memo.autoscalers = frozenset([
        kind for api_version, kind in (("autoscaling/v2", "HorizontalPodAutoscaler"), ("keda.sh/v1alpha1", "ScaledObject"))
        if await asyncio.to_thread(memo.kube.serves, api_version, kind)
    ])
    # kopf hands each object a shallow copy of this memo: what is set here is shared by every object's passes.
    memo.deps = None
    _deps(memo.kube, memo)
    _start_workers(memo, SETTINGS.workers)
    memo.telemetry.watch_queue(memo.queue)
    memo.resync = asyncio.create_task(_resync_loop(memo), name="llm-operator-resync")
    memo.registry_poll = asyncio.create_task(_registry_loop(memo), name="llm-operator-registry")


def _provider(memo: kopf.Memo, url: str | None) -> MetricsProvider:
    """One provider per Prometheus address, built on first use and kept."""
    url = url or SETTINGS.prometheus_url
    if not url:
        raise MetricsError("no Prometheus address: set analysis.prometheusAddress or LLMOPS_PROMETHEUS_URL")
    with memo.providers_lock:
        if url not in memo.providers:
            memo.providers[url] = PrometheusProvider(url)
        return memo.providers[url]


def _registry_for(kube: Kube, memo: kopf.Memo, namespace: str, ref: MlflowModelRef) -> tuple[Any, reg.ModelRegistry]:
    """The registry client for ``ref``: from its Secret (``MLFLOW_TRACKING_URI``, ``MLFLOW_TRACKING_TOKEN``) or
    the operator's settings; one client per tracking URI and token, built on first use and kept.

    Raises:
        RegistryError: no tracking URI, or the Secret is missing or incomplete.
    """
    token = None
    if ref.secret_ref is not None:
        secret = kube.get("v1", "Secret", namespace, ref.secret_ref.name)
        if secret is None:
            raise reg.RegistryError(f"Secret {namespace}/{ref.secret_ref.name} (spec.model.mlflow.secretRef) not found")
        data = {}
        for k, v in (secret.get("data") or {}).items():
            if k not in ("MLFLOW_TRACKING_URI", "MLFLOW_TRACKING_TOKEN"):
                continue  # other keys are not the operator's business
            try:
                data[k] = base64.b64decode(v).decode()
            except (ValueError, UnicodeDecodeError):
                raise reg.RegistryError(f"Secret {namespace}/{ref.secret_ref.name} key {k} (spec.model.mlflow.secretRef) "
                                        "is not UTF-8 text") from None
        data.update(secret.get("stringData") or {})
        uri, token = data.get("MLFLOW_TRACKING_URI"), data.get("MLFLOW_TRACKING_TOKEN") or None
        if not uri:
            raise reg.RegistryError(f"Secret {namespace}/{ref.secret_ref.name} has no MLFLOW_TRACKING_URI")
    else:
        uri = SETTINGS.mlflow_tracking_uri
        if not uri:
            raise reg.RegistryError("no MLflow tracking URI: set spec.model.mlflow.secretRef or MLFLOW_TRACKING_URI on the operator")
    tenant = ref.secret_ref is not None
    key = (uri, hashlib.sha256(token.encode()).hexdigest()[:16] if token else None, tenant)
    with memo.registry_lock:
        if key not in memo.registries:
            # A tenant's Secret names the URI: that client carries the tenant's token (or none), never the operator's.
            memo.registries[key] = MlflowRegistry(uri, token, own_credentials=tenant)
        return key, memo.registries[key]


def _resolve(kube: Kube, memo: kopf.Memo, body: Mapping[str, Any], spec: LLMDeploymentSpec,
             rollouts: list[dict[str, Any]]) -> tuple[reg.Resolution | None, Any]:
    """Ask the registry about an LLMDeployment's MLflow model (None when it names a URI) and return the
    resolution with a function that writes rollout outcomes back."""
    ref = spec.model.mlflow
    meta = body["metadata"]
    if ref is None:
        memo.followers.pop((meta["namespace"], meta["name"]), None)
        return None, None
    try:
        key, registry = _registry_for(kube, memo, meta["namespace"], ref)
    except reg.RegistryError as error:
        memo.telemetry.registry_errors.labels(ref.name, error.reason).inc()
        return reg.Resolution(problem=(error.reason, str(error)), retry_in=SETTINGS.registry_poll_seconds), None
    resolution = reg.resolve(memo.registry_cache, key, registry, ref, target_versions(rollouts))
    if resolution.problem is None:
        memo.telemetry.registry_sync.labels(ref.name).set(time.time())
    else:
        memo.telemetry.registry_errors.labels(ref.name, resolution.problem[0]).inc()
    if ref.alias or ref.stage:
        memo.followers[(meta["namespace"], meta["name"])] = (key, registry, ref.name)

    def record(outcome: reg.Outcome) -> None:
        try:
            reg.record(registry, outcome)
        finally:
            memo.registry_cache.forget(key, outcome.name)
    return resolution, record


def reconcile(kube: Kube, memo: kopf.Memo, namespace: str, name: str) -> float | None:
    """One pass over one LLMDeployment (:func:`~._reconcile.run_pass`), one at a time per object. Returns when the
    plan wants the next pass (seconds), or None."""
    with memo.locks[(namespace, name)]:
        result = run_pass(_deps(kube, memo), namespace, name)
        if result.plan is None:  # gone or being deleted
            memo.followers.pop((namespace, name), None)
        return result.requeue_after


def _deps(kube: Kube, memo: kopf.Memo) -> Deps:
    """The pass's dependencies over the clients built at start-up (:func:`configure` builds them once, on the memo
    every object's copy shares; built here on first use when a test gives a memo of its own)."""
    if memo.get("deps") is None or memo.deps.kube is not kube:
        memo.deps = Deps(
            kube=kube, resolve=functools.partial(_resolve, kube, memo), provider=functools.partial(_provider, memo),
            post=lambda about, event, now: memo.events.post(about, event, now),  # a repeat counts on the Event it repeats
            owner=lambda body, obj: kopf.append_owner_reference(obj, owner=kopf.Body(cast(kopf.RawBody, body))),
            clock=utc_now, telemetry=memo.telemetry, autoscaler_kinds=memo.autoscalers)
    return memo.deps


def _start_workers(memo: kopf.Memo, workers: int) -> None:
    """The work queue and ``workers`` tasks taking keys from it, each pass in a thread of a pool of that size (the
    Kubernetes client is synchronous). Called once, on kopf's loop."""
    loop, wake = asyncio.get_running_loop(), asyncio.Event()
    memo.wake, memo.urgent = wake, set()
    def on_ready() -> None:
        with contextlib.suppress(RuntimeError):  # the loop closed under a pass finishing at shutdown
            loop.call_soon_threadsafe(wake.set)
    memo.queue = WorkQueue(on_ready=on_ready)
    memo.executor = concurrent.futures.ThreadPoolExecutor(max_workers=workers, thread_name_prefix="llm-operator-pass")
    memo.workers = [asyncio.create_task(_worker(memo), name=f"llm-operator-worker-{i}") for i in range(workers)]


async def _worker(memo: kopf.Memo) -> None:
    """Take a key, run its pass, mark it done; wait for a key (or the next delayed one) when none is ready."""
    queue, wake, loop = memo.queue, memo.wake, asyncio.get_running_loop()
    while True:
        wake.clear()  # before taking: an add after this sets it again, so no wake-up is lost
        taken = queue.take()
        if taken is None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(wake.wait(), queue.next_due())
            continue
        if len(queue):
            wake.set()  # more ready keys: another waiting worker takes the next
        key = cast(tuple[str, str], taken.key)
        urgent = key in memo.urgent
        memo.urgent.discard(key)
        memo.telemetry.queue_wait.observe(taken.waited)
        try:
            await loop.run_in_executor(memo.executor, functools.partial(_guarded, memo, *key, log, urgent=urgent))
        except Exception as error:  # _guarded survives a pass's errors; this is the executor itself failing
            log.error("pass of %s/%s could not run: %s", *key, error)
            _schedule(memo, *key, memo.backoff.failure(key))
        finally:
            queue.done(key)


def _enqueue(memo: kopf.Memo, namespace: str, name: str, *, urgent: bool, low: bool = False) -> None:
    """Ask for a pass of the object. Until a failed pass's retry is due, only an ``urgent`` ask (a spec edit) is
    queued; the others are served by that retry (see :func:`_guarded`). ``low``: the resync's, served after every
    other (a spec edit never waits behind a round over all objects)."""
    key = (namespace, name)
    if urgent:
        memo.urgent.add(key)
    elif memo.retry_at.get(key, 0.0) > time.monotonic():
        return
    memo.queue.add(key, low=low)


def _schedule(memo: kopf.Memo, namespace: str, name: str, delay: float) -> None:
    """Run a pass for the object after ``delay`` seconds (of several pending, the earliest wins)."""
    memo.queue.add_after((namespace, name), delay)


def _guarded(memo: kopf.Memo, namespace: str, name: str, logger: kopf.Logger, *, urgent: bool = True) -> None:
    """One pass that never takes its caller down. A failure of any kind (an API error, a Secret that is not
    UTF-8, a bug) is logged once while it repeats (with its traceback when it is not an API error), counted in
    ``llmops_reconcile_errors_total``, and retried after the object's back-off (:class:`~._backoff.Backoff`; a
    server's ``Retry-After`` is a floor). Until that retry is due, only an ``urgent`` trigger (a new generation of
    the LLMDeployment: someone edited the spec, which may fix it) starts a pass at once; the resync and the events
    of its children (a Deployment's status moving as its pods start) wait for the retry, so a failing object is
    not retried at the pace of its children's events."""
    key = (namespace, name)
    if not urgent and memo.retry_at.get(key, 0.0) > time.monotonic():
        return  # the retry is already scheduled
    try:
        requeue = reconcile(memo.kube, memo, namespace, name)
    except Exception as error:
        delay = memo.backoff.failure(key, getattr(error, "retry_after", None))
        memo.retry_at[key] = time.monotonic() + delay
        text = f"{type(error).__name__}: {error}"
        if memo.errors_seen.get(key) != text:
            memo.errors_seen[key] = text
            logger.warning("reconcile of %s/%s failed (failure %d, next try in %.1fs): %s", namespace, name,
                           memo.backoff.failures(key), delay, text, exc_info=not isinstance(error, KubeError))
        else:
            logger.debug("reconcile of %s/%s failed again (failure %d, next try in %.1fs)", namespace, name,
                         memo.backoff.failures(key), delay)
        memo.telemetry.observe_error(namespace, name)
        requeue = delay
    else:
        if memo.errors_seen.pop(key, None) is not None:
            logger.info("reconcile of %s/%s succeeded after %d failures", namespace, name, memo.backoff.failures(key))
        memo.backoff.success(key)
        memo.retry_at.pop(key, None)
    if requeue is not None:
        _schedule(memo, namespace, name, max(requeue, 0.5))


async def _survive(memo: kopf.Memo, loop: str, error: Exception) -> None:
    """A background loop's iteration failed: log it once while it repeats, count it, and back off (so a loop
    never dies and never spins)."""
    delay = memo.loop_backoff.failure(loop, getattr(error, "retry_after", None))
    text = f"{type(error).__name__}: {error}"
    if memo.loop_errors.get(loop) != text:
        memo.loop_errors[loop] = text
        log.warning("%s loop: %s (next try in %.1fs)", loop, text, delay, exc_info=not isinstance(error, KubeError))
    memo.telemetry.loop_errors.labels(loop).inc()
    await asyncio.sleep(delay)


def _recovered(memo: kopf.Memo, loop: str) -> None:
    memo.loop_backoff.success(loop)
    memo.loop_errors.pop(loop, None)


async def _forever(memo: kopf.Memo, loop: str, seconds: float, round_: Any) -> None:
    """Run ``round_(memo)`` every ``seconds``; a round that raises is survived (:func:`_survive`), never fatal."""
    while True:
        await asyncio.sleep(seconds)
        try:
            await round_(memo)
        except asyncio.CancelledError:
            raise
        except Exception as error:
            await _survive(memo, loop, error)
        else:
            _recovered(memo, loop)


async def _resync_loop(memo: kopf.Memo) -> None:
    """Reconcile every LLMDeployment each ``resync_seconds`` (the level-based safety net); an object whose last pass
    failed waits for its back-off."""
    await _forever(memo, "resync", SETTINGS.resync_seconds, _resync)


async def _resync(memo: kopf.Memo) -> None:
    """One round of :func:`_resync_loop`."""
    bodies = []
    for namespace in SETTINGS.namespaces or (None,):  # a namespaced install may not list cluster-wide
        bodies += await asyncio.to_thread(memo.kube.list, f"{GROUP}/{VERSION}", "LLMDeployment", namespace, "")
    for body in bodies:  # queued, not run here: the workers take them with everything else, in order
        _enqueue(memo, body["metadata"]["namespace"], body["metadata"]["name"], urgent=False, low=True)


async def _registry_loop(memo: kopf.Memo) -> None:
    """Each ``registry_poll_seconds``: read every registered model some LLMDeployment follows (once per model,
    however many follow it) and start a pass for its followers when its aliases or stages moved."""
    await _forever(memo, "registry", SETTINGS.registry_poll_seconds, _poll_registry)


async def _poll_registry(memo: kopf.Memo) -> None:
    """One round of :func:`_registry_loop`."""
    groups: dict[tuple[Any, str], list[tuple[str, str]]] = defaultdict(list)
    clients = {}
    for obj, (key, registry, model) in list(memo.followers.items()):
        groups[(key, model)].append(obj)
        clients[(key, model)] = registry
    for (key, model), objs in groups.items():
        try:
            info = await asyncio.to_thread(memo.registry_cache.model, key, clients[(key, model)], model)
        except Exception as error:  # one model's trouble never stops the poll of the others; its followers report it
            if memo.registry_seen.get((key, model)) != str(error):  # once per change, not per poll
                log.info("registry poll of %s: %s: %s", model, type(error).__name__, error)
            memo.registry_seen[(key, model)] = str(error)
            continue
        memo.telemetry.registry_sync.labels(model).set(time.time())
        before = memo.registry_seen.get((key, model))
        memo.registry_seen[(key, model)] = info
        if isinstance(before, reg.ModelInfo) and before != info:
            log.info("registered model %s moved (aliases %s, stages %s): reconciling %d followers",
                     model, dict(info.aliases), dict(info.stages), len(objs))
            for namespace, name in objs:
                _schedule(memo, namespace, name, 0)


@kopf.on.cleanup()
async def stop_resync(memo: kopf.Memo, **_: Any) -> None:
    memo.resync.cancel()
    memo.registry_poll.cancel()
    for worker in memo.workers:
        worker.cancel()
    # Passes already running finish (their writes are whole); queued ones are dropped. Off the loop, which the
    # finishing passes still call into (a requeue).
    await asyncio.to_thread(memo.executor.shutdown, wait=True, cancel_futures=True)


@kopf.on.event(GROUP, VERSION, "llmdeployments")
async def llmdeployment_event(type: str, body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
    """An LLMDeployment moved: a pass now if its spec changed (a new generation), else when its back-off allows."""
    key = (str(body.metadata.namespace), str(body.metadata.name))
    if type == "DELETED":  # forget it: per-object state never outlives the object
        for table in (memo.generations, memo.retry_at, memo.errors_seen):
            table.pop(key, None)
        memo.backoff.success(key)
        memo.queue.forget(key)
        return
    generation = body.metadata.get("generation")
    urgent = memo.generations.get(key) != generation  # a spec edit, or the first sight of it
    memo.generations[key] = generation
    _enqueue(memo, *key, urgent=urgent)


@kopf.on.event(GROUP, VERSION, "llmrollouts")
async def llmrollout_event(body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
    """An LLMRollout's spec or status moved: its LLMDeployment's pass carries the rollout forward."""
    deployment = body.spec.get("deploymentName")
    if deployment:
        _enqueue(memo, str(body.metadata.namespace), deployment, urgent=False)


@kopf.on.event("apps", "v1", "deployments", labels={c.LABEL_MANAGED_BY: c.MANAGER})
async def revision_deployment_event(body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
    """A revision Deployment moved (its pods becoming ready): its LLMDeployment's pass reports it."""
    for ref in body.metadata.get("ownerReferences", []):
        if ref.get("controller") and ref.get("kind") == "LLMDeployment" and ref.get("apiVersion", "").startswith(GROUP + "/"):
            _enqueue(memo, str(body.metadata.namespace), ref["name"], urgent=False)
