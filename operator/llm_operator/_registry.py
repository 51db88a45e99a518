"""The model registry: a small Protocol (implemented over MLflow by :mod:`llm_operator._mlflow`), a polling
cache, and the pure decisions about what the registry says (which version an alias or stage names, the quality gate, what to
write back after a rollout).

Reads per registered model and poll interval: one ``get_registered_model`` (its aliases and the latest
version per stage answer every alias and stage reference to it, however many LLMDeployments name it), plus
``get_model_version`` and ``get_run`` once per version the operator has not seen yet.

Failures never start anything: a registry that cannot be read leaves the stable revision serving and is
reported as ``ModelResolved=False`` with reason ``RegistryUnavailable`` (5xx, timeout, refused connection)
or ``ModelNotFound`` (no such model, alias, stage or version). The cache backs off after a failure (5 s,
doubling to 5 min), so a down registry is asked at most once per back-off step per model.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from ._api import GateThreshold, MlflowModelRef, ResolvedModel
from ._vocabulary import Phase, Reason

#: Status tags written on a version after its rollout (``llmops.dev/rollout`` is succeeded|aborted|failed).
TAG_ROLLOUT = "llmops.dev/rollout"
TAG_PREFIX = "llmops.dev/"
#: How much of a run's metrics, params and tags lands in status (the object must stay small).
STATUS_ENTRIES = 64
STATUS_VALUE_CHARS = 256


class RegistryError(Exception):
    """The registry could not be read or written (5xx, timeout, connection refused); retried with back-off."""

    reason = Reason.REGISTRY_UNAVAILABLE


class ModelNotFound(RegistryError):
    """The registered model, alias, stage or version does not exist."""

    reason = Reason.MODEL_NOT_FOUND


@dataclass(frozen=True)
class ModelInfo:
    """A registered model: ``aliases`` maps alias -> version, ``stages`` maps stage -> its latest version."""

    name: str
    aliases: Mapping[str, str] = field(default_factory=dict)
    stages: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class VersionInfo:
    """One model version with its training run's metrics and params (empty when it has no run)."""

    name: str
    version: str
    source: str
    run_id: str | None = None
    tags: Mapping[str, str] = field(default_factory=dict)
    metrics: Mapping[str, float] = field(default_factory=dict)
    params: Mapping[str, str] = field(default_factory=dict)


class ModelRegistry(Protocol):
    """What the operator needs from a model registry. Implementations raise :class:`ModelNotFound` or
    :class:`RegistryError`, nothing else."""

    def get_model(self, name: str) -> ModelInfo: ...
    def get_version(self, name: str, version: str) -> VersionInfo: ...
    def set_alias(self, name: str, alias: str, version: str) -> None: ...
    def transition_stage(self, name: str, version: str, stage: str) -> None: ...
    def set_tags(self, name: str, version: str, tags: Mapping[str, str]) -> None: ...


# ------------------------------------------------------------------------------------ pure decisions


def select_version(model: ModelInfo, ref: MlflowModelRef) -> str:
    """The version ``ref`` names in ``model`` (its alias, its stage's latest version, or the pinned version).

    >>> select_version(ModelInfo("chat", {"champion": "4"}, {"Production": "3"}), MlflowModelRef(name="chat", alias="champion"))
    '4'

    Raises:
        ModelNotFound: the alias or stage points at no version.
    """
    if ref.version is not None:
        return ref.version
    if ref.alias is not None:
        if ref.alias not in model.aliases:
            raise ModelNotFound(f"registered model {model.name!r} has no alias {ref.alias!r}"
                                f" (aliases: {', '.join(sorted(model.aliases)) or 'none'})")
        return model.aliases[ref.alias]
    if ref.stage is None or ref.stage not in model.stages:
        raise ModelNotFound(f"registered model {model.name!r} has no version in stage {ref.stage!r}")
    return model.stages[ref.stage]


def _bounded(values: Mapping[str, Any], convert: Callable[[Any], Any]) -> dict[str, Any] | None:
    items = sorted(values.items())[:STATUS_ENTRIES]
    return {str(k)[:STATUS_VALUE_CHARS]: convert(v) for k, v in items} or None


def resolved_model(ref: MlflowModelRef, info: VersionInfo) -> ResolvedModel:
    """The status record of the version ``ref`` resolved to. The serving URI pins the version, so a pod that
    restarts after the alias moved still loads what its revision was rolled out with."""
    return ResolvedModel(
        name=info.name, source="mlflow", uri=f"models:/{info.name}/{info.version}", version=info.version,
        alias=ref.alias, stage=ref.stage, artifact_uri=info.source, run_id=info.run_id,
        metrics=_bounded(info.metrics, float), params=_bounded(info.params, lambda v: str(v)[:STATUS_VALUE_CHARS]),
        tags=_bounded(info.tags, lambda v: str(v)[:STATUS_VALUE_CHARS]),
    )


def evaluate_gate(thresholds: list[GateThreshold], metrics: Mapping[str, float]) -> tuple[bool, str]:
    """Check the run metrics against the gate: (passed, a message with every figure).

    >>> evaluate_gate([GateThreshold(metric="accuracy", min=0.86)], {"accuracy": 0.81})
    (False, 'accuracy 0.81 < min 0.86')
    >>> evaluate_gate([GateThreshold(metric="accuracy", min=0.86), GateThreshold(metric="hallucination_rate", max=0.1)],
    ...               {"accuracy": 0.9, "hallucination_rate": 0.04})
    (True, 'accuracy 0.9 >= min 0.86; hallucination_rate 0.04 <= max 0.1')

    A metric the run did not log fails the gate, and so does one that is not a finite number (missing data never
    passes; NaN compares False with every bound, so it would otherwise slip through both ``<`` and ``>``):

    >>> evaluate_gate([GateThreshold(metric="accuracy", min=0.86)], {"accuracy": float("nan")})
    (False, 'accuracy nan is not a finite number')
    """
    failed, notes = [], []
    for t in thresholds:
        value = metrics.get(t.metric)
        if value is None:
            failed.append(f"{t.metric} missing from the version's run")
            continue
        if not math.isfinite(value):
            failed.append(f"{t.metric} {value} is not a finite number")
            continue
        if t.min is not None and value < t.min:
            failed.append(f"{t.metric} {value:g} < min {t.min:g}")
        elif t.max is not None and value > t.max:
            failed.append(f"{t.metric} {value:g} > max {t.max:g}")
        else:
            bounds = [f">= min {t.min:g}"] if t.min is not None else []
            bounds += [f"<= max {t.max:g}"] if t.max is not None else []
            notes.append(f"{t.metric} {value:g} {' and '.join(bounds)}")
    return (not failed, "; ".join(failed or notes))


@dataclass(frozen=True)
class Outcome:
    """What to write to the registry after a rollout of ``name`` version ``version`` finished."""

    name: str
    version: str
    outcome: str  # succeeded | aborted | failed
    tags: Mapping[str, str]
    alias: str | None = None  # point this alias at the version (promotion only)
    stage: str | None = None  # transition the version to this stage (promotion only)


def outcome_of(ref: MlflowModelRef, version: str, rollout: Mapping[str, Any]) -> Outcome:
    """The write-back for a finished LLMRollout: tags always; the promote alias or stage only on success."""
    status = rollout.get("status") or {}
    outcome = {Phase.SUCCEEDED: "succeeded", Phase.ABORTED: "aborted", Phase.FAILED: "failed"}[status["phase"]]
    meta = rollout["metadata"]
    tags = {
        TAG_ROLLOUT: outcome,
        f"{TAG_PREFIX}rollout-name": f"{meta['namespace']}/{meta['name']}",
        f"{TAG_PREFIX}finished-at": status.get("finishedAt") or "",
        f"{TAG_PREFIX}revision": status.get("toRevision") or "",
    }
    if outcome != "succeeded":
        tags[f"{TAG_PREFIX}reason"] = (status.get("message") or "")[:500]
    figures = [f"{m['name']}={m['value']:.4g}" for m in (status.get("analysis") or {}).get("metrics", [])
               if m.get("value") is not None]
    if figures:
        tags[f"{TAG_PREFIX}analysis"] = ", ".join(figures)[:500]
    # A bake cut short by a newer revision: tagged succeeded (it served), but the promote alias or stage does not
    # move to it (it did not finish its bake, and the newer one's rollout is under way).
    promoted = outcome == "succeeded" and not (status.get("bake") or {}).get("cutShort")
    return Outcome(ref.name, version, outcome, tags,
                   alias=ref.promote_alias if promoted else None, stage=ref.promote_stage if promoted else None)


def record(registry: ModelRegistry, outcome: Outcome) -> None:
    """Write ``outcome``: tags first, then the alias or stage (so a promoted version is never left untagged).
    Idempotent: writing it twice is harmless. Raises :class:`RegistryError`."""
    registry.set_tags(outcome.name, outcome.version, outcome.tags)
    if outcome.alias:
        registry.set_alias(outcome.name, outcome.alias, outcome.version)
    if outcome.stage:
        registry.transition_stage(outcome.name, outcome.version, outcome.stage)


@dataclass(frozen=True)
class Resolution:
    """What the registry said in this pass, for the planner.

    Attributes:
        model: the spec's model resolved to a version (None when not asked or not answered).
        problem: (reason, message) when the registry could not answer: ``RegistryUnavailable`` or ``ModelNotFound``.
        versions: details of the versions the pass's rollouts target (for their quality gates), by version.
        retry_in: seconds until a failed look-up is tried again.
    """

    model: ResolvedModel | None = None
    problem: tuple[str, str] | None = None
    versions: Mapping[str, VersionInfo] = field(default_factory=dict)
    retry_in: float | None = None


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
