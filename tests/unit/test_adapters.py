"""LoRA adapters on the operator's side (issue 19): vLLM's engine arguments and the runtime contract, the revision's
identity, pinning the adapters that follow an MLflow alias, and whole passes through the planner: an adapter added
by spec edit and one whose alias moves each roll out as a new revision, written back to the registry."""

import copy
import json

import pytest

from llm_operator import _builders as b
from llm_operator import _contract as c
from llm_operator import _registry as reg
from llm_operator._api import Adapter
from llm_operator._validation import parse_llmdeployment
from tests.schemas import validate
from tests.unit.fakes import FakeRegistry
from tests.unit.test_reconcile import T0, T1, T2, Cluster, _all_ready, _rollouts

T3 = "2026-11-21T10:05:00Z"

SQL = {"name": "sql", "uri": "s3://loras/sql"}
SUPPORT = {"name": "support", "mlflow": {"name": "support-lora", "version": "3"}, "baseModel": "Qwen/Qwen2.5-1.5B-Instruct"}


def _spec(samples, adapters=None, **runtime):
    doc = copy.deepcopy(samples["llmdeployment-minimal"])
    if adapters is not None:
        doc["spec"]["adapters"] = copy.deepcopy(adapters)
    doc["spec"]["runtime"].update(runtime)
    return parse_llmdeployment(doc)


def _args(spec):
    revision = b.make_revision(spec, b.static_model(spec))
    return b.engine_args("qwen", spec, revision), {e["name"]: e.get("value") for e in b.container_env("qwen", spec, revision)}


ARGS = [
    # (case, adapters, runtime, the LoRA arguments)
    ("none", None, {}, []),
    ("two, by name", [SUPPORT, SQL], {}, ["--enable-lora", "--lora-modules", "sql=/var/cache/llmops/adapters/sql-{sql}",
                                          "support=/var/cache/llmops/adapters/support-{support}", "--max-loras", "2"]),
    ("max loras and rank set", [SQL], {"maxLoras": 4, "maxLoraRank": 64},
     ["--enable-lora", "--lora-modules", "sql=/var/cache/llmops/adapters/sql-{sql}", "--max-loras", "4", "--max-lora-rank", "64"]),
    ("rank without adapters (extraArgs may name them)", None, {"maxLoraRank": 32}, ["--max-lora-rank", "32"]),
]


@pytest.mark.parametrize("case,adapters,runtime,expected", ARGS, ids=[a[0] for a in ARGS])
def test_engine_arguments_and_the_runtime_contract(samples, case, adapters, runtime, expected):
    spec = _spec(samples, adapters, **runtime)
    args, env = _args(spec)
    digests = {a.name: b.adapter_dir(a).rsplit("-", 1)[1] for a in spec.adapters}
    start = args.index("--max-model-len") + 2
    assert args[start:] == [arg.format(**digests) for arg in expected]
    if not adapters:
        assert c.ENV_ADAPTERS not in env
        return
    contract = json.loads(env[c.ENV_ADAPTERS])
    assert contract == [{"name": a.name, "uri": b.adapter_uri(a), "dir": b.adapter_dir(a), "base": a.base_model}
                        for a in sorted(spec.adapters, key=lambda a: a.name)]
    assert all(entry["dir"].startswith(c.ADAPTER_CACHE_DIR + "/") for entry in contract)


def test_the_deployment_with_adapters_validates(samples):
    spec = _spec(samples, [SQL, SUPPORT])
    revision = b.make_revision(spec, b.static_model(spec))
    validate(b.build_deployment("qwen", "default", spec, revision, 1))


REVISIONS = [
    # (case, adapters before, adapters after, a new revision?)
    ("an adapter added", [], [SQL], True),
    ("an adapter removed", [SQL, SUPPORT], [SQL], True),
    ("an adapter's version changed", [SUPPORT], [{**SUPPORT, "mlflow": {"name": "support-lora", "version": "4"}}], True),
    ("an adapter's uri changed", [SQL], [{**SQL, "uri": "s3://loras/sql-v2"}], True),
    ("an adapter renamed", [SQL], [{**SQL, "name": "sql2"}], True),
    ("its base asserted", [SQL], [{**SQL, "baseModel": "Qwen/Qwen2.5-1.5B-Instruct"}], True),
    ("the same adapters reordered", [SQL, SUPPORT], [SUPPORT, SQL], False),
    ("none, written as an empty list", None, [], False),
]


@pytest.mark.parametrize("case,before,after,new", REVISIONS, ids=[r[0] for r in REVISIONS])
def test_an_adapter_change_is_a_new_revision_and_an_unrelated_edit_is_not(samples, case, before, after, new):
    one, two = _spec(samples, before), _spec(samples, after)
    first, second = b.make_revision(one, b.static_model(one)), b.make_revision(two, b.static_model(two))
    assert (first.id != second.id) is new
    if not new:
        assert b.engine_args("qwen", one, first) == b.engine_args("qwen", two, second)  # same revision, same pods


def test_a_revision_without_adapters_keeps_the_id_it_had_before_adapters_existed(samples):
    """60c510a2cc: the minimal sample's revision id as every release before issue 19 computed it."""
    spec = _spec(samples)
    assert b.make_revision(spec, b.static_model(spec)).id == "60c510a2cc"
    doc = copy.deepcopy(samples["llmdeployment-minimal"])
    doc["spec"]["traffic"] = {"timeout": "900s"}
    doc["spec"]["slo"] = {"availability": 99.0}
    edited = parse_llmdeployment(doc)
    assert b.make_revision(edited, b.static_model(edited)).id == "60c510a2cc"  # an unrelated edit


def test_pinning_follows_the_registry_then_what_is_served():
    followed = Adapter.model_validate({"name": "sql", "mlflow": {"name": "sql-lora", "alias": "champion"}})
    fixed = Adapter.model_validate(SQL)
    served = [{"name": "sql", "model": "sql-lora", "alias": "champion", "version": "2", "uri": "models:/sql-lora/2"}]
    (now,) = reg.pin_adapters([followed], {"sql": "3"}, served)
    assert (now.mlflow.version, now.mlflow.alias, b.adapter_uri(now)) == ("3", "champion", "models:/sql-lora/3")
    assert reg.pinned(now) == {"name": "sql", "mlflow": {"name": "sql-lora", "version": "3"}}  # the CRD's exactly-one rule
    (held,) = reg.pin_adapters([followed], {}, served)  # the registry did not answer: what is served stays
    assert held.mlflow.version == "2"
    other = Adapter.model_validate({"name": "sql", "mlflow": {"name": "sql-lora", "alias": "canary"}})
    (unknown,) = reg.pin_adapters([other], {}, served)  # another alias: nothing known of it
    assert unknown.mlflow.version is None and reg.unpinned([unknown]) == ["sql"]
    assert reg.pin_adapters([fixed], {}, []) == [fixed]


# -------------------------------------------------------------------------------- whole passes


def _cluster(samples, adapters, registry=None):
    doc = copy.deepcopy(samples["llmdeployment-minimal"])
    doc["spec"]["adapters"] = copy.deepcopy(adapters)
    doc["spec"]["rollout"] = {"steps": [{"setWeight": 50}, {"pause": {"duration": "1s"}}], "analyzeEveryStep": False,
                              "bakeDuration": "0s", "scaleDownDelaySeconds": 0}
    cluster = Cluster(doc, registry=registry)
    cluster.reconcile(T0)
    _all_ready(cluster)
    cluster.reconcile(T0)
    return cluster


def _move_alias(cluster, registry, version):
    """``champion`` of sql-lora moved to ``version`` (the poll interval passed), through the first step of its rollout."""
    registry.register("sql-lora", version, alias="champion")
    cluster.cache.forget("k", "sql-lora")
    cluster.reconcile(T1)
    cluster.reconcile(T1)
    _all_ready(cluster)
    cluster.reconcile(T1)


def _through(cluster, now):
    """Passes until the rollout in flight is done (pods made ready after each)."""
    for _ in range(6):
        cluster.reconcile(now)
        _all_ready(cluster)
    cluster.reconcile(now)


def test_an_adapter_added_by_spec_edit_rolls_out_through_the_canary(samples):
    cluster = _cluster(samples, [])
    first = cluster.body["status"]["stableRevision"]
    assert "adapters" not in cluster.body["status"]
    cluster.edit_spec(adapters=[SQL])
    cluster.reconcile(T1)
    (name, rollout), = _rollouts(cluster).items()
    assert rollout["spec"]["target"]["adapters"] == [SQL]
    cluster.reconcile(T1)
    _all_ready(cluster)
    cluster.reconcile(T1)
    assert cluster.body["status"]["canaryRevision"] == rollout["metadata"]["labels"]["llmops.dev/revision"]
    assert _rollouts(cluster)[name]["status"]["canaryWeight"] == 50
    canary = cluster.deployments()[f"qwen-small-{cluster.body['status']['canaryRevision']}"]
    assert "--enable-lora" in canary["spec"]["template"]["spec"]["containers"][0]["args"]
    stable = cluster.deployments()[f"qwen-small-{first}"]
    assert "--enable-lora" not in stable["spec"]["template"]["spec"]["containers"][0]["args"]  # untouched
    _through(cluster, T2)
    status = cluster.body["status"]
    assert _rollouts(cluster)[name]["status"]["phase"] == "Succeeded" and status["stableRevision"] != first
    assert status["adapters"] == [{"name": "sql", "uri": "s3://loras/sql"}] and status["adapterCount"] == 1
    assert cluster.reconcile(T2)[1] == []


def test_an_adapter_whose_alias_moves_rolls_out_and_is_written_back(samples):
    registry = FakeRegistry()
    registry.register("sql-lora", "1", alias="champion")
    follow = {"name": "sql", "mlflow": {"name": "sql-lora", "alias": "champion"}}
    cluster = _cluster(samples, [follow], registry)
    status = cluster.body["status"]
    assert status["adapters"] == [{"name": "sql", "uri": "models:/sql-lora/1", "model": "sql-lora", "version": "1", "alias": "champion"}]
    resolved = next(x for x in status["conditions"] if x["type"] == "ModelResolved")
    assert (resolved["status"], resolved["message"]) == ("True", "adapter sql: sql-lora version 1 (by alias champion)")
    first = status["stableRevision"]
    # The registry goes down: nothing moves, nothing starts, the adapter stays at version 1.
    registry.down = True
    plan, writes = cluster.reconcile(T1)
    assert not _rollouts(cluster) and cluster.body["status"]["stableRevision"] == first
    assert next(x for x in cluster.body["status"]["conditions"] if x["type"] == "ModelResolved")["reason"] == "RegistryUnavailable"
    registry.down = False
    registry.register("sql-lora", "2", alias="champion")
    cluster.cache.forget("k", "sql-lora")  # the poll interval passed
    cluster.reconcile(T1)
    (name, rollout), = _rollouts(cluster).items()
    assert rollout["spec"]["target"]["adapters"] == [{"name": "sql", "mlflow": {"name": "sql-lora", "version": "2"}}]
    _through(cluster, T2)
    _through(cluster, T3)  # past the step's pause
    assert _rollouts(cluster)[name]["status"]["phase"] == "Succeeded"
    assert cluster.body["status"]["adapters"][0]["version"] == "2" and cluster.body["status"]["stableRevision"] != first
    # Written back on the adapter version the rollout changed (a URI model has no registry record of its own); the
    # operator's rollout recorded what the stable revision served when it started.
    assert rollout["metadata"]["annotations"]["llmops.dev/from-adapters"] == '[["sql-lora","1"]]'
    assert [(w[1], w[2], w[3]["llmops.dev/rollout"]) for w in registry.writes if w[0] == "tags"] == [("sql-lora", "2", "succeeded")]


def test_an_adapters_only_rollout_tags_the_adapter_it_changed_not_the_model_nor_the_others(samples):
    """Review finding: with an MLflow model, a rollout that moved one adapter leaves the model's version and the
    unchanged adapter's tags alone (an abort would otherwise mark versions that did not change as aborted)."""
    registry = FakeRegistry()
    registry.register("support-assistant", "4", alias="champion", metrics={"accuracy": 0.91, "hallucination_rate": 0.04})
    registry.register("sql-lora", "1", alias="champion")
    registry.register("faq-lora", "7", alias="champion")
    doc = copy.deepcopy(samples["llmdeployment-mlflow"])
    doc["spec"].update(replicas=1, adapters=[{"name": "sql", "mlflow": {"name": "sql-lora", "alias": "champion"}},
                                             {"name": "faq", "mlflow": {"name": "faq-lora", "alias": "champion"}}])
    doc["spec"]["rollout"].update(steps=[{"setWeight": 50}, {"pause": {"duration": "1s"}}], analyzeEveryStep=False, bakeDuration="0s")
    doc["spec"]["rollout"].pop("analysis")
    cluster = Cluster(doc, registry=registry)
    cluster.reconcile(T0)
    _all_ready(cluster)
    cluster.reconcile(T0)
    registry.register("sql-lora", "2", alias="champion")
    cluster.cache.forget("k", "sql-lora")
    cluster.reconcile(T1)
    (name, rollout), = _rollouts(cluster).items()
    assert rollout["spec"]["target"]["model"] == {"version": "4"}
    _through(cluster, T2)
    _through(cluster, T3)
    assert _rollouts(cluster)[name]["status"]["phase"] == "Succeeded"
    assert [(w[1], w[2]) for w in registry.writes if w[0] == "tags"] == [("sql-lora", "2")]
    assert _rollouts(cluster)[name]["status"]["registry"]["recordedAt"]


def test_nothing_is_served_before_a_followed_adapter_is_resolved_once(samples):
    """A new LLMDeployment whose adapter follows an alias the registry cannot resolve yet: no revision is made with
    the alias unpinned (its pods would load whatever the alias names when they start); ModelResolved says why."""
    registry = FakeRegistry()
    registry.down = True
    doc = copy.deepcopy(samples["llmdeployment-minimal"])
    doc["spec"]["adapters"] = [{"name": "sql", "mlflow": {"name": "sql-lora", "alias": "champion"}}]
    cluster = Cluster(doc, registry=registry)
    plan, writes = cluster.reconcile(T0)
    assert cluster.deployments() == {} and [w for w in writes if w[1] != "LLMDeployment"] == []
    resolved = next(x for x in cluster.body["status"]["conditions"] if x["type"] == "ModelResolved")
    assert (resolved["status"], resolved["reason"]) == ("False", "RegistryUnavailable")
    assert resolved["message"].startswith("adapter sql: ")
    registry.down = False
    registry.register("sql-lora", "1", alias="champion")
    cluster.cache.forget("k", "sql-lora")
    cluster.reconcile(T2)
    (deployment,) = cluster.deployments().values()
    env = {e["name"]: e.get("value") for e in deployment["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert json.loads(env["LLMOPS_ADAPTERS"])[0]["uri"] == "models:/sql-lora/1"


def test_a_registry_outage_mid_rollout_neither_aborts_nor_restarts_an_adapters_rollout(samples):
    """Review finding: pinned to what stable serves while the registry is down, the spec would name stable's revision
    and supersede the rollout the alias move started; the pass must name no revision then (as for a model's alias)."""
    registry = FakeRegistry()
    registry.register("sql-lora", "1", alias="champion")
    cluster = _cluster(samples, [{"name": "sql", "mlflow": {"name": "sql-lora", "alias": "champion"}}], registry)
    _move_alias(cluster, registry, "2")
    (name, rollout), = _rollouts(cluster).items()
    assert rollout["status"]["canaryWeight"] == 50
    registry.down = True
    cluster.cache.forget("k", "sql-lora")
    for now in (T2, T3):
        cluster.reconcile(now)
        assert _rollouts(cluster)[name]["status"]["phase"] not in ("Aborted", "Failed"), _rollouts(cluster)[name]["status"]  # it goes on
    assert list(_rollouts(cluster)) == [name]
    registry.down = False
    cluster.cache.forget("k", "sql-lora")
    _through(cluster, T3)
    assert _rollouts(cluster)[name]["status"]["phase"] == "Succeeded" and list(_rollouts(cluster)) == [name]


def test_no_revision_is_made_with_an_unpinned_adapter_when_the_stable_one_vanished(samples):
    registry = FakeRegistry()
    registry.register("sql-lora", "1", alias="champion")
    cluster = _cluster(samples, [], registry)
    cluster.edit_spec(adapters=[{"name": "sql", "mlflow": {"name": "sql-lora", "alias": "faq"}}])  # no such alias yet
    for key in [k for k in cluster.kube.objects if k[1] == "Deployment"]:
        del cluster.kube.objects[key]  # the stable revision's Deployment deleted by hand
    cluster.reconcile(T1)
    for deployment in cluster.deployments().values():
        env = {e["name"]: e.get("value") for e in deployment["spec"]["template"]["spec"]["containers"][0]["env"]}
        assert "@faq" not in env.get("LLMOPS_ADAPTERS", "")


def test_an_adapter_named_like_the_served_model_is_refused(samples):
    from llm_operator import InvalidSpec

    doc = copy.deepcopy(samples["llmdeployment-minimal"])
    doc["spec"]["adapters"] = [{"name": "qwen-small", "uri": "s3://loras/x"}]
    with pytest.raises(InvalidSpec, match=r"spec.adapters\[0\].name: 'qwen-small' is the base model's name"):
        parse_llmdeployment(doc)
    doc["spec"]["model"]["servedModelName"] = "qwen"
    parse_llmdeployment(doc)  # another served name: fine
    doc["spec"]["adapters"][0]["name"] = "qwen"
    with pytest.raises(InvalidSpec, match=r"spec.adapters\[0\].name: 'qwen' is the base model's name"):
        parse_llmdeployment(doc)


def test_the_adapters_registry_reaches_the_pods_when_the_model_names_none(samples):
    """Review finding: a URI model with an MLflow adapter: the adapter's secretRef gives the pods MLFLOW_TRACKING_URI
    (else its models:/ URI could not be fetched), and one registry per deployment is enforced."""
    from llm_operator import InvalidSpec

    adapter = {"name": "support", "mlflow": {"name": "support-lora", "version": "3", "secretRef": {"name": "mlflow-credentials"}}}
    spec = _spec(samples, [adapter])
    revision = b.make_revision(spec, b.static_model(spec))
    env = {e["name"]: e for e in b.container_env("qwen", spec, revision)}
    assert env["MLFLOW_TRACKING_URI"]["valueFrom"]["secretKeyRef"] == {"name": "mlflow-credentials", "key": "MLFLOW_TRACKING_URI"}
    doc = copy.deepcopy(samples["llmdeployment-minimal"])
    doc["spec"]["adapters"] = [adapter, {**adapter, "name": "other", "mlflow": {**adapter["mlflow"], "secretRef": {"name": "elsewhere"}}}]
    with pytest.raises(InvalidSpec, match=r"spec.adapters\[1\].mlflow.secretRef: names Secret 'elsewhere'"):
        parse_llmdeployment(doc)


def test_a_users_rollout_naming_no_adapters_keeps_the_ones_stable_serves(samples):
    """Review finding: a user's LLMRollout that names no adapters targets the model it names with the adapters the
    stable revision serves (pinned), so an alias moving meanwhile does not change its target mid-way."""
    from tests.unit.test_reconcile import _start_rollout

    registry = FakeRegistry()
    registry.register("sql-lora", "1", alias="champion")
    cluster = _cluster(samples, [{"name": "sql", "mlflow": {"name": "sql-lora", "alias": "champion"}}], registry)
    _start_rollout(cluster)  # to hf://org/next
    cluster.reconcile(T1)
    before = _rollouts(cluster)["next"]["status"]["toRevision"]
    registry.register("sql-lora", "2", alias="champion")
    cluster.cache.forget("k", "sql-lora")
    cluster.reconcile(T1)
    assert _rollouts(cluster)["next"]["status"]["toRevision"] == before
    canary = cluster.deployments()[f"qwen-small-{before}"]
    env = {e["name"]: e.get("value") for e in canary["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert json.loads(env["LLMOPS_ADAPTERS"])[0]["uri"] == "models:/sql-lora/1"  # stable's, pinned


def test_lora_flags_in_extra_args_are_refused_beside_adapters(samples):
    from llm_operator import InvalidSpec

    doc = copy.deepcopy(samples["llmdeployment-minimal"])
    doc["spec"]["adapters"] = [SQL]
    doc["spec"]["runtime"]["extraArgs"] = ["--enforce-eager", "--lora-modules", "x=/tmp/x"]
    with pytest.raises(InvalidSpec, match=r"spec.runtime.extraArgs\[1\]: --lora-modules is set from spec.adapters"):
        parse_llmdeployment(doc)
    doc["spec"]["runtime"]["extraArgs"] = ["--lora_modules", "x=/tmp/x"]  # vLLM's parser reads it as --lora-modules
    with pytest.raises(InvalidSpec, match=r"spec.runtime.extraArgs\[0\]: --lora_modules is set from spec.adapters"):
        parse_llmdeployment(doc)
    del doc["spec"]["adapters"]
    parse_llmdeployment(doc)  # without adapters, extraArgs are the user's


def test_the_default_max_loras_is_capped(samples):
    many = [{"name": f"a{i}", "uri": f"s3://loras/a{i}"} for i in range(12)]
    args, _ = _args(_spec(samples, many))
    assert args[args.index("--max-loras") + 1] == str(b.DEFAULT_MAX_LORAS)
