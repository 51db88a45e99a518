"""Argo CD resource customizations, run by a real Lua interpreter (lupa) against YAML test data, the way Argo CD
runs the health_test.yaml and action_test.yaml files of its own resource_customizations/."""

import pathlib

import pytest
import yaml
from lupa import LuaRuntime

from tests.conftest import ROOT

CUSTOMIZATIONS = ROOT / "manifests" / "argocd" / "resource_customizations" / "llmops.dev"


def to_lua(lua, value):
    if isinstance(value, dict):
        return lua.table_from({k: to_lua(lua, v) for k, v in value.items()})
    if isinstance(value, list):
        return lua.table_from([to_lua(lua, v) for v in value])
    return value


def from_lua(value):
    if hasattr(value, "items"):  # a Lua table
        items = dict(value.items())
        if items and all(isinstance(k, int) for k in items) and sorted(items) == list(range(1, len(items) + 1)):
            return [from_lua(items[i]) for i in range(1, len(items) + 1)]
        return {k: from_lua(v) for k, v in items.items()}
    return value


def run(script: pathlib.Path, obj: dict):
    lua = LuaRuntime(unpack_returned_tuples=True)
    lua.globals().obj = to_lua(lua, obj)
    return from_lua(lua.execute(script.read_text()))


def cases(kind: str, test_file: str, key: str):
    path = CUSTOMIZATIONS / kind / test_file
    return [(path.parent, case) for case in yaml.safe_load(path.read_text())[key]]


HEALTH = cases("LLMRollout", "health_test.yaml", "tests") + cases("LLMDeployment", "health_test.yaml", "tests")


@pytest.mark.parametrize("folder,case", HEALTH, ids=[f"{f.name}:{c['inputPath']}" for f, c in HEALTH])
def test_health(folder, case):
    obj = yaml.safe_load((folder / case["inputPath"]).read_text())
    assert run(folder / "health.lua", obj) == case["healthStatus"]


def test_deployment_health_follows_the_operator_through_an_aborted_rollout(samples):
    """The health check read on the statuses the planner writes: Progressing while the new revision rolls out,
    Degraded once its rollout is aborted (the spec's model is not what serves), Healthy again once it serves."""
    import copy

    from tests.unit.test_reconcile import T0, T1, T2, Cluster, _all_ready, _rollout_spec, _rollouts

    doc = copy.deepcopy(samples["llmdeployment-minimal"])
    doc["spec"]["rollout"] = {"steps": [{"setWeight": 50}, {"pause": {}}]}
    cluster = Cluster(doc)
    script = CUSTOMIZATIONS / "LLMDeployment" / "health.lua"

    def health():
        return run(script, cluster.body)["status"]

    cluster.reconcile(T0)
    _all_ready(cluster)
    cluster.reconcile(T0)
    assert health() == "Healthy"
    cluster.edit_spec(model={"uri": "hf://org/model-b"})
    cluster.reconcile(T1)
    assert health() == "Progressing"
    cluster.reconcile(T1)
    _all_ready(cluster)
    cluster.reconcile(T1)
    assert health() == "Progressing"
    (name,) = _rollouts(cluster)
    _rollout_spec(cluster, name, abort=True)
    cluster.reconcile(T2)
    assert health() == "Degraded"
    cluster.edit_spec(model={"uri": "hf://Qwen/Qwen2.5-1.5B-Instruct"})
    cluster.reconcile(T2)
    assert health() == "Healthy"


DISCOVERY = cases("LLMRollout/actions", "action_test.yaml", "discoveryTests") + cases(
    "LLMDeployment/actions", "action_test.yaml", "discoveryTests")


@pytest.mark.parametrize("folder,case", DISCOVERY, ids=[c["inputPath"] for _, c in DISCOVERY])
def test_action_discovery(folder, case):
    obj = yaml.safe_load((folder / case["inputPath"]).read_text())
    actions = run(folder / "discovery.lua", obj)
    assert {name: spec["disabled"] for name, spec in actions.items()} == {r["name"]: r["disabled"] for r in case["result"]}


ACTIONS = cases("LLMRollout/actions", "action_test.yaml", "actionTests")
CREATING = cases("LLMDeployment/actions", "action_test.yaml", "actionTests")


def _created(result):
    """The one object a creating action returns (Argo CD's ``{operation = "create", resource = ...}``), its name's
    creation-time suffix (``%y%m%d%H%M%S``, UTC) replaced by TIMESTAMP."""
    import re

    (impacted,) = result
    assert impacted["operation"] == "create"
    obj = impacted["resource"]
    stem, stamp = obj["metadata"]["name"].rsplit("-", 1)
    assert re.fullmatch(r"\d{12}", stamp), obj["metadata"]["name"]
    obj["metadata"]["name"] = f"{stem}-TIMESTAMP"
    return obj


@pytest.mark.parametrize("folder,case", CREATING, ids=[f"{c['action']}:{c['inputPath']}" for _, c in CREATING])
def test_the_rollback_action_creates_the_llmrollout_kubectl_llm_rollback_would(folder, case):
    """Issue 16: the Argo CD action on an LLMDeployment creates (Argo CD >= 2.8) the LLMRollout back to the previous
    revision, valid for the CRD, with the target and strategy `kubectl llm rollback` gives (it also knows the runtime
    from the kept LLMRollouts; here none are kept, so both take the revision's model and the deployment's runtime)."""
    from llm_operator._plugin import rollback_rollout
    from llm_operator._validation import parse_llmrollout

    obj = yaml.safe_load((folder / case["inputPath"]).read_text())
    made = _created(run(folder / case["action"] / "action.lua", obj))
    assert made == yaml.safe_load((folder / case["expectedOutputPath"]).read_text())
    parse_llmrollout(made)  # the CRD's model accepts it
    plugin = rollback_rollout(obj, [])
    assert plugin["spec"] == made["spec"] and plugin["metadata"]["labels"] == made["metadata"]["labels"]


@pytest.mark.parametrize("folder,case", ACTIONS, ids=[f"{c['action']}:{c['inputPath']}" for _, c in ACTIONS])
def test_actions(folder, case):
    obj = yaml.safe_load((folder / case["inputPath"]).read_text())
    result = run(folder / case["action"] / "action.lua", obj)
    assert result == yaml.safe_load((folder / case["expectedOutputPath"]).read_text())


def test_every_action_has_a_test_and_matches_the_plugin():
    """The Argo CD actions and `kubectl llm` make the same spec patch for the same rollout."""
    from llm_operator._plugin import ACTIONS as PLUGIN_ACTIONS
    from llm_operator._plugin import action_patch

    folder = CUSTOMIZATIONS / "LLMRollout" / "actions"
    scripts = sorted(p.name for p in folder.iterdir() if (p / "action.lua").exists())
    assert scripts == sorted(PLUGIN_ACTIONS)
    assert {c["action"] for _, c in ACTIONS} == set(PLUGIN_ACTIONS)
    for _, case in ACTIONS:
        before = yaml.safe_load((folder / case["inputPath"]).read_text())
        after = run(folder / case["action"] / "action.lua", before)
        patched = {**before, "spec": {**before["spec"], **action_patch(case["action"], before)["spec"]}}
        assert after == patched, case["action"]


def argocd_cm_patch() -> dict:
    """The argocd-cm keys that install the customizations (Argo CD's resource.customizations.* format)."""
    data = {}
    for kind in ("LLMDeployment", "LLMRollout"):
        folder = CUSTOMIZATIONS / kind
        data[f"resource.customizations.health.llmops.dev_{kind}"] = (folder / "health.lua").read_text()
        actions = folder / "actions"
        if actions.exists():
            definitions = [{"name": p.name, "action.lua": (p / "action.lua").read_text()}
                           for p in sorted(actions.iterdir()) if (p / "action.lua").exists()]
            data[f"resource.customizations.actions.llmops.dev_{kind}"] = yaml.safe_dump(
                {"discovery.lua": (actions / "discovery.lua").read_text(), "definitions": definitions}, sort_keys=False)
    return {"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": "argocd-cm", "namespace": "argocd", "labels": {"app.kubernetes.io/part-of": "argocd"}},
            "data": data}


ARGOCD_CM = ROOT / "manifests" / "argocd" / "argocd-cm-patch.yaml"


def test_argocd_cm_patch_is_generated_from_the_lua_files():
    assert yaml.safe_load(ARGOCD_CM.read_text()) == argocd_cm_patch(), "run: make argocd-cm"


@pytest.mark.parametrize("name", ["application-operator.yaml", "application-llmdeployment.yaml"])
def test_example_applications_validate_against_argo_cds_crd(name):
    from tests.schemas import validate

    app = yaml.safe_load((ROOT / "manifests" / "argocd" / name).read_text())
    validate(app)
    assert app["spec"]["syncPolicy"]["automated"]["selfHeal"] is True


def _ignored(obj: dict, expressions: list[str]) -> dict:
    """``obj`` without what Argo CD's ``jqPathExpressions`` select (it deletes each path an expression yields), by
    jq (Argo CD runs gojq, which implements the same language)."""
    import json
    import shutil
    import subprocess

    jq = shutil.which("jq")
    assert jq, "jq is installed by `make deps` (Debian's jq)"
    program = "del(" + ", ".join(f"({e})" for e in expressions) + ")"
    return json.loads(subprocess.run([jq, "-c", program], input=json.dumps(obj), capture_output=True, text=True, check=True).stdout)


@pytest.mark.parametrize("router", ["istio", "gatewayAPI"])
def test_the_example_ignores_exactly_what_the_rollout_owns_on_either_router(router):
    """The example Application's ignoreDifferences, applied as Argo CD does to the route a rollout moves: a route at
    any weight, mirror or preview reads the same as the one kept in Git, and a change of anything else does not."""
    from llm_operator import _builders as b
    from llm_operator._routing import router_for
    from llm_operator._validation import parse_llmdeployment

    app = yaml.safe_load((ROOT / "manifests" / "argocd" / "application-llmdeployment.yaml").read_text())
    sample = "llmdeployment-gateway-api.yaml" if router == "gatewayAPI" else "llmdeployment-minimal.yaml"
    doc = yaml.safe_load((ROOT / "samples" / sample).read_text())
    spec = parse_llmdeployment(doc)
    kind = "HTTPRoute" if router == "gatewayAPI" else "VirtualService"
    (ignore,) = [d for d in app["spec"]["ignoreDifferences"] if d["kind"] == kind]

    def route(routes, preview=None, timeout=None):
        s = spec.model_copy(update={"traffic": spec.traffic.model_copy(update={"timeout": timeout})}) if timeout else spec
        (obj,) = [o for o in router_for(router).build("m", "ns", s, "a", "b", routes, preview) if o["kind"] == kind]
        return _ignored(obj, ignore["jqPathExpressions"])

    in_git = route(b.Routes())
    for moved in (route(b.Routes(75, 25, 0)), route(b.Routes(100, 0, 30)), route(b.Routes(), "x-llmops-preview")):
        assert moved == in_git
    assert route(b.Routes(), timeout="900s") != in_git  # the structure is still diffed


class _Blocks(yaml.SafeDumper):
    """Multi-line strings as literal blocks, so the Lua reads as Lua in the ConfigMap."""


_Blocks.add_representer(str, lambda dumper, value: dumper.represent_scalar(
    "tag:yaml.org,2002:str", value, style="|" if "\n" in value else None))


if __name__ == "__main__":  # make argocd-cm
    ARGOCD_CM.write_text("# Generated from resource_customizations/ by `make argocd-cm`. Merge into argocd-cm.\n"
                         + yaml.dump(argocd_cm_patch(), Dumper=_Blocks, sort_keys=False))


@pytest.mark.parametrize("case", ["rolling.yaml", "baking.yaml", "../../testdata/ready.yaml"])
def test_the_rollback_action_refuses_what_discovery_disables(case):
    """Argo CD runs an action whatever discovery said (the API and the CLI do not check "disabled")."""
    from lupa import LuaError

    folder = CUSTOMIZATIONS / "LLMDeployment" / "actions"
    obj = yaml.safe_load((folder / "testdata" / case).read_text())
    with pytest.raises(LuaError, match="in flight|no previous revision"):
        run(folder / "rollback" / "action.lua", obj)
