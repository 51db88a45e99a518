import itertools

import pytest
import yaml

from llm_sandbox.cluster import ROOT, LocalApi, Operator, crd_files
from llm_sandbox.metrics import Prometheus, free_port

_namespaces = itertools.count(1)


@pytest.fixture(scope="session")
def api(tmp_path_factory):
    """The local API endpoint, with this project's CRDs applied the way a user installs them."""
    api = LocalApi(tmp_path_factory.mktemp("api"))
    for path in crd_files():
        api.apply_file(path)
    yield api
    api.close()


@pytest.fixture(scope="session")
def prometheus(tmp_path_factory):
    """A real Prometheus (Debian's package) on loopback, scraping every second."""
    server = Prometheus(tmp_path_factory.mktemp("prometheus")).start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def operator(api, prometheus, tmp_path_factory):
    port = free_port()
    op = Operator(api.kubeconfig, tmp_path_factory.mktemp("operator") / "operator.log",
                  env={"LLMOPS_PROMETHEUS_URL": prometheus.url, "LLMOPS_METRICS_PORT": str(port)}).start()
    op.metrics_url = f"http://127.0.0.1:{port}/metrics"
    yield op
    op.stop()


@pytest.fixture
def namespace(request) -> str:
    """A fresh namespace name per test (the local API needs no Namespace object)."""
    return f"t{next(_namespaces)}-{request.node.name[:40].lower().replace('_', '-').strip('-')}"


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    op = item.funcargs.get("operator") if hasattr(item, "funcargs") else None
    if report.when == "call" and report.failed and op is not None:
        report.sections.append(("operator log", op.log_tail()))


def sample(name: str) -> dict:
    return yaml.safe_load((ROOT / "samples" / f"{name}.yaml").read_text())
