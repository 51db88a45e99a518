"""The model registry as one pass asks it: through a polling cache (:class:`RegistryCache`), which version an
LLMDeployment's reference names and what its rollouts' targets are (:func:`resolve`), and the write-back of a
finished rollout's outcome (:func:`record`). I/O through the :class:`~llm_operator._registry.ModelRegistry` it is
handed (MLflow's in the operator, a fake in the unit tests); the decisions themselves are :mod:`llm_operator._registry`'s.

Reads per registered model and poll interval: one ``get_registered_model`` (its aliases and the latest
version per stage answer every alias and stage reference to it, however many LLMDeployments name it), plus
``get_model_version`` and ``get_run`` once per version the operator has not seen yet.

Failures never start anything: a registry that cannot be read leaves the stable revision serving and is
reported as ``ModelResolved=False`` with reason ``RegistryUnavailable`` (5xx, timeout, refused connection)
or ``ModelNotFound`` (no such model, alias, stage or version). The cache backs off after a failure (5 s,
doubling to 5 min), so a down registry is asked at most once per back-off step per model.
"""

from __future__ import annotations

import contextlib
import dataclasses
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from ._api import AdapterMlflowRef, LLMDeploymentSpec, MlflowModelRef
from ._registry import (
    ModelInfo,
    ModelNotFound,
    ModelRegistry,
    Outcome,
    RegistryError,
    Resolution,
    VersionInfo,
    resolved_model,
    select_version,
)


def record(registry: ModelRegistry, outcome: Outcome) -> None:
    """Write ``outcome``: tags first (on the LoRA adapters' versions the revision served too; a rollback's on the
    version it went away from, unless that version was deleted meanwhile), then the alias or stage (so a promoted
    version is never left untagged). Idempotent: writing it twice is harmless. Raises :class:`RegistryError`."""
    if outcome.name is not None and outcome.version is not None:
        registry.set_tags(outcome.name, outcome.version, outcome.tags)
    for adapter, version in outcome.adapters:  # the adapters' versions the rollout changed
        registry.set_tags(adapter, version, outcome.tags)
    if outcome.name is None or outcome.version is None:
        return
    if outcome.rolled_back:
        with contextlib.suppress(ModelNotFound):  # the version rolled away from was deleted: nothing left to tag
            registry.set_tags(outcome.name, *outcome.rolled_back)
    if outcome.alias:
        registry.set_alias(outcome.name, outcome.alias, outcome.version)
    if outcome.stage:
        registry.transition_stage(outcome.name, outcome.version, outcome.stage)



def resolve(cache: RegistryCache, key: Any, registry: ModelRegistry, ref: MlflowModelRef, target_versions: list[str]) -> Resolution:
    """Ask (through ``cache``) which version ``ref`` names, with its run, and the details of ``target_versions``.
    Never raises for registry faults: they come back as :attr:`Resolution.problem`."""
    model, problem, versions = None, None, {}
    try:
        version = select_version(cache.model(key, registry, ref.name), ref) if ref.version is None else ref.version
        model = resolved_model(ref, cache.version(key, registry, ref.name, version))
        versions[version] = cache.version(key, registry, ref.name, version)
        for target in target_versions:
            versions[target] = cache.version(key, registry, ref.name, target)
    except RegistryError as error:
        problem = (error.reason, str(error))
    return Resolution(model=model, problem=problem, versions=versions, retry_in=cache.retry_in(key, ref.name))


def resolve_spec(cache: RegistryCache, key: Any, registry: ModelRegistry, spec: LLMDeploymentSpec,
                 target_versions: list[str]) -> Resolution:
    """:func:`resolve` for ``spec``'s MLflow model (when it names one) and :func:`resolve_adapters` for its adapters
    that follow an alias or stage, in one :class:`Resolution` (the first problem of either; the soonest retry)."""
    ref = spec.model.mlflow
    resolution = resolve(cache, key, registry, ref, target_versions) if ref is not None else Resolution()
    followed = {a.name: a.mlflow for a in spec.adapters if a.mlflow is not None and a.mlflow.version is None}
    if not followed:
        return resolution
    versions, problem = resolve_adapters(cache, key, registry, followed)
    waits = [w for w in (resolution.retry_in, *(cache.retry_in(key, r.name) for r in followed.values())) if w is not None]
    return dataclasses.replace(resolution, adapters=versions, problem=resolution.problem or problem,
                               retry_in=min(waits) if waits else None)


def resolve_adapters(cache: RegistryCache, key: Any, registry: ModelRegistry,
                     refs: Mapping[str, AdapterMlflowRef]) -> tuple[dict[str, str], tuple[str, str] | None]:
    """Ask (through ``cache``) which version each adapter reference follows names, by adapter name: (the versions
    found, the first problem as (reason, message) or None). Never raises for registry faults."""
    versions: dict[str, str] = {}
    problem = None
    for name, ref in refs.items():
        try:
            versions[name] = select_version(cache.model(key, registry, ref.name), ref)
        except RegistryError as error:
            problem = problem or (error.reason, f"adapter {name}: {error}")
    return versions, problem


# -------------------------------------------------------------------------------------- cache


@dataclass
class _Entry:
    value: Any = None
    error: RegistryError | None = None
    fetched: float = 0.0
    failures: int = 0
    retry_at: float = 0.0


class RegistryCache:
    """Per registry and model: the registered model (aliases, stages) for ``poll_seconds``, and each version's
    details for ``10 x poll_seconds`` (versions are immutable but for their tags). Thread-safe.

    After a failure the same error is returned without asking again until the back-off step has passed
    (5 s, doubling, at most 300 s); :meth:`retry_in` tells a caller when to look again.
    """

    def __init__(self, poll_seconds: float = 30.0, clock: Callable[[], float] = time.monotonic):
        self.poll_seconds = poll_seconds
        self._clock = clock
        self._entries: dict[tuple[Any, ...], _Entry] = {}
        self._lock = threading.Lock()
        self.queries = 0

    def _get(self, key: tuple[Any, ...], ttl: float, fetch: Callable[[], Any]) -> Any:
        now = self._clock()
        with self._lock:
            entry = self._entries.setdefault(key, _Entry())
            if entry.error is not None and now < entry.retry_at:
                raise entry.error
            if entry.error is None and entry.fetched and now - entry.fetched < ttl:
                return entry.value
            self.queries += 1
            try:
                entry.value, entry.error, entry.failures = fetch(), None, 0
            except RegistryError as error:
                entry.error, entry.failures = error, entry.failures + 1
                entry.retry_at = now + min(300.0, 5.0 * 2 ** (entry.failures - 1))
                raise
            entry.fetched = now
            return entry.value

    def model(self, key: Any, registry: ModelRegistry, name: str) -> ModelInfo:
        return self._get((key, "model", name), self.poll_seconds, lambda: registry.get_model(name))

    def version(self, key: Any, registry: ModelRegistry, name: str, version: str) -> VersionInfo:
        return self._get((key, "version", name, version), 10 * self.poll_seconds, lambda: registry.get_version(name, version))

    def forget(self, key: Any, name: str) -> None:
        """Drop what is cached about ``name`` (after the operator wrote to it)."""
        with self._lock:
            for k in [k for k in self._entries if k[0] == key and k[2] == name]:
                del self._entries[k]

    def retry_in(self, key: Any, name: str) -> float | None:
        """Seconds until a failed look-up of ``name`` is tried again (None when it is not failing)."""
        with self._lock:
            waits = [e.retry_at - self._clock() for k, e in self._entries.items() if k[0] == key and k[2] == name and e.error]
        return max(0.5, min(waits)) if waits else None
