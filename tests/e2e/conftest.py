import itertools
import os
import pathlib
import re

import pytest
import yaml

from llm_sandbox.cluster import ROOT, Operator, start_cluster
from llm_sandbox.metrics import Prometheus, free_port
from llm_sandbox.registry import MlflowServer, seed_sample_models

_namespaces = itertools.count(1)


@pytest.fixture(scope="session")
def api(tmp_path_factory):
    """The real control plane (etcd, kube-apiserver, kube-controller-manager, kube-scheduler, kwok GPU nodes), with
    the upstream CRDs and the operator's install from manifests/ applied; the tests act as its admin."""
    cluster = start_cluster(tmp_path_factory.mktemp("cluster"))
    yield cluster
    if os.environ.get("LLMOPS_E2E_KEEP"):  # debugging: leave it up for kubectl (kill its processes by hand)
        print(f"\ncontrol plane left running: KUBECONFIG={cluster.kubeconfig}")
        return
    cluster.plane.stop()


@pytest.fixture(scope="session")
def prometheus(tmp_path_factory):
    """A real Prometheus (Debian's package) on loopback, scraping every second."""
    server = Prometheus(tmp_path_factory.mktemp("prometheus")).start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def mlflow(tmp_path_factory):
    """A real MLflow tracking server (sqlite, proxied artifacts) on loopback."""
    server = MlflowServer(tmp_path_factory.mktemp("mlflow")).start()
    yield server
    server.stop()


GOOD_METRICS = {"accuracy": 0.91, "hallucination_rate": 0.04}


@pytest.fixture(scope="session")
def model_dir(tmp_path_factory):
    """A stand-in model directory (the registry stores it; nothing loads it in these tests)."""
    path = tmp_path_factory.mktemp("model")
    (path / "config.json").write_text('{"architectures": ["LlamaForCausalLM"]}')
    return path


@pytest.fixture(scope="session")
def support_assistant(mlflow, model_dir):
    """``support-assistant`` versions 1..9, ``champion`` on 1, and the LoRA adapter ``support-lora`` version 1 behind
    ``champion``: what samples/ refer to."""
    seed_sample_models(mlflow.client(), model_dir)
    seed_sample_models(mlflow.client(), model_dir, name="support-lora", versions=1)
    return "1"


def mlflow_secret(namespace: str, url: str, name: str = "mlflow-credentials") -> dict:
    """The Secret an LLMDeployment's ``spec.model.mlflow.secretRef`` names."""
    return {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": name, "namespace": namespace},
            "type": "Opaque", "stringData": {"MLFLOW_TRACKING_URI": url, "MLFLOW_TRACKING_TOKEN": "e2e-token-not-logged"}}


@pytest.fixture(scope="session")
def operator(api, prometheus, mlflow, tmp_path_factory):
    """The operator process under the ServiceAccount and ClusterRole manifests/ ships (a TokenRequest token)."""
    port = free_port()
    op = Operator(api.operator_kubeconfig(), tmp_path_factory.mktemp("operator") / "operator.log",
                  env={"LLMOPS_PROMETHEUS_URL": prometheus.url, "LLMOPS_METRICS_PORT": str(port),
                       "MLFLOW_TRACKING_URI": mlflow.url, "LLMOPS_REGISTRY_POLL_SECONDS": "1"}).start()
    op.metrics_url = f"http://127.0.0.1:{port}/metrics"
    yield op
    op.stop()


@pytest.fixture(scope="session")
def vllm_python():
    """The Python of the vLLM (CPU build) environment that ``make vllm-env`` builds."""
    # Absolute, not resolved: the venv's python is a symlink, and resolving it would leave the venv.
    path = os.path.abspath(os.environ.get("LLMOPS_VLLM_PYTHON", str(ROOT / ".venv-vllm" / "bin" / "python")))
    if not pathlib.Path(path).exists():
        pytest.fail(f"no vLLM environment at {path}: run `make vllm-env` (make test does)")
    return path


@pytest.fixture
def namespace(api, request):
    """A fresh serving namespace per test, with the Pod Security Standard `restricted` enforced."""
    name = re.sub(r"[^a-z0-9-]+", "-", f"t{next(_namespaces)}-{request.node.name[:40].lower().replace('_', '-')}").strip("-")
    yield api.namespace(name)
    # The GPUs are finite (the scheduler says "Insufficient nvidia.com/gpu" otherwise): the namespace controller
    # deletes what the test left, pods included.
    api.delete_namespace(name)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    op = item.funcargs.get("operator") if hasattr(item, "funcargs") else None
    if report.when == "call" and report.failed and op is not None:
        report.sections.append(("operator log", op.log_tail()))
    api = item.funcargs.get("api") if hasattr(item, "funcargs") else None
    if report.when == "call" and report.failed and api is not None and hasattr(api, "plane"):
        report.sections.append(("control plane logs", api.plane.logs(10)))


def sample(name: str) -> dict:
    return yaml.safe_load((ROOT / "samples" / f"{name}.yaml").read_text())
