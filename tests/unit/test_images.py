"""The two Dockerfiles (no Docker engine here to build them): parsed with dockerfile-parse and checked against
what the rest of the repository expects of them: pinned bases, a numeric non-root user that matches the pod
specs, exec-form entrypoints (signals reach the process), COPY sources that exist, the operator image with
runtime dependencies only, the serving image agreeing with the operator's contract."""

import json
import pathlib
import re
import tomllib

import pytest
import yaml
from dockerfile_parse import DockerfileParser
from packaging.requirements import Requirement

from llm_operator import _builders as b
from llm_operator import _contract as c
from llm_operator._api import DEFAULT_RUNTIME_IMAGE, LLMDeploymentSpec
from llmops_runtime._fetch import FETCHED_SCHEMES
from tests.conftest import ROOT

OPERATOR = ROOT / "Dockerfile"
RUNTIME = ROOT / "runtime-image" / "Dockerfile"


def parse(path: pathlib.Path) -> DockerfileParser:
    return DockerfileParser(path=str(path))


def instructions(dockerfile: DockerfileParser, name: str) -> list[str]:
    return [i["value"] for i in dockerfile.structure if i["instruction"] == name]


def final_stage(dockerfile: DockerfileParser) -> list[dict]:
    last_from = max(n for n, i in enumerate(dockerfile.structure) if i["instruction"] == "FROM")
    return dockerfile.structure[last_from:]


def final_user(dockerfile: DockerfileParser) -> tuple[str, str]:
    """(uid, gid) of the final stage's last USER; AssertionError when it sets none."""
    users = [i["value"] for i in final_stage(dockerfile) if i["instruction"] == "USER"]
    assert users, "the final stage sets no USER"
    uid, _, gid = users[-1].partition(":")
    return uid, gid


def pyproject(path: pathlib.Path) -> dict:
    return tomllib.loads(path.read_text())


@pytest.mark.parametrize("path", [OPERATOR, RUNTIME], ids=["operator", "runtime"])
def test_bases_are_pinned_by_tag_or_digest(path):
    images = parse(path).parent_images
    assert images
    for image in images:
        name, _, tag = image.partition("@")[0].rpartition(":")
        assert "@sha256:" in image or (name and tag and tag != "latest" and re.search(r"\d", tag)), image


@pytest.mark.parametrize("path", [OPERATOR, RUNTIME], ids=["operator", "runtime"])
def test_final_user_is_numeric_and_not_root(path):
    uid, gid = final_user(parse(path))
    assert uid.isdigit() and int(uid) > 0 and (not gid or gid.isdigit())


@pytest.mark.parametrize("path", [OPERATOR, RUNTIME], ids=["operator", "runtime"])
def test_entrypoint_is_exec_form(path):
    (entrypoint,) = instructions(parse(path), "ENTRYPOINT")
    assert isinstance(json.loads(entrypoint), list)  # shell form would put /bin/sh between SIGTERM and the process


@pytest.mark.parametrize("path", [OPERATOR, RUNTIME], ids=["operator", "runtime"])
def test_copy_sources_exist_in_the_build_context(path):
    """Both build from the repository root (the runtime image shares the operator's contract module)."""
    for value in instructions(parse(path), "COPY"):
        if value.startswith("--from="):
            continue
        *sources, _ = value.split()
        for source in sources:
            assert (ROOT / source).exists(), f"{path.relative_to(ROOT)}: COPY {source}"


def test_operator_image_is_multi_stage_and_ships_only_the_built_environment():
    dockerfile = parse(OPERATOR)
    assert dockerfile.is_multistage
    copies = [i["value"] for i in final_stage(dockerfile) if i["instruction"] == "COPY"]
    assert copies and all(v.startswith("--from=") for v in copies)
    assert not [i for i in final_stage(dockerfile) if i["instruction"] == "RUN"]


def test_operator_image_runs_a_declared_console_script_as_the_manifests_user():
    project = pyproject(ROOT / "pyproject.toml")["project"]
    command = json.loads(instructions(parse(OPERATOR), "ENTRYPOINT")[0])
    assert command[0] in project["scripts"]
    uid, gid = final_user(parse(OPERATOR))
    deployment = yaml.safe_load((ROOT / "manifests/operator/deployment.yaml").read_text())
    context = deployment["spec"]["template"]["spec"]["securityContext"]
    assert (context["runAsUser"], context["runAsGroup"]) == (int(uid), int(gid))


def test_operator_image_depends_on_mlflow_skinny_not_mlflow():
    names = {Requirement(r).name for r in pyproject(ROOT / "pyproject.toml")["project"]["dependencies"]}
    assert "mlflow-skinny" in names and "mlflow" not in names


def test_serving_image_agrees_with_the_operator():
    dockerfile = parse(RUNTIME)
    # The entrypoint is the command the operator's Deployments run (they set it explicitly as well).
    assert json.loads(instructions(dockerfile, "ENTRYPOINT")[0]) == c.RUNTIME_COMMAND
    spec = LLMDeploymentSpec.model_validate({"model": {"uri": "s3://bucket/chat"}})
    pod = b.build_deployment("chat", "ml", spec, b.make_revision(spec, b.static_model(spec)), 1)["spec"]["template"]["spec"]
    assert pod["containers"][0]["command"] == c.RUNTIME_COMMAND
    # The image's user is the pod's.
    uid, gid = final_user(dockerfile)
    assert (int(uid), int(gid)) == (c.RUNTIME_UID, c.RUNTIME_UID) == (pod["securityContext"]["runAsUser"], pod["securityContext"]["fsGroup"])
    # The vLLM base is the version the default image is named after.
    (base,) = dockerfile.parent_images
    assert DEFAULT_RUNTIME_IMAGE.endswith("-vllm" + base.rpartition(":v")[2]), (base, DEFAULT_RUNTIME_IMAGE)
    # The shared contract module is copied into the package (it is a link in the repository).
    assert "operator/llm_operator/_contract.py ./llmops_runtime/_contract.py" in instructions(dockerfile, "COPY")


def test_serving_image_installs_a_client_for_every_object_store_it_fetches_from():
    extras = pyproject(ROOT / "runtime-image" / "pyproject.toml")["project"]["optional-dependencies"]
    needed = {"s3://": ("s3", "boto3", "boto3"), "gs://": ("gcs", "google-cloud-storage", "google.cloud.storage")}
    assert {s for s in FETCHED_SCHEMES if "://" in s} == set(needed)
    (run,) = [v for v in instructions(parse(RUNTIME), "RUN") if "pip install" in v]
    installed = re.search(r'pip install [^&]*"\.\[([^\]]*)\]"', run)
    assert installed, run
    for extra, distribution, module in needed.values():
        assert extra in installed.group(1).split(",")
        assert distribution in {Requirement(r).name for r in extras[extra]}
        assert module in run  # the build imports it, so a broken install fails the build, not the first pod
