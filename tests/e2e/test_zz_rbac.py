"""RBAC least privilege, proven: every API call the operator made during this e2e session is granted by the
ClusterRole in manifests/, and the role grants nothing the operator never used. Runs last in the session
(file name), after the LLMDeployment, registry and rollout tests have driven the operator through its paths."""

import subprocess

import pytest
import yaml

from llm_sandbox.cluster import ROOT, TEST_AGENT, kubectl_binary
from tests.rbac import granted, needed

pytestmark = pytest.mark.e2e

#: Verbs the role grants that a short session may not exercise, with the reason.
UNEXERCISED_OK = {
    ("", "events", "patch"): "kopf aggregates repeated Events by patching their count",
}


def _role():
    out = subprocess.run([kubectl_binary(), "kustomize", str(ROOT / "manifests")], capture_output=True, text=True, check=True).stdout
    (role,) = [d for d in yaml.safe_load_all(out) if d and d["kind"] == "ClusterRole" and d["metadata"]["name"] == "llm-operator"]
    return role


def _calls(api):
    return {n for r in api.requests() if r.user_agent != TEST_AGENT and (n := needed(r.method, r.path, r.query))}


def test_every_call_the_operator_made_is_granted(api, operator):
    calls = _calls(api)
    assert len(calls) > 20  # the session drove the operator through its paths
    rules = _role()["rules"]
    missing = sorted(c for c in calls if not granted(rules, c))
    assert missing == [], f"calls the ClusterRole does not grant: {missing}"


def test_the_role_grants_nothing_unused(api, operator):
    calls = _calls(api)
    unused = []
    for rule in _role()["rules"]:
        for group in rule["apiGroups"]:
            for resource in rule["resources"]:
                for verb in rule["verbs"]:
                    if (group, resource, verb) not in calls and (group, resource, verb) not in UNEXERCISED_OK:
                        unused.append((group, resource, verb))
    assert unused == [], f"granted but never used in the e2e session: {unused}"
