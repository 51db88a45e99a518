"""Fetch a model into the cache volume, at most once, never serving half a download.

The download goes into a sibling ``.<dir>.partial-<pid>`` directory, gets a completion marker
(:data:`_contract.COMPLETE_MARKER`: the URI, file count, bytes, seconds), and is renamed into place in one
step. A restarted pod finds the marker for the same URI and reuses the directory; a directory without the
marker (a pod killed mid-download, an older layout) or for another URI is removed and fetched again.

Downloads go through MLflow's artifact client (``mlflow.artifacts.download_artifacts``): ``models:/name/version``
and ``models:/name@alias`` (tracking URI and token from ``MLFLOW_TRACKING_URI`` / ``MLFLOW_TRACKING_TOKEN``),
``runs:/``, ``mlflow-artifacts:/``, ``s3://`` and ``gs://`` (boto3 and google-cloud-storage: the package's
``s3`` and ``gcs`` extras, which the image installs).
``hf://org/model`` is left to vLLM's own Hugging Face download into ``HF_HOME`` on the cache volume; a local
path (a mounted PVC) is served where it is.

LoRA adapters (:mod:`._adapters`) go through the same :func:`fetch` with ``what="adapter"`` (its events are then
``adapter_download_started`` ...) and one more fetched scheme: an ``hf://org/adapter`` is downloaded here
(:func:`hub_download`, ``huggingface_hub`` from the vLLM image) into the adapter's directory, so its
``adapter_config.json`` can be checked before vLLM starts.
"""

from __future__ import annotations

import json
import os
import pathlib
import shutil
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from . import _contract as c

FETCHED_SCHEMES = ("models:/", "runs:/", "mlflow-artifacts:/", "s3://", "gs://")
#: What an adapter's fetch downloads itself: the model's schemes and the Hugging Face Hub.
ADAPTER_SCHEMES = (*FETCHED_SCHEMES, "hf://")


@dataclass(frozen=True)
class Fetched:
    """Where the model is and how it got there: ``source`` is downloaded | reused | hub | local."""

    path: str
    source: str
    files: int = 0
    bytes: int = 0
    seconds: float = 0.0


def size_of(path: pathlib.Path) -> tuple[int, int]:
    """(files, bytes) under ``path``."""
    files = total = 0
    for root, _, names in os.walk(path):
        for name in names:
            try:
                total += (pathlib.Path(root) / name).stat().st_size
                files += 1
            except OSError:
                pass
    return files, total


def mlflow_download(uri: str, dest: pathlib.Path) -> pathlib.Path:
    """Download ``uri`` into ``dest`` with MLflow's artifact client; returns the local directory."""
    from mlflow.artifacts import download_artifacts

    return pathlib.Path(download_artifacts(artifact_uri=uri, dst_path=str(dest)))


def hub_download(uri: str, dest: pathlib.Path) -> pathlib.Path:
    """Download ``hf://org/repo`` (the repository's files, no cache links) into ``dest`` with ``huggingface_hub``
    (a vLLM dependency: the image has it); ``HF_TOKEN``, ``HF_ENDPOINT`` and ``HF_HUB_OFFLINE`` apply as usual."""
    from huggingface_hub import snapshot_download

    snapshot_download(repo_id=uri[len("hf://"):].strip("/"), local_dir=str(dest))
    shutil.rmtree(dest / ".cache", ignore_errors=True)  # the client's own bookkeeping beside the files
    return dest


def any_download(uri: str, dest: pathlib.Path) -> pathlib.Path:
    """:func:`hub_download` for ``hf://``, else :func:`mlflow_download`."""
    return hub_download(uri, dest) if uri.startswith("hf://") else mlflow_download(uri, dest)


def _marker(path: pathlib.Path) -> dict | None:
    try:
        return json.loads((path / c.COMPLETE_MARKER).read_text())
    except (OSError, ValueError):
        return None


def fetch(uri: str, dest: pathlib.Path, *, log: Callable[..., None],
          download: Callable[[str, pathlib.Path], pathlib.Path] = mlflow_download, progress_seconds: float = 5.0,
          schemes: tuple[str, ...] = FETCHED_SCHEMES, what: str = "model") -> Fetched:
    """Make ``uri`` available at ``dest`` (see the module docstring). ``log(event, **fields)`` gets the
    progress and the outcome (events ``<what>_download_started`` ...). Raises whatever the download raises;
    ``dest`` is then left untouched. ``schemes`` are the URIs downloaded; any other ``hf://`` is left to vLLM."""
    if uri.startswith("hf://") and not uri.startswith(schemes):
        return Fetched(path=uri[len("hf://"):].rstrip("/"), source="hub")
    if not uri.startswith(schemes):
        path = uri[len("file://"):] if uri.startswith("file://") else uri
        return Fetched(path=path, source="local")
    marker = _marker(dest)
    if marker is not None and marker.get("uri") == uri:
        log(f"{what}_cached", uri=uri, path=str(dest), files=marker.get("files"), bytes=marker.get("bytes"))
        return Fetched(path=str(dest), source="reused", files=marker.get("files", 0), bytes=marker.get("bytes", 0))
    dest.parent.mkdir(parents=True, exist_ok=True)
    for stale in dest.parent.glob(f".{dest.name}.partial-*"):
        shutil.rmtree(stale, ignore_errors=True)
    if dest.exists():
        log(f"{what}_cache_discarded", path=str(dest), reason="no completion marker" if marker is None else f"holds {marker.get('uri')}")
        shutil.rmtree(dest)
    partial = dest.parent / f".{dest.name}.partial-{os.getpid()}"
    partial.mkdir()
    started = time.monotonic()
    log(f"{what}_download_started", uri=uri, path=str(dest))
    done = threading.Event()

    def report() -> None:
        while not done.wait(progress_seconds):
            files, total = size_of(partial)
            log(f"{what}_download_progress", uri=uri, files=files, bytes=total, seconds=round(time.monotonic() - started, 1))

    reporter = threading.Thread(target=report, daemon=True)
    reporter.start()
    try:
        got = download(uri, partial)
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    finally:
        done.set()
        reporter.join()
    if got.resolve() != partial.resolve():  # the client put it in a subdirectory: that is the model
        inner = partial.parent / f"{partial.name}-inner"
        got.rename(inner)
        shutil.rmtree(partial)
        inner.rename(partial)
    files, total = size_of(partial)
    seconds = round(time.monotonic() - started, 3)
    (partial / c.COMPLETE_MARKER).write_text(json.dumps({"uri": uri, "files": files, "bytes": total, "seconds": seconds}))
    os.replace(partial, dest)
    log(f"{what}_download_finished", uri=uri, path=str(dest), files=files, bytes=total, seconds=seconds)
    return Fetched(path=str(dest), source="downloaded", files=files, bytes=total, seconds=seconds)
