"""The model registry over MLflow: :class:`MlflowRegistry` implements :class:`~llm_operator._registry.ModelRegistry`
with MLflow's own client (mlflow-skinny), its errors mapped to :class:`~llm_operator._registry.RegistryError`.
The only module that imports mlflow."""

from __future__ import annotations

import functools
import os
from collections.abc import Callable, Mapping
from typing import Any

from ._registry import ModelInfo, ModelNotFound, RegistryError, VersionInfo


class _TokenClient:
    """The calls :class:`MlflowRegistry` makes, straight on MLflow's REST stores with credentials of this registry's
    own: a tenant's tracking URI (an LLMDeployment's ``secretRef``) with the tenant's token or none.

    MLflow's client takes its credentials from the process environment on every request (``MLFLOW_TRACKING_TOKEN``,
    ``MLFLOW_TRACKING_USERNAME``/``PASSWORD``, an auth plugin, SigV4, a client certificate), and Basic credentials
    win over a token. A tenant's registry built that way would send the operator's own credentials to whatever URI
    the tenant's Secret names, and swapping the tenant's token into ``os.environ`` raced every thread reading the
    environment. MLflow's ``RestStore``s take a ``get_host_creds`` callable instead (the interface its store plugins
    use): here it carries the tenant's URI and token and, from the operator's environment, only how to verify TLS
    (``MLFLOW_TRACKING_INSECURE_TLS``, ``MLFLOW_TRACKING_SERVER_CERT_PATH``).
    """

    def __init__(self, tracking_uri: str, token: str | None):
        from mlflow.store.model_registry.rest_store import RestStore as RegistryStore
        from mlflow.store.tracking.rest_store import RestStore as TrackingStore
        from mlflow.utils.rest_utils import MlflowHostCreds

        insecure = os.environ.get("MLFLOW_TRACKING_INSECURE_TLS", "").lower() in ("1", "true")
        cert = os.environ.get("MLFLOW_TRACKING_SERVER_CERT_PATH") or None

        def creds() -> Any:
            return MlflowHostCreds(host=tracking_uri, token=token, ignore_tls_verification=insecure, server_cert_path=cert)

        self._registry, self._tracking = RegistryStore(creds), TrackingStore(creds)

    def get_registered_model(self, name: str) -> Any:
        return self._registry.get_registered_model(name)

    def get_model_version(self, name: str, version: str) -> Any:
        return self._registry.get_model_version(name, version)

    def get_run(self, run_id: str) -> Any:
        return self._tracking.get_run(run_id)

    def set_registered_model_alias(self, name: str, alias: str, version: str) -> None:
        self._registry.set_registered_model_alias(name, alias, version)

    def transition_model_version_stage(self, name: str, version: str, stage: str, archive_existing_versions: bool) -> Any:
        return self._registry.transition_model_version_stage(name, version, stage, archive_existing_versions)

    def set_model_version_tag(self, name: str, version: str, key: str, value: str) -> None:
        from mlflow.entities.model_registry import ModelVersionTag

        self._registry.set_model_version_tag(name, version, ModelVersionTag(key, value))


class MlflowRegistry:
    """:class:`ModelRegistry` over ``mlflow.MlflowClient`` (mlflow-skinny), or over MLflow's REST stores with
    credentials of its own when ``own_credentials`` (a tenant's ``secretRef``: see :class:`_TokenClient`).

    MLflow's own HTTP retries (7 by default, about 4 minutes) are turned off for this process unless set:
    a pass must not hang on a down registry; the operator's cache backs off and retries instead.
    """

    def __init__(self, tracking_uri: str, token: str | None = None, *, own_credentials: bool = False, timeout_seconds: int = 10):
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", str(timeout_seconds))
        from mlflow import MlflowClient  # deferred: importing mlflow takes a second

        self.tracking_uri = tracking_uri
        isolated = own_credentials or token is not None
        if isolated and not tracking_uri.startswith(("http://", "https://")):
            raise RegistryError(f"a tracking URI from a Secret must be http(s), not {tracking_uri.split(':', 1)[0]}:")
        # A tenant's registry (own_credentials: from an LLMDeployment's Secret) never sees the operator's credentials.
        self._client: Any = (_TokenClient(tracking_uri, token) if isolated
                             else MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri))

    def __repr__(self) -> str:  # never the token
        return f"MlflowRegistry({self.tracking_uri!r})"

    def _call(self, what: str, fn: Callable[[], Any]) -> Any:
        from mlflow.exceptions import MlflowException

        try:
            return fn()
        except MlflowException as error:
            code = getattr(error, "error_code", "")
            text = str(error).splitlines()[0][:300]
            if code in ("RESOURCE_DOES_NOT_EXIST", "NOT_FOUND"):
                raise ModelNotFound(f"{what}: {text}") from None
            raise RegistryError(f"{what}: {text}") from None
        except Exception as error:  # requests' connection errors and timeouts, surfaced as is by some paths
            raise RegistryError(f"{what}: {type(error).__name__}: {str(error)[:300]}") from None

    def get_model(self, name: str) -> ModelInfo:
        model = self._call(f"registered model {name!r}", lambda: self._client.get_registered_model(name))
        stages = {v.current_stage: str(v.version) for v in (model.latest_versions or [])
                  if v.current_stage and v.current_stage != "None"}
        return ModelInfo(name=model.name, aliases={k: str(v) for k, v in (model.aliases or {}).items()}, stages=stages)

    def get_version(self, name: str, version: str) -> VersionInfo:
        mv = self._call(f"model version {name}/{version}", lambda: self._client.get_model_version(name, version))
        metrics: dict[str, float] = {}
        params: dict[str, str] = {}
        if mv.run_id:
            run = self._call(f"run {mv.run_id} of {name}/{version}", lambda: self._client.get_run(mv.run_id))
            metrics, params = dict(run.data.metrics), dict(run.data.params)
        return VersionInfo(name=name, version=str(mv.version), source=mv.source or "", run_id=mv.run_id or None,
                           tags=dict(mv.tags or {}), metrics=metrics, params=params)

    def set_alias(self, name: str, alias: str, version: str) -> None:
        self._call(f"set alias {alias} of {name}", lambda: self._client.set_registered_model_alias(name, alias, version))

    def transition_stage(self, name: str, version: str, stage: str) -> None:
        self._call(f"transition {name}/{version} to {stage}", lambda: self._client.transition_model_version_stage(
            name, version, stage, archive_existing_versions=True))

    def set_tags(self, name: str, version: str, tags: Mapping[str, str]) -> None:
        for key, value in tags.items():
            self._call(f"tag {name}/{version}", functools.partial(self._client.set_model_version_tag, name, version, key, value))


