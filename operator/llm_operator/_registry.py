"""The model registry: a small Protocol (implemented over MLflow by :mod:`llm_operator._mlflow`) and the pure
decisions about what the registry says (which version an alias or stage names, the quality gate, what to write back
after a rollout). Asking it, through a polling cache, and writing to it is :mod:`llm_operator._resolver`'s.

Failures never start anything: a registry that cannot be read leaves the stable revision serving and is
reported as ``ModelResolved=False`` with reason ``RegistryUnavailable`` (5xx, timeout, refused connection)
or ``ModelNotFound`` (no such model, alias, stage or version).
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from ._api import Adapter, AdapterMlflowRef, GateThreshold, MlflowModelRef, ResolvedModel
from ._vocabulary import Phase, Reason

#: Status tags written on a version after its rollout (``llmops.dev/rollout`` is succeeded|aborted|failed).
TAG_ROLLOUT = "llmops.dev/rollout"
TAG_PREFIX = "llmops.dev/"
#: On the version a rollback brought back: the MLflow version it went away from (when known) and its revision.
TAG_ROLLBACK_FROM = "llmops.dev/rollback-from"
TAG_ROLLBACK_FROM_REVISION = "llmops.dev/rollback-from-revision"
#: On the version a rollback went away from: ``"true"``, the rollback's ``<namespace>/<name>``, its finishedAt, and the
#: version it brought back (that version's own ``llmops.dev/rollout`` tag is left: its rollout did succeed).
TAG_ROLLED_BACK = "llmops.dev/rolled-back"
TAG_ROLLED_BACK_BY = "llmops.dev/rolled-back-by"
TAG_ROLLED_BACK_AT = "llmops.dev/rolled-back-at"
TAG_ROLLED_BACK_TO = "llmops.dev/rolled-back-to"
#: The label of a rollback's LLMRollout (``kubectl llm rollback``'s and Argo CD's rollback action's): the revision.
LABEL_ROLLBACK_TO = "llmops.dev/rollback-to"
#: On an LLMRollout the operator creates: the MLflow versions of the LoRA adapters the stable revision served then
#: (JSON, ``[[registered model, version], ...]``), so its outcome tags only the adapter versions it changed.
ANNOTATION_FROM_ADAPTERS = "llmops.dev/from-adapters"
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


def select_version(model: ModelInfo, ref: MlflowModelRef | AdapterMlflowRef) -> str:
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
    """What to write to the registry after a rollout of ``name`` version ``version`` finished (None: the rollout did
    not change the model's version, or the model is not an MLflow one, and only ``adapters`` are tagged)."""

    name: str | None
    version: str | None
    outcome: str  # succeeded | aborted | failed
    tags: Mapping[str, str]
    alias: str | None = None  # point this alias at the version (promotion only)
    stage: str | None = None  # transition the version to this stage (promotion only)
    rolled_back: tuple[str, Mapping[str, str]] | None = None  # a successful rollback: (the version it went away from, its tags)
    #: The MLflow versions of the LoRA adapters the rollout's revision served, (registered model, version): tagged alike.
    adapters: tuple[tuple[str, str], ...] = ()


def is_rollback(rollout: Mapping[str, Any]) -> bool:
    """Whether ``rollout`` is a rollback: ``kubectl llm rollback`` and Argo CD's rollback action label theirs alike."""
    return bool(((rollout.get("metadata") or {}).get("labels") or {}).get(LABEL_ROLLBACK_TO))


def version_of_revision(revision: str | None, rollouts: Sequence[Mapping[str, Any]],
                        revisions: Sequence[Mapping[str, Any]], name: str | None = None) -> str | None:
    """The MLflow version ``revision`` served: the target version of an LLMRollout that made it stable, else its
    entry in the LLMDeployment's ``status.revisions`` (``modelVersion``, when its ``modelUri`` is a version of the
    registered model ``name``: not another model's version of the same number); None when neither says.

    >>> version_of_revision("r5", [{"spec": {"target": {"model": {"version": "5"}}},
    ...                             "status": {"phase": "Succeeded", "toRevision": "r5"}}], [])
    '5'
    >>> version_of_revision("r4", [], [{"revision": "r4", "modelVersion": "4"}]), version_of_revision("r3", [], [])
    ('4', None)
    """
    if not revision:
        return None
    for rollout in rollouts:
        status = rollout.get("status") or {}
        version = (((rollout.get("spec") or {}).get("target") or {}).get("model") or {}).get("version")
        if version and status.get("phase") == Phase.SUCCEEDED and status.get("toRevision") == revision:
            return str(version)
    return next((str(r["modelVersion"]) for r in revisions if r.get("revision") == revision and r.get("modelVersion")
                 and (name is None or r.get("modelUri") == f"models:/{name}/{r['modelVersion']}")), None)


def changed_adapters(rollout: Mapping[str, Any]) -> tuple[tuple[str, str], ...]:
    """The (registered model, version) of the MLflow LoRA adapters in ``rollout``'s target that the stable revision
    did not serve when the operator created it (:data:`ANNOTATION_FROM_ADAPTERS`; a user's rollout: all of them)."""
    target = tuple((str(a["mlflow"]["name"]), str(a["mlflow"]["version"])) for a in
                   (rollout.get("spec", {}).get("target", {}).get("adapters") or []) if (a.get("mlflow") or {}).get("version"))
    text = ((rollout.get("metadata") or {}).get("annotations") or {}).get(ANNOTATION_FROM_ADAPTERS)
    try:
        before = {tuple(pair) for pair in json.loads(text)} if text else set()
    except (ValueError, TypeError):
        before = set()
    return tuple(pair for pair in target if pair not in before)


def outcome_of(ref: MlflowModelRef | None, version: str | None, rollout: Mapping[str, Any], rolled_from: str | None = None,
               from_version: str | None = None) -> Outcome:
    """The write-back for a finished LLMRollout: tags always; the promote alias or stage only on success. The model's
    version is tagged unless the rollout changed only adapters (``from_version``, the version the revision it started
    from served, is ``version``), or there is none (``ref`` None: a URI model); the adapters' versions it changed
    (:func:`changed_adapters`) are tagged alike.

    A successful rollback (:func:`is_rollback`) also says so on the version it brought back (the version it went
    away from, ``rolled_from``, and that revision), and tags ``rolled_from`` as rolled back (when known and another
    version; a rollback of the runtime alone keeps the version)."""
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
    rolled_back = None
    if outcome == "succeeded" and is_rollback(rollout):
        if rolled_from:
            tags[TAG_ROLLBACK_FROM] = rolled_from
        if status.get("fromRevision"):
            tags[TAG_ROLLBACK_FROM_REVISION] = status["fromRevision"]
        if rolled_from and version is not None and rolled_from != version:
            rolled_back = (rolled_from, {TAG_ROLLED_BACK: "true", TAG_ROLLED_BACK_BY: tags[f"{TAG_PREFIX}rollout-name"],
                                         TAG_ROLLED_BACK_AT: tags[f"{TAG_PREFIX}finished-at"], TAG_ROLLED_BACK_TO: version})
    adapters = changed_adapters(rollout)
    if ref is None or version is None or (adapters and from_version == version and not is_rollback(rollout)):
        return Outcome(None, None, outcome, tags, adapters=adapters)  # only the adapters it changed
    return Outcome(ref.name, version, outcome, tags, alias=ref.promote_alias if promoted else None,
                   stage=ref.promote_stage if promoted else None, rolled_back=rolled_back, adapters=adapters)


@dataclass(frozen=True)
class Resolution:
    """What the registry said in this pass, for the planner.

    Attributes:
        model: the spec's model resolved to a version (None when not asked or not answered).
        problem: (reason, message) when the registry could not answer: ``RegistryUnavailable`` or ``ModelNotFound``.
        versions: details of the versions the pass's rollouts target (for their quality gates), by version.
        retry_in: seconds until a failed look-up is tried again.
        adapters: the versions the followed adapters' aliases or stages name (see :func:`pin_adapters`).
    """

    model: ResolvedModel | None = None
    problem: tuple[str, str] | None = None
    versions: Mapping[str, VersionInfo] = field(default_factory=dict)
    retry_in: float | None = None
    #: The version each LoRA adapter that follows an alias or stage names now, by the adapter's name in the spec.
    adapters: Mapping[str, str] = field(default_factory=dict)


def pin_adapters(adapters: Sequence[Adapter], resolved: Mapping[str, str], served: Sequence[Mapping[str, Any]]) -> list[Adapter]:
    """``adapters`` with each MLflow reference that follows an alias or stage pinned to a version: the one the
    registry named in this pass (``resolved``, by adapter name), else the one the stable revision serves for the same
    reference (``served``: ``status.adapters``), so a registry outage moves nothing; an adapter with neither stays
    unpinned (the pass then names no revision: nothing starts). The alias or stage is kept beside the version, for
    the status; :func:`pinned` gives the wire form a rollout's target carries.

    >>> a = Adapter(name="sql", mlflow={"name": "sql-lora", "alias": "champion"})
    >>> pin_adapters([a], {"sql": "4"}, [])[0].mlflow.version
    '4'
    """
    out = []
    for adapter in adapters:
        ref = adapter.mlflow
        if ref is None or ref.version is not None:
            out.append(adapter)
            continue
        version = resolved.get(adapter.name) or next(
            (str(s["version"]) for s in served if s.get("name") == adapter.name and s.get("model") == ref.name
             and s.get("alias") == ref.alias and s.get("stage") == ref.stage and s.get("version")), None)
        out.append(adapter.model_copy(update={"mlflow": ref.model_copy(update={"version": version})}) if version else adapter)
    return out


def pinned(adapter: Adapter) -> dict[str, Any]:
    """The wire form of an adapter pinned by :func:`pin_adapters`: its version only (the schema allows exactly one of
    alias, stage or version), as an operator-made rollout's target carries it."""
    wire = adapter.to_wire()
    if adapter.mlflow is not None and adapter.mlflow.version is not None:
        wire["mlflow"] = {"name": adapter.mlflow.name, "version": adapter.mlflow.version}
    return wire


def unpinned(adapters: Sequence[Adapter]) -> list[str]:
    """The adapters that follow an alias or stage no version is known for (their names)."""
    return [a.name for a in adapters if a.mlflow is not None and a.mlflow.version is None]
