"""kopf handlers: thin wiring from watch events to the reconcilers. Nothing here decides.

Every LLMDeployment is reconciled level-based: on each watch event of the object itself (kopf's), on each event
of a Deployment it owns (so readiness shows in status promptly) or of an LLMRollout naming it (the informers',
:class:`~._kube.Informers`, whose copies the passes read: a pass an event starts sees at least that event), and
by a periodic resync of all of them (one LIST per interval). All only add the object's key to the work queue (:class:`~._workqueue.WorkQueue`,
client-go's semantics); ``workers`` passes (``--workers``) run at once, one per object at a time, FIFO so no
object starves the others, each re-reading the object first, so a pass never acts on a stale spec. A pass that
wants another (a rollout step, a retry after back-off) adds its key back after the delay.

The operator's running state is one :class:`Controller` (the clients built once at start-up, per-object
bookkeeping, the queue and its workers), the one attribute kopf's memo carries; the kopf handlers below only
translate kopf's events into its calls.

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
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, cast

import kopf

from . import _contract as c
from . import _registry as reg
from . import _resolver as rz
from ._api import GROUP, VERSION, LLMDeploymentSpec, MlflowModelRef
from ._backoff import Backoff
from ._cache import KINDS, LABELLED, ApiReader, Cache, CachedReader, WriteThroughKube, index_key
from ._events import EventRecorder
from ._kube import CountingKube, DynamicKube, Informers, Kube, KubeError
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

Key = tuple[str, str]  # (namespace, name) of an LLMDeployment


class Controller:
    """The operator's running state, built once at start-up: the clients, the per-object bookkeeping, the work
    queue and its workers, the resync and registry loops.

    Args:
        kube: the Kubernetes boundary every pass reads and writes through.
        telemetry: the operator's own metrics.
        settings: the process's settings (intervals, addresses, namespaces, workers).
        autoscalers: the autoscaler kinds the cluster serves (``ScaledObject`` needs KEDA).
        backoff: a failed pass's retry delay per object (1 s doubling to 5 min, +-20% jitter: controller-runtime's
            item back-off); ``loop_backoff`` the same for the background loops.
        cache: the watch-fed copies passes read the children from (:class:`~._cache.Cache` over
            :class:`~._kube.Informers`); None: every read is a request.
        synced: whether those copies have their first LIST; the workers take no key before (client-go's
            ``WaitForCacheSync``: a change made between a pass's read by request and the copies' LIST would start
            no pass), or before ``sync_timeout`` seconds, after which passes read what is not synced by requests.
    """

    def __init__(self, kube: Kube, telemetry: Telemetry, *, settings: Settings = SETTINGS,
                 autoscalers: frozenset[str] = frozenset({"HorizontalPodAutoscaler"}), backoff: Backoff | None = None,
                 loop_backoff: Backoff | None = None, instance: str = INSTANCE, cache: Cache | None = None,
                 synced: Callable[[], bool] = lambda: True, sync_timeout: float = 60.0):
        self.cache = cache or Cache(_NoCopies(), ())
        self.synced, self.sync_timeout = synced, sync_timeout
        kube = WriteThroughKube(kube, self.cache)
        self.kube, self.telemetry, self.settings = kube, telemetry, settings
        self.events = EventRecorder(kube, instance)
        self.backoff = backoff or Backoff(base=1.0, cap=300.0)
        self.loop_backoff = loop_backoff or Backoff(base=1.0, cap=300.0)  # apart: no object key can collide
        self.retry_at: dict[Key, float] = {}  # monotonic time a failed pass's retry is due
        self.errors_seen: dict[Key, str] = {}  # the last failure logged, so a repeat is logged once
        self.generations: dict[Key, Any] = {}  # the last generation seen, to tell a spec edit from a status move
        self.loop_errors: dict[str, str] = {}
        self._locks: defaultdict[Key, threading.Lock] = defaultdict(threading.Lock)
        self._providers: dict[str, MetricsProvider] = {}
        self._registries: dict[Any, reg.ModelRegistry] = {}
        self._clients_lock = threading.Lock()
        self.registry_cache = rz.RegistryCache(settings.registry_poll_seconds)
        #: who follows which registered models (the model's, its adapters')
        self.followers: dict[Key, tuple[tuple[Any, reg.ModelRegistry, str], ...]] = {}
        self.registry_seen: dict[tuple[Any, str], Any] = {}
        self.deps = Deps(
            kube=kube, resolve=self._resolve, provider=self._provider,
            post=lambda about, event, now: self.events.post(about, event, now),  # a repeat counts on the Event it repeats
            owner=lambda body, obj: kopf.append_owner_reference(obj, owner=kopf.Body(cast(kopf.RawBody, body))),
            clock=utc_now, telemetry=telemetry, autoscaler_kinds=autoscalers,
            reader=CachedReader(self.cache, ApiReader(kube)))
        self.urgent: set[Key] = set()  # keys queued by a spec edit: run even while a retry is pending
        self._loop: asyncio.AbstractEventLoop | None = None
        self._wake = asyncio.Event()
        self.queue = WorkQueue(on_ready=self._on_ready)
        self._executor: concurrent.futures.ThreadPoolExecutor | None = None
        self._tasks: list[asyncio.Task[None]] = []

    # ------------------------------------------------------------------------------- start and stop

    def start(self, workers: int, *, loops: bool = True) -> None:
        """The workers (``workers`` tasks taking keys, each pass in a thread of a pool of that size: the Kubernetes
        client is synchronous) and, with ``loops``, the resync and registry loops. Called once, on kopf's loop."""
        self._loop = asyncio.get_running_loop()
        self._executor = concurrent.futures.ThreadPoolExecutor(max_workers=workers, thread_name_prefix="llm-operator-pass")
        self._tasks = [asyncio.create_task(self._worker(), name=f"llm-operator-worker-{i}") for i in range(workers)]
        if loops:
            self._tasks += [
                asyncio.create_task(self._forever("resync", self.settings.resync_seconds, self._resync), name="llm-operator-resync"),
                asyncio.create_task(self._forever("registry", self.settings.registry_poll_seconds, self._poll_registry),
                                    name="llm-operator-registry"),
            ]

    async def stop(self) -> None:
        """Cancel the workers and loops. Passes already running finish (their writes are whole); queued ones are
        dropped. The pool is shut down off the loop, which the finishing passes still call into (a requeue)."""
        for task in self._tasks:
            task.cancel()
        if self._executor is not None:
            await asyncio.to_thread(self._executor.shutdown, wait=True, cancel_futures=True)

    def _on_ready(self) -> None:
        if self._loop is not None:
            with contextlib.suppress(RuntimeError):  # the loop closed under a pass finishing at shutdown
                self._loop.call_soon_threadsafe(self._wake.set)

    # ------------------------------------------------------------------------------- the queue

    def enqueue(self, namespace: str, name: str, *, urgent: bool, low: bool = False) -> None:
        """Ask for a pass of the object. Until a failed pass's retry is due, only an ``urgent`` ask (a spec edit)
        is queued; the others are served by that retry (see :meth:`guarded`). ``low``: the resync's, served after
        every other (a spec edit never waits behind a round over all objects)."""
        key = (namespace, name)
        if urgent:
            self.urgent.add(key)
        elif self.retry_at.get(key, 0.0) > time.monotonic():
            return
        self.queue.add(key, low=low)

    def schedule(self, namespace: str, name: str, delay: float) -> None:
        """Run a pass for the object after ``delay`` seconds (of several pending, the earliest wins)."""
        self.queue.add_after((namespace, name), delay)

    def seen(self, namespace: str, name: str, generation: Any) -> bool:
        """Note the object's generation; True when it is new (a spec edit, or the first sight of the object)."""
        key = (namespace, name)
        edited = self.generations.get(key) != generation
        self.generations[key] = generation
        return edited

    def forget(self, namespace: str, name: str) -> None:
        """The object is gone: per-object state never outlives it."""
        key = (namespace, name)
        self.generations.pop(key, None)
        self.retry_at.pop(key, None)
        self.errors_seen.pop(key, None)
        self.followers.pop(key, None)
        self.backoff.success(key)
        self.queue.forget(key)

    async def _worker(self) -> None:
        """Take a key, run its pass, mark it done; wait for a key (or the next delayed one) when none is ready."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.sync_timeout
        while not self.synced() and loop.time() < deadline:
            await asyncio.sleep(0.1)  # polling the informers' flags: they are threading.Events, not awaitable
        while True:
            self._wake.clear()  # before taking: an add after this sets it again, so no wake-up is lost
            taken = self.queue.take()
            if taken is None:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), self.queue.next_due())
                continue
            if len(self.queue):
                self._wake.set()  # more ready keys: another waiting worker takes the next
            key = cast(Key, taken.key)
            urgent = key in self.urgent
            self.urgent.discard(key)
            self.telemetry.queue_wait.observe(taken.waited)
            try:
                await loop.run_in_executor(self._executor, functools.partial(self.guarded, *key, log, urgent=urgent))
            except Exception as error:  # guarded survives a pass's errors; this is the executor itself failing
                log.error("pass of %s/%s could not run: %s", *key, error)
                self.schedule(*key, self.backoff.failure(key))
            finally:
                self.queue.done(key)

    # ------------------------------------------------------------------------------- one pass

    def reconcile(self, namespace: str, name: str) -> float | None:
        """One pass over one LLMDeployment (:func:`~._reconcile.run_pass`), one at a time per object. Returns when
        the plan wants the next pass (seconds), or None."""
        with self._locks[(namespace, name)]:
            result = run_pass(self.deps, namespace, name)
            if result.plan is None:  # gone or being deleted
                self.followers.pop((namespace, name), None)
                if self.deps.telemetry is not None:
                    self.deps.telemetry.forget(namespace, name)
            return result.requeue_after

    def guarded(self, namespace: str, name: str, logger: kopf.Logger | logging.Logger, *, urgent: bool = True) -> None:
        """One pass that never takes its caller down. A failure of any kind (an API error, a Secret that is not
        UTF-8, a bug) is logged once while it repeats (with its traceback when it is not an API error), counted in
        ``llmops_reconcile_errors_total``, and retried after the object's back-off (:class:`~._backoff.Backoff`; a
        server's ``Retry-After`` is a floor). Until that retry is due, only an ``urgent`` trigger (a new generation
        of the LLMDeployment: someone edited the spec, which may fix it) starts a pass at once; the resync and the
        events of its children (a Deployment's status moving as its pods start) wait for the retry, so a failing
        object is not retried at the pace of its children's events."""
        key = (namespace, name)
        if not urgent and self.retry_at.get(key, 0.0) > time.monotonic():
            return  # the retry is already scheduled
        try:
            requeue = self.reconcile(namespace, name)
        except Exception as error:
            delay = self.backoff.failure(key, getattr(error, "retry_after", None))
            self.retry_at[key] = time.monotonic() + delay
            text = f"{type(error).__name__}: {error}"
            if self.errors_seen.get(key) != text:
                self.errors_seen[key] = text
                logger.warning("reconcile of %s/%s failed (failure %d, next try in %.1fs): %s", namespace, name,
                               self.backoff.failures(key), delay, text, exc_info=not isinstance(error, KubeError))
            else:
                logger.debug("reconcile of %s/%s failed again (failure %d, next try in %.1fs)", namespace, name,
                             self.backoff.failures(key), delay)
            self.telemetry.observe_error(namespace, name)
            requeue = delay
        else:
            if self.errors_seen.pop(key, None) is not None:
                logger.info("reconcile of %s/%s succeeded after %d failures", namespace, name, self.backoff.failures(key))
            self.backoff.success(key)
            self.retry_at.pop(key, None)
        if requeue is not None:
            self.schedule(namespace, name, max(requeue, 0.5))

    # ------------------------------------------------------------------------------- the pass's clients

    def _provider(self, url: str | None) -> MetricsProvider:
        """One provider per Prometheus address, built on first use and kept."""
        url = url or self.settings.prometheus_url
        if not url:
            raise MetricsError("no Prometheus address: set analysis.prometheusAddress or LLMOPS_PROMETHEUS_URL")
        with self._clients_lock:
            if url not in self._providers:
                self._providers[url] = PrometheusProvider(url)
            return self._providers[url]

    def _registry_for(self, namespace: str, ref: MlflowModelRef) -> tuple[Any, reg.ModelRegistry]:
        """The registry client for ``ref``: from its Secret (``MLFLOW_TRACKING_URI``, ``MLFLOW_TRACKING_TOKEN``) or
        the operator's settings; one client per tracking URI and token, built on first use and kept.

        Raises:
            RegistryError: no tracking URI, or the Secret is missing or incomplete.
        """
        token = None
        if ref.secret_ref is not None:
            secret = self.kube.get("v1", "Secret", namespace, ref.secret_ref.name)
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
            uri = self.settings.mlflow_tracking_uri
            if not uri:
                raise reg.RegistryError("no MLflow tracking URI: set spec.model.mlflow.secretRef or MLFLOW_TRACKING_URI on the operator")
        tenant = ref.secret_ref is not None
        key = (uri, hashlib.sha256(token.encode()).hexdigest()[:16] if token else None, tenant)
        with self._clients_lock:
            if key not in self._registries:
                # A tenant's Secret names the URI: that client carries the tenant's token (or none), never the operator's.
                self._registries[key] = MlflowRegistry(uri, token, own_credentials=tenant)
            return key, self._registries[key]

    def _resolve(self, body: Mapping[str, Any], spec: LLMDeploymentSpec,
                 rollouts: list[dict[str, Any]]) -> tuple[reg.Resolution | None, Any]:
        """Ask the registry about an LLMDeployment's MLflow model and the LoRA adapters that follow an alias or stage
        (None when it names neither) and return the resolution with a function that writes rollout outcomes back.
        The adapters are asked of the model's registry (its secretRef's), or the operator's."""
        ref = spec.model.mlflow
        meta = body["metadata"]
        followed = {a.name: a.mlflow for a in spec.adapters if a.mlflow is not None and a.mlflow.version is None}
        in_registry = [a.mlflow for a in spec.adapters if a.mlflow is not None]  # followed or pinned: outcomes are written back
        if ref is None and not in_registry:
            self.followers.pop((meta["namespace"], meta["name"]), None)
            return None, None
        adapter_secret = next((r.secret_ref for r in in_registry if r.secret_ref is not None), None)
        client_ref = ref or MlflowModelRef(name=in_registry[0].name, version="1", secret_ref=adapter_secret)
        try:
            key, registry = self._registry_for(meta["namespace"], client_ref)
        except reg.RegistryError as error:
            self.telemetry.registry_errors.labels(client_ref.name, error.reason).inc()
            return reg.Resolution(problem=(error.reason, str(error)), retry_in=self.settings.registry_poll_seconds), None
        resolution = rz.resolve_spec(self.registry_cache, key, registry, spec, target_versions(rollouts))
        for name in ([ref.name] if ref else []) + [r.name for r in followed.values()]:
            if resolution.problem is None:
                self.telemetry.registry_sync.labels(name).set(time.time())
        if resolution.problem is not None:
            self.telemetry.registry_errors.labels(client_ref.name, resolution.problem[0]).inc()
        models = ([ref.name] if ref is not None and (ref.alias or ref.stage) else []) + sorted(
            {r.name for r in followed.values()})
        if models:
            self.followers[(meta["namespace"], meta["name"])] = tuple((key, registry, m) for m in models)
        else:
            self.followers.pop((meta["namespace"], meta["name"]), None)

        def record(outcome: reg.Outcome) -> None:
            try:
                rz.record(registry, outcome)
            finally:
                for model in (outcome.name, *(name for name, _ in outcome.adapters)):
                    if model is not None:
                        self.registry_cache.forget(key, model)
        return resolution, record

    # ------------------------------------------------------------------------------- background loops

    async def survive(self, loop: str, error: Exception) -> None:
        """A background loop's iteration failed: log it once while it repeats, count it, and back off (so a loop
        never dies and never spins)."""
        delay = self.loop_backoff.failure(loop, getattr(error, "retry_after", None))
        text = f"{type(error).__name__}: {error}"
        if self.loop_errors.get(loop) != text:
            self.loop_errors[loop] = text
            log.warning("%s loop: %s (next try in %.1fs)", loop, text, delay, exc_info=not isinstance(error, KubeError))
        self.telemetry.loop_errors.labels(loop).inc()
        await asyncio.sleep(delay)

    def recovered(self, loop: str) -> None:
        self.loop_backoff.success(loop)
        self.loop_errors.pop(loop, None)

    async def _forever(self, loop: str, seconds: float, round_: Callable[[], Awaitable[None]]) -> None:
        """Run ``round_()`` every ``seconds``; a round that raises is survived (:meth:`survive`), never fatal."""
        while True:
            await asyncio.sleep(seconds)
            try:
                await round_()
            except asyncio.CancelledError:
                raise
            except Exception as error:
                await self.survive(loop, error)
            else:
                self.recovered(loop)

    async def _resync(self) -> None:
        """Every ``resync_seconds``: queue every LLMDeployment (the level-based safety net), at low priority; an
        object whose last pass failed waits for its back-off."""
        bodies = []
        for namespace in self.settings.namespaces or (None,):  # a namespaced install may not list cluster-wide
            bodies += await asyncio.to_thread(self.kube.list, f"{GROUP}/{VERSION}", "LLMDeployment", namespace, "")
        for body in bodies:  # queued, not run here: the workers take them with everything else, in order
            self.enqueue(body["metadata"]["namespace"], body["metadata"]["name"], urgent=False, low=True)

    async def _poll_registry(self) -> None:
        """Every ``registry_poll_seconds``: read every registered model some LLMDeployment follows (once per model,
        however many follow it) and start a pass for its followers when its aliases or stages moved."""
        groups: dict[tuple[Any, str], list[Key]] = defaultdict(list)
        clients = {}
        for obj, followed in list(self.followers.items()):
            for key, registry, model in followed:
                groups[(key, model)].append(obj)
                clients[(key, model)] = registry
        for (key, model), objs in groups.items():
            try:
                info = await asyncio.to_thread(self.registry_cache.model, key, clients[(key, model)], model)
            except Exception as error:  # one model's trouble never stops the poll of the others; its followers report it
                if self.registry_seen.get((key, model)) != str(error):  # once per change, not per poll
                    log.info("registry poll of %s: %s: %s", model, type(error).__name__, error)
                self.registry_seen[(key, model)] = str(error)
                continue
            self.telemetry.registry_sync.labels(model).set(time.time())
            before = self.registry_seen.get((key, model))
            self.registry_seen[(key, model)] = info
            if isinstance(before, reg.ModelInfo) and before != info:
                log.info("registered model %s moved (aliases %s, stages %s): reconciling %d followers",
                         model, dict(info.aliases), dict(info.stages), len(objs))
                for namespace, name in objs:
                    self.schedule(namespace, name, 0)


class _NoCopies:
    """No watch-fed copies (a Controller built without them: every read is a request)."""

    def synced(self, kind: str) -> bool:
        return False

    def get(self, kind: str, namespace: str, name: str) -> None:
        return None

    def owned(self, kind: str, namespace: str, owner: str) -> list[dict[str, Any]]:
        return []


# ----------------------------------------------------------------------------------- kopf's handlers

@kopf.on.login()
def login(**kwargs: Any) -> kopf.ConnectionInfo | None:
    """kopf's watches use the same credentials as the operator's client."""
    if SETTINGS.kubeconfig:  # ``--kubeconfig``: read at call time (the client library read KUBECONFIG at import)
        return kopf.login_with_kubeconfig(**kwargs)
    return kopf.login_via_client(**kwargs)


@kopf.on.startup()
async def configure(settings: kopf.OperatorSettings, memo: kopf.Memo, **_: Any) -> None:
    """Operator-wide settings and the :class:`Controller`, built once (kopf hands each object a shallow copy of
    the memo: the one Controller is shared by every object's handlers)."""
    settings.persistence.finalizer = "llmops.dev/finalizer"
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix="llmops.dev")
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(prefix="llmops.dev", key="last-handled-configuration")
    settings.posting.level = logging.WARNING  # our own Events are posted explicitly
    settings.watching.server_timeout = 300
    settings.watching.client_timeout = 330
    settings.networking.request_timeout = 60
    # Serving named namespaces: no cluster-wide LIST of namespaces (for patterns) or CRDs (for resources added
    # later); kopf serves exactly these namespaces and the resources discovery shows at start-up (the install
    # applies the CRDs first), so the namespaced install needs no cluster-wide grant at all.
    settings.scanning.disabled = bool(SETTINGS.namespaces)
    telemetry = Telemetry()
    dynamic_kube = await asyncio.to_thread(DynamicKube.from_environment, SETTINGS.kubeconfig)
    kube = CountingKube(dynamic_kube, telemetry.count_request)
    if SETTINGS.metrics_port:
        telemetry.serve(SETTINGS.metrics_port)
    autoscalers = frozenset([
        kind for api_version, kind in (("autoscaling/v2", "HorizontalPodAutoscaler"), ("keda.sh/v1alpha1", "ScaledObject"))
        if await asyncio.to_thread(kube.serves, api_version, kind)
    ])
    # The children and the LLMRollouts a pass reads, kept from watches of the kinds served now (a CRD installed
    # later is read by requests until a restart), filtered by the API server on the operator's label.
    served = [(api_version, kind, plural) for api_version, kind, plural in KINDS
              if await asyncio.to_thread(kube.serves, api_version, kind)]
    loop = asyncio.get_running_loop()

    def changed(kind: str, obj: dict[str, Any]) -> None:  # on an informer's thread, its copy already updated
        deployment = llmdeployment_of(kind, obj)
        if deployment:
            namespace = str((obj.get("metadata") or {}).get("namespace"))
            with contextlib.suppress(RuntimeError):  # kopf's loop closed under an informer still running at shutdown
                loop.call_soon_threadsafe(functools.partial(memo.controller.enqueue, namespace, deployment, urgent=False))

    informers = Informers(dynamic_kube.api_client, served, namespaces=SETTINGS.namespaces,
                          label_selector=lambda kind: f"{c.LABEL_MANAGED_BY}={c.MANAGER}" if kind in LABELLED else None,
                          owner=lambda kind, obj: (index_key(kind, obj) or (None, None))[1], on_change=changed)
    memo.informers = informers
    memo.controller = Controller(kube, telemetry, settings=SETTINGS, autoscalers=autoscalers,
                                 cache=Cache(informers, [kind for _, kind, _ in served]), synced=informers.all_synced)
    memo.controller.start(SETTINGS.workers)
    informers.start()
    telemetry.watch_queue(memo.controller.queue)


@kopf.on.cleanup()
async def stop(memo: kopf.Memo, **_: Any) -> None:
    memo.informers.stop()
    await memo.controller.stop()


@kopf.on.event(GROUP, VERSION, "llmdeployments")
async def llmdeployment_event(type: str, body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
    """An LLMDeployment moved: a pass now if its spec changed (a new generation), else when its back-off allows."""
    namespace, name = str(body.metadata.namespace), str(body.metadata.name)
    if type == "DELETED":
        memo.controller.forget(namespace, name)
        return
    memo.controller.enqueue(namespace, name, urgent=memo.controller.seen(namespace, name, body.metadata.get("generation")))


def llmdeployment_of(kind: str, obj: Mapping[str, Any]) -> str | None:
    """The LLMDeployment whose pass a change of ``obj`` concerns: an LLMRollout's ``spec.deploymentName`` (its spec or
    status moved: the pass carries the rollout forward), a revision Deployment's controlling owner (its pods becoming
    ready: the pass reports it); None for anything else."""
    if kind == "LLMRollout":
        return (obj.get("spec") or {}).get("deploymentName") or None
    for ref in (obj.get("metadata") or {}).get("ownerReferences") or []:
        if ref.get("controller") and ref.get("kind") == "LLMDeployment" and str(ref.get("apiVersion", "")).startswith(GROUP + "/"):
            return str(ref["name"])
    return None
