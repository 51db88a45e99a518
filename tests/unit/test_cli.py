"""``llm-operator render`` and the public surface."""

import yaml

import llm_operator
from llm_operator._cli import main
from tests.conftest import ROOT
from tests.schemas import validate


def test_render_prints_valid_objects_for_every_sample(capsys):
    args = ["render"] + [arg for path in sorted((ROOT / "samples").glob("*.yaml")) for arg in ("-f", str(path))]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "&id" not in out and "*id" not in out  # no YAML anchors in manifests meant for kubectl
    objects = list(yaml.safe_load_all(out))
    # Each Istio-routed LLMDeployment sample: a Service and a DestinationRule per role (stable, canary); the Gateway API
    # sample: a Service and an InferencePool per role, and an HTTPRoute.
    assert len(objects) == 61
    for obj in objects:
        validate(obj)
    assert {o["kind"] for o in objects} == {"DestinationRule", "Deployment", "HorizontalPodAutoscaler",
                                            "PodDisruptionBudget", "ScaledObject", "Service", "VirtualService",
                                            "PeerAuthentication", "AuthorizationPolicy",  # the hardened sample's policies
                                            "HTTPRoute", "InferencePool"}  # the Gateway API sample's


def test_render_refuses_an_invalid_file_naming_the_fields(tmp_path, capsys):
    doc = yaml.safe_load((ROOT / "samples" / "llmdeployment-multigpu.yaml").read_text())
    doc["spec"]["runtime"]["maxModelLen"] = 0
    doc["spec"]["runtime"]["quantization"] = "int1"
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(doc))
    assert main(["render", "-f", str(path)]) == 1
    err = capsys.readouterr().err
    assert "LLMDeployment llm-serving/llama-70b: spec.runtime.maxModelLen" in err
    assert "spec.runtime.quantization: unknown quantization 'int1'" in err


def test_render_uses_the_namespace_flag_for_objects_without_one(tmp_path, capsys):
    doc = yaml.safe_load((ROOT / "samples" / "llmdeployment-minimal.yaml").read_text())
    del doc["metadata"]["namespace"]
    path = tmp_path / "m.yaml"
    path.write_text(yaml.safe_dump(doc))
    assert main(["render", "-f", str(path), "-n", "team-a"]) == 0
    assert {o["metadata"]["namespace"] for o in yaml.safe_load_all(capsys.readouterr().out)} == {"team-a"}


def test_public_api_is_small_and_deliberate():
    assert llm_operator.__all__ == [
        "API_VERSION", "GROUP", "VERSION", "FieldError", "InvalidSpec", "LLMDeploymentSpec", "LLMDeploymentStatus",
        "LLMRolloutSpec", "LLMRolloutStatus", "crd_manifests", "parse_duration", "parse_llmdeployment",
        "parse_llmrollout", "render",
    ]
    assert all(hasattr(llm_operator, name) for name in llm_operator.__all__)


def test_render_shows_the_steps_a_new_revision_goes_through(tmp_path, capsys):
    """Safe by default (issue 16): render names the effective steps, the default canary when none are written."""
    doc = yaml.safe_load((ROOT / "samples" / "llmdeployment-minimal.yaml").read_text())
    none = {**doc, "metadata": {**doc["metadata"], "name": "at-once"}, "spec": {**doc["spec"], "rollout": {"strategy": "none"}}}
    path = tmp_path / "two.yaml"
    path.write_text(yaml.safe_dump_all([doc, none]))
    assert main(["render", "-f", str(path)]) == 0
    comments = [line for line in capsys.readouterr().out.splitlines() if line.startswith("# ")]
    assert comments == [
        "# LLMDeployment default/qwen-small: a new revision rolls out by canary: setWeight 5, analysis 300s, setWeight 10, "
        "analysis 300s, setWeight 25, analysis 300s, setWeight 50, analysis 300s, then the switch",
        "# LLMDeployment default/at-once: a new revision rolls out by none: switched at once once ready, no analysis",
    ]


def test_an_empty_canary_is_refused_naming_the_field(tmp_path, capsys):
    doc = yaml.safe_load((ROOT / "samples" / "llmdeployment-minimal.yaml").read_text())
    doc["spec"]["rollout"] = {"steps": []}
    path = tmp_path / "empty.yaml"
    path.write_text(yaml.safe_dump(doc))
    assert main(["render", "-f", str(path)]) == 1
    err = capsys.readouterr().err
    assert "spec.rollout" in err and "strategy: none" in err
