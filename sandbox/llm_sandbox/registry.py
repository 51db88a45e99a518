"""A real MLflow tracking server on loopback (``mlflow server`` on sqlite, artifacts proxied by the server as
on a cluster), and a helper that registers model versions the way a training pipeline would: a run with
metrics and params, the model directory logged as its artifact, a version from it, an alias moved onto it.
"""

from __future__ import annotations

import logging
import os
import pathlib
import signal
import subprocess
import sys
from typing import Any

from .metrics import free_port, wait_until_serving


class MlflowServer:
    """``mlflow server`` with a sqlite backend store and ``--serve-artifacts`` (``mlflow-artifacts:`` URIs)."""

    def __init__(self, workdir: pathlib.Path, port: int | None = None):
        self.workdir = workdir
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 90) -> MlflowServer:
        self.workdir.mkdir(parents=True, exist_ok=True)
        with open(self.workdir / "mlflow.log", "ab") as log:  # the child has its own copy of the descriptor
            self.process = subprocess.Popen(
                [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", f"sqlite:///{self.workdir / 'mlflow.db'}",
                 "--artifacts-destination", str(self.workdir / "artifacts"), "--serve-artifacts",
                 "--host", "127.0.0.1", "--port", str(self.port), "--workers", "1"],
                stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
                # No job workers (MLflow 3 starts a pool of huey consumers, ~270 MB each): nothing here uses jobs.
                env={**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"})
        wait_until_serving(self.process, f"{self.url}/health", timeout, "mlflow server", self.workdir / "mlflow.log")
        return self

    def stop(self) -> None:
        """Stop the server and every worker it started (they share its process group)."""
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()
        self.process = None

    def client(self) -> Any:
        from mlflow import MlflowClient

        return MlflowClient(tracking_uri=self.url, registry_uri=self.url)


def register_version(client: Any, name: str, model_dir: pathlib.Path, *, metrics: dict[str, float],
                     params: dict[str, str] | None = None, alias: str | None = None, stage: str | None = None,
                     experiment: str = "llm-training") -> str:
    """Log ``model_dir`` as a training run's ``model`` artifact with ``metrics`` and ``params``, register it as a
    new version of ``name`` (created if needed), optionally point ``alias`` at it or move it to ``stage``.
    Returns the version."""
    from mlflow.exceptions import MlflowException

    os.environ.setdefault("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")  # no "View run at ..." per version
    logging.getLogger("mlflow.store.model_registry.abstract_store").setLevel(logging.WARNING)
    found = client.get_experiment_by_name(experiment)
    experiment_id = found.experiment_id if found else client.create_experiment(experiment)
    run = client.create_run(experiment_id)
    for key, value in metrics.items():
        client.log_metric(run.info.run_id, key, value)
    for key, value in (params or {}).items():
        client.log_param(run.info.run_id, key, value)
    client.log_artifacts(run.info.run_id, str(model_dir), artifact_path="model")
    client.set_terminated(run.info.run_id)
    try:
        client.create_registered_model(name)
    except MlflowException as error:
        if getattr(error, "error_code", "") != "RESOURCE_ALREADY_EXISTS":
            raise
    version = client.create_model_version(name, source=f"{run.info.artifact_uri}/model", run_id=run.info.run_id)
    if alias:
        client.set_registered_model_alias(name, alias, version.version)
    if stage:
        client.transition_model_version_stage(name, version.version, stage, archive_existing_versions=True)
    return str(version.version)


#: Run metrics of the stand-in versions: they pass the quality gate in samples/llmdeployment-mlflow.yaml.
SAMPLE_METRICS = {"accuracy": 0.91, "hallucination_rate": 0.04}


def seed_sample_models(client: Any, model_dir: pathlib.Path, name: str = "support-assistant", versions: int = 9) -> None:
    """Versions 1..``versions`` of ``name`` (what samples/ refer to: ``champion`` on 1, rollouts to 7, 8 and 9),
    registered once; calling it again adds nothing."""
    from mlflow.exceptions import MlflowException

    try:
        have = len(client.search_model_versions(f"name='{name}'"))
    except MlflowException:
        have = 0
    for number in range(have + 1, versions + 1):
        register_version(client, name, model_dir, metrics=SAMPLE_METRICS, params={"dataset": f"support-v{number}"},
                         alias="champion" if number == 1 else None)
