"""Bad input: every case names the field; the CEL rules behave as the API server would apply them."""

import copy

import pytest

from llm_operator import InvalidSpec, parse_duration, parse_llmdeployment, parse_llmrollout
from llm_operator._api import LLMDeployment
from llm_operator._validation import cel_errors


def _llmd(**spec) -> dict:
    base = {"model": {"uri": "hf://org/model"}, "resources": {"gpus": 4}}
    base.update(spec)
    return {"apiVersion": "llmops.dev/v1alpha1", "kind": "LLMDeployment", "metadata": {"name": "m", "namespace": "ns"}, "spec": base}


def test_every_sample_is_valid(samples):
    for name, doc in samples.items():
        parse = parse_llmrollout if doc["kind"] == "LLMRollout" else parse_llmdeployment
        assert parse(doc) is not None, name


INVALID = [
    # (case, spec overrides, field path, words in the message)
    ("tp does not divide gpus", {"runtime": {"tensorParallelSize": 3}},
     "spec.runtime.tensorParallelSize", "tensorParallelSize 3 x pipelineParallelSize 1 must divide resources.gpus (4 per replica"),
    ("tp x pp exceeds gpus", {"runtime": {"tensorParallelSize": 4, "pipelineParallelSize": 2}}, "spec.runtime.tensorParallelSize", "divide"),
    ("tp on CPU", {"resources": {"gpus": 0}, "runtime": {"tensorParallelSize": 2}},
     "spec.runtime.tensorParallelSize", "tensorParallelSize 2 x pipelineParallelSize 1 must divide resources.gpus (0 per replica"),
    ("zero maxModelLen", {"runtime": {"maxModelLen": 0}}, "spec.runtime.maxModelLen", "greater than or equal to 1"),
    ("negative maxModelLen", {"runtime": {"maxModelLen": -4096}}, "spec.runtime.maxModelLen", "got -4096"),
    ("min above max replicas", {"autoscaling": {"minReplicas": 5, "maxReplicas": 2}}, "spec.autoscaling.minReplicas", "must not exceed maxReplicas"),
    ("unknown quantization", {"runtime": {"quantization": "int3-magic"}}, "spec.runtime.quantization", "unknown quantization 'int3-magic'"),
    ("scale to zero on HPA", {"autoscaling": {"minReplicas": 0, "maxReplicas": 2}}, "spec.autoscaling.minReplicas", "needs provider keda"),
    ("keda without server", {"autoscaling": {"provider": "keda", "maxReplicas": 2}}, "spec.autoscaling.keda", "keda.serverAddress"),
    ("uri and mlflow", {"model": {"uri": "hf://a/b", "mlflow": {"name": "x", "version": "1"}}}, "spec.model", "exactly one of mlflow or uri"),
    ("neither uri nor mlflow", {"model": {"servedModelName": "x"}}, "spec.model", "exactly one of mlflow or uri"),
    ("alias and version", {"model": {"mlflow": {"name": "x", "alias": "champion", "version": "3"}}},
     "spec.model.mlflow", "exactly one of alias, stage or version"),
    ("bad uri scheme", {"model": {"uri": "ftp://host/model"}}, "spec.model.uri", "should match pattern"),
    ("gpu memory ratio above 1", {"runtime": {"gpuMemoryUtilization": 1.5}}, "spec.runtime.gpuMemoryUtilization", "less than or equal to 1"),
    ("unknown field", {"runtime": {"maxModelLength": 4096}}, "spec.runtime.maxModelLength", "Extra inputs are not permitted"),
    ("step with two actions", {"rollout": {"steps": [{"setWeight": 10, "pause": {}}]}}, "spec.rollout.steps[0]", "exactly one of setWeight"),
    ("weight above 100", {"rollout": {"steps": [{"setWeight": 120}]}}, "spec.rollout.steps[0].setWeight", "less than or equal to 100"),
    ("bad duration", {"rollout": {"steps": [{"pause": {"duration": "5 minutes"}}]}}, "spec.rollout.steps[0].pause.duration", "pattern"),
    ("metric with builtin and query", {"rollout": {"analysis": {"metrics": [{"name": "m", "builtin": "errorRatio", "query": "up"}]}}},
     "spec.rollout.analysis.metrics[0]", "exactly one of builtin or query"),
    # serving policy: auth, resilience, placement
    ("api key on the command line", {"runtime": {"extraArgs": ["--port-retries", "3", "--api-key", "k"]}},
     "spec.runtime.extraArgs[2]", "use spec.auth.apiKey.secretRef"),
    ("api key on the command line, one argument", {"runtime": {"extraArgs": ["--api-key=k"]}}, "spec.runtime.extraArgs[0]", "vLLM's log"),
    ("api key twice", {"auth": {"apiKey": {"secretRef": {"name": "key"}}}, "runtime": {"env": [{"name": "VLLM_API_KEY", "value": "k"}]}},
     "spec.runtime.env", "VLLM_API_KEY comes from auth.apiKey.secretRef"),
    ("api key and jwt", {"auth": {"apiKey": {"secretRef": {"name": "key"}}, "jwt": [{"issuer": "i", "jwksUri": "https://i/jwks"}]}},
     "spec.auth.jwt", "both read the Authorization header"),
    ("allow rule naming nobody", {"auth": {"allow": [{"principals": ["cluster.local/ns/a/sa/b"]}, {}]}},
     "spec.auth.allow[1]", "at least one of principals, namespaces"),
    ("jwks uri not a URL", {"auth": {"jwt": [{"issuer": "i", "jwksUri": "file:///keys"}]}}, "spec.auth.jwt[0].jwksUri", "pattern"),
    ("a nested claim", {"auth": {"allow": [{"claims": [{"claim": "realm[roles]", "values": ["x"]}]}]}},
     "spec.auth.allow[0].claims[0].claim", "pattern"),
    ("mtls mode unknown", {"auth": {"mtls": "DISABLE"}}, "spec.auth.mtls", "'STRICT' or 'PERMISSIVE'"),
    ("zero timeout", {"traffic": {"timeout": "0s"}}, "spec.traffic.timeout", "at least 1ms"),
    ("retry on any 5xx", {"traffic": {"retries": {"retryOn": ["connect-failure", "5xx"]}}}, "spec.traffic.retries.retryOn[1]",
     "'reset-before-request' or '503'"),
    ("retry on nothing", {"traffic": {"retries": {"retryOn": []}}}, "spec.traffic.retries.retryOn", "at least 1 item"),
    ("negative ejection threshold", {"traffic": {"outlierDetection": {"consecutive5xxErrors": -1}}},
     "spec.traffic.outlierDetection.consecutive5xxErrors", "greater than or equal to 0"),
    ("zero connection pool", {"traffic": {"connectionPool": {"maxRequests": 0}}}, "spec.traffic.connectionPool.maxRequests",
     "greater than or equal to 1"),
    ("spread skew zero", {"resources": {"topologySpread": [{"topologyKey": "kubernetes.io/hostname", "maxSkew": 0}]}},
     "spec.resources.topologySpread[0].maxSkew", "greater than or equal to 1"),
    ("spread without a key", {"resources": {"topologySpread": [{"whenUnsatisfiable": "DoNotSchedule"}]}},
     "spec.resources.topologySpread[0].topologyKey", "Field required"),
    ("empty gpu product", {"resources": {"gpuProducts": [""]}}, "spec.resources.gpuProducts[0]", "at least 1 character"),
    # the Gateway API router (issue 18)
    ("gateway api without its parents", {"traffic": {"router": "gatewayAPI"}}, "spec.traffic.gatewayAPI",
     "router gatewayAPI needs gatewayAPI.parentRefs"),
    ("gateway api with no parent", {"traffic": {"router": "gatewayAPI", "gatewayAPI": {"parentRefs": []}}},
     "spec.traffic.gatewayAPI.parentRefs", "at least 1 item"),
    ("gateway api timeout with a fraction", {"traffic": {"router": "gatewayAPI", "timeout": "1.5s",
                                                         "gatewayAPI": {"parentRefs": [{"name": "gw"}]}}},
     "spec.traffic.timeout", "timeout is a Gateway API duration"),
    ("one endpoint picker for both pools", {"traffic": {"router": "gatewayAPI", "gatewayAPI": {
        "parentRefs": [{"name": "gw"}], "endpointPicker": {"stable": {"name": "epp"}, "canary": {"name": "epp"}}}}},
     "spec.traffic.gatewayAPI.endpointPicker.canary.name", "one EPP serves one pool"),
    ("unknown router", {"traffic": {"router": "linkerd"}}, "spec.traffic.router", "'istio' or 'gatewayAPI'"),
    ("gateway hostname in capitals", {"traffic": {"router": "gatewayAPI", "gatewayAPI": {"parentRefs": [{"name": "gw"}],
                                                                                          "hostnames": ["LLM.example.com"]}}},
     "spec.traffic.gatewayAPI.hostnames[0]", "pattern"),
    ("gateway hostname with a port", {"traffic": {"router": "gatewayAPI", "gatewayAPI": {"parentRefs": [{"name": "gw"}],
                                                                                          "hostnames": ["llm.example.com:443"]}}},
     "spec.traffic.gatewayAPI.hostnames[0]", "pattern"),
    ("the same parent twice", {"traffic": {"router": "gatewayAPI", "gatewayAPI": {"parentRefs": [{"name": "gw"}, {"name": "gw"}]}}},
     "spec.traffic.gatewayAPI", "distinct parent"),
    ("the same parent, its group written once", {"traffic": {"router": "gatewayAPI", "gatewayAPI": {"parentRefs": [
        {"name": "gw"}, {"name": "gw", "group": "gateway.networking.k8s.io"}]}}}, "spec.traffic.gatewayAPI", "distinct parent"),
    ("a parent group in capitals", {"traffic": {"router": "gatewayAPI", "gatewayAPI": {"parentRefs": [{"name": "gw", "group": "Gateway_X"}]}}},
     "spec.traffic.gatewayAPI.parentRefs[0].group", "pattern"),
]


@pytest.mark.parametrize("case,spec,path,words", INVALID, ids=[c[0] for c in INVALID])
def test_invalid_spec_names_the_field(case, spec, path, words):
    with pytest.raises(InvalidSpec) as info:
        parse_llmdeployment(_llmd(**spec))
    matching = [e for e in info.value.errors if e.path == path]
    assert matching, f"no error at {path}: {info.value}"
    assert any(words in e.message for e in matching), str(info.value)
    assert str(info.value).startswith(min(str(e) for e in info.value.errors)[:10])


# vLLM 0.32's own list (vllm.model_executor.layers.quantization), as _vllm_facts records it; the vllm-marked
# test_vllm.py checks that record against the installed vLLM.
QUANTIZATIONS = [
    # (method, accepted)
    ("awq_marlin", True), ("fp8", True), ("compressed-tensors", True),
    ("mxfp8", True), ("fp8_per_block", True), ("gpt_oss_mxfp4", True), ("modelopt_mixed", True),  # new in 0.32
    ("bitsandbytes", False), ("gguf", False), ("marlin", False), ("deepspeedfp", False), ("hqq", False),  # gone
    ("aqlm", False), ("gptq_marlin_24", False), ("tpu_int8", False), ("ipex", False), ("auto-round", False),
]


@pytest.mark.parametrize("method,accepted", QUANTIZATIONS, ids=[m for m, _ in QUANTIZATIONS])
def test_quantization_methods_are_vllm_032s(method, accepted):
    body = _llmd(runtime={"quantization": method})
    if accepted:
        assert parse_llmdeployment(body).runtime.quantization == method
        return
    with pytest.raises(InvalidSpec) as info:
        parse_llmdeployment(body)
    (error,) = info.value.errors
    assert error.path == "spec.runtime.quantization"
    prefix = f"unknown quantization {method!r}; vLLM 0.32.0 knows "
    assert error.message.startswith(prefix)
    known = error.message[len(prefix):].split(", ")
    assert "mxfp8" in known and "gguf" not in known


def test_deprecated_quantization_needs_vllms_opt_in():
    with pytest.raises(InvalidSpec) as info:
        parse_llmdeployment(_llmd(runtime={"quantization": "fbgemm_fp8"}))
    (error,) = info.value.errors
    assert error.path == "spec.runtime.quantization"
    assert "deprecated in vLLM 0.32.0" in error.message and "--allow-deprecated-quantization" in error.message
    allowed = _llmd(runtime={"quantization": "fbgemm_fp8", "extraArgs": ["--allow-deprecated-quantization"]})
    assert parse_llmdeployment(allowed).runtime.quantization == "fbgemm_fp8"


def test_a_rollouts_target_runtime_gets_the_same_quantization_check():
    body = {"metadata": {"name": "r"}, "spec": {"deploymentName": "d", "target": {"model": {"version": "2"},
                                                                              "runtime": {"quantization": "gguf"}}}}
    with pytest.raises(InvalidSpec) as info:
        parse_llmrollout(body)
    (error,) = info.value.errors
    assert error.path == "spec.target.runtime.quantization" and "unknown quantization 'gguf'; vLLM 0.32.0" in error.message
    body["spec"]["target"]["runtime"]["quantization"] = "mxfp8"
    assert parse_llmrollout(body).target.runtime.quantization == "mxfp8"


def test_name_too_long_for_revision_labels():
    body = _llmd()
    body["metadata"]["name"] = "x" * 53
    with pytest.raises(InvalidSpec, match=r"metadata.name: must be at most 52 characters"):
        parse_llmdeployment(body)


# Valid LLMDeployment names (a custom resource's name need only be a DNS-1123 subdomain) that cannot name a Service
# (a DNS-1035 label): refused with the message kube-apiserver 1.37 gives for them, measured with this CRD.
NAMES = [
    # (name, accepted)
    ("llama-3-1-8b", True), ("chat-7b", True), ("a", True), ("x" * 52, True),
    ("llama-3.1-8b", False), ("7b-chat", False), ("chat.v2", False), ("x" * 53, False),
]


@pytest.mark.parametrize("name,accepted", NAMES, ids=[n[:20] for n, _ in NAMES])
def test_names_that_cannot_name_the_services_are_refused(name, accepted):
    body = _llmd()
    body["metadata"]["name"] = name
    if accepted:
        assert parse_llmdeployment(body) is not None
        return
    with pytest.raises(InvalidSpec) as info:
        parse_llmdeployment(body)
    (error,) = info.value.errors
    assert error.path == "metadata.name"
    assert ("must be a DNS-1035 label" in error.message and "Services are named after it" in error.message) or \
        error.message.startswith("must be at most 52 characters")


def test_an_object_stored_before_the_name_rule_creates_nothing():
    """kube-apiserver lets such an object stay (the rule on metadata.name is ratcheted): the operator refuses it as
    InvalidSpec before any child exists, so no GPU pod is created that no Service could route to."""
    from llm_operator._planner import Observed, plan_llmdeployment, spec_or_error

    body = _llmd()
    body["metadata"].update(name="llama-3.1-8b", generation=1)
    plan = plan_llmdeployment(body, Observed(), "2026-11-21T10:00:00Z", spec=spec_or_error(body), resolved=None)
    assert plan.actions == []
    degraded = next(c for c in plan.status["conditions"] if c["type"] == "Degraded")
    assert (degraded["status"], degraded["reason"]) == ("True", "InvalidSpec") and degraded["message"].startswith("metadata.name: ")
    assert [(e.type, e.reason) for e in plan.events] == [("Warning", "InvalidSpec")]


# runtime.env entries named like the operator's own: (case, spec, path or None when accepted, words)
ENV = [
    ("a default is overridable", {"runtime": {"env": [{"name": "HF_HOME", "value": "/cache/hf"}, {"name": "VLLM_NO_USAGE_STATS", "value": "0"}]}},
     None, ""),
    ("registry env without secretRef", {"runtime": {"env": [{"name": "MLFLOW_TRACKING_URI", "value": "http://mlflow"}]}}, None, ""),
    ("the runtime contract", {"runtime": {"env": [{"name": "LLMOPS_MODEL_URI", "value": "s3://x"}]}},
     "spec.runtime.env[0].name", "LLMOPS_* variables are the operator's contract"),
    ("any LLMOPS_ name", {"runtime": {"env": [{"name": "A", "value": "1"}, {"name": "LLMOPS_FUTURE", "value": "1"}]}},
     "spec.runtime.env[1].name", "use another name"),
    ("twice the same name", {"runtime": {"env": [{"name": "A", "value": "1"}, {"name": "B"}, {"name": "A", "value": "2"}]}},
     "spec.runtime.env[2]", "duplicate name 'A' (env[0] has it too)"),
    ("registry env with secretRef", {"model": {"mlflow": {"name": "m", "alias": "champion", "secretRef": {"name": "creds"}}},
                                     "runtime": {"env": [{"name": "MLFLOW_TRACKING_TOKEN", "value": "t"}]}},
     "spec.runtime.env", "come from model.mlflow.secretRef"),
]


@pytest.mark.parametrize("case,spec,path,words", ENV, ids=[c[0] for c in ENV])
def test_runtime_env_names_that_collide_with_the_operators(case, spec, path, words):
    body = _llmd(**spec)
    if path is None:
        assert parse_llmdeployment(body) is not None
        return
    with pytest.raises(InvalidSpec) as info:
        parse_llmdeployment(body)
    assert [(e.path, words in e.message) for e in info.value.errors] == [(path, True)], str(info.value)


def test_a_rollout_target_runtime_gets_the_same_env_checks():
    body = {"metadata": {"name": "r"}, "spec": {"deploymentName": "d", "target": {"model": {"uri": "hf://a/b"}, "runtime": {
        "env": [{"name": "LLMOPS_GPUS", "value": "8"}, {"name": "A"}, {"name": "A"}]}}}}
    with pytest.raises(InvalidSpec) as info:
        parse_llmrollout(body)
    assert [e.path for e in info.value.errors] == ["spec.target.runtime.env[0].name", "spec.target.runtime.env[2]"]


def test_a_rollout_target_runtime_cannot_put_the_api_key_on_the_command_line():
    body = {"metadata": {"name": "r"}, "spec": {"deploymentName": "d", "target": {"model": {"uri": "hf://a/b"}, "runtime": {
        "extraArgs": ["--api-key", "k"]}}}}
    with pytest.raises(InvalidSpec) as info:
        parse_llmrollout(body)
    assert [e.path for e in info.value.errors] == ["spec.target.runtime.extraArgs[0]"]


def test_all_errors_are_reported_together():
    body = _llmd(runtime={"tensorParallelSize": 3, "maxModelLen": 0, "quantization": "nope"})
    with pytest.raises(InvalidSpec) as info:
        parse_llmdeployment(body)
    assert {e.path for e in info.value.errors} == {
        "spec.runtime.tensorParallelSize", "spec.runtime.maxModelLen", "spec.runtime.quantization"}


def test_cel_sees_only_what_the_user_wrote():
    # gpus unset means 1 for the operator; the CEL rule reads it the same way.
    assert cel_errors(LLMDeployment, _llmd(resources={}, runtime={"tensorParallelSize": 1})) == []
    assert [e.path for e in cel_errors(LLMDeployment, _llmd(resources={}, runtime={"tensorParallelSize": 2}))] == [
        "spec.runtime.tensorParallelSize"]


def test_rollout_target_needs_exactly_one_model():
    body = {"metadata": {"name": "r"}, "spec": {"deploymentName": "d", "target": {"model": {}}}}
    with pytest.raises(InvalidSpec, match=r"spec.target.model: exactly one of version or uri"):
        parse_llmrollout(body)


def test_missing_spec():
    with pytest.raises(InvalidSpec, match="spec: required"):
        parse_llmdeployment({"metadata": {"name": "m"}})


def test_parse_is_pure():
    body = _llmd(runtime={"maxModelLen": 4096})
    before = copy.deepcopy(body)
    parse_llmdeployment(body)
    assert body == before


@pytest.mark.parametrize("text,seconds", [("30s", 30), ("5m", 300), ("1h30m", 5400), ("250ms", 0.25), ("1.5h", 5400)])
def test_parse_duration(text, seconds):
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "5", "5 m", "1d", "-1s"])
def test_parse_duration_rejects(text):
    with pytest.raises(ValueError, match="not a duration"):
        parse_duration(text)
