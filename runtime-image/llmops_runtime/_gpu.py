"""GPU preflight with NVML: fail fast, with a message that names the problem, before vLLM spends minutes
loading a model that cannot fit.

:func:`preflight` is pure over a small :class:`Nvml` boundary; :class:`PynvmlBackend` is the real one
(``nvidia-ml-py``), and tests use a fake.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Protocol

GIB = 1024 ** 3
#: vLLM's GPU kernels need compute capability 7.0 (Volta) or newer.
MIN_COMPUTE_CAPABILITY = (7, 0)


class NvmlUnavailable(Exception):
    """NVML could not be initialised: no NVIDIA driver in the container (or no GPU device mounted)."""


class PreflightError(Exception):
    """The pod cannot serve the model as configured; the message says why, with the numbers."""


@dataclass(frozen=True)
class Gpu:
    """One visible GPU: memory in bytes, compute capability (major, minor)."""

    index: int
    name: str
    total_bytes: int
    free_bytes: int
    compute_capability: tuple[int, int]


class Nvml(Protocol):
    """The part of NVML the preflight reads."""

    def gpus(self) -> list[Gpu]:
        """Every GPU visible to this process. Raises :class:`NvmlUnavailable` when there is no driver."""
        ...


class PynvmlBackend:
    """:class:`Nvml` over ``nvidia-ml-py`` (``import pynvml``)."""

    def gpus(self) -> list[Gpu]:
        try:
            import pynvml
        except ImportError as error:
            raise NvmlUnavailable(f"nvidia-ml-py is not installed ({error})") from None
        try:
            pynvml.nvmlInit()
        except pynvml.NVMLError as error:
            raise NvmlUnavailable(str(error)) from None
        try:
            out = []
            for index in range(pynvml.nvmlDeviceGetCount()):
                handle = pynvml.nvmlDeviceGetHandleByIndex(index)
                memory = pynvml.nvmlDeviceGetMemoryInfo(handle)
                name = pynvml.nvmlDeviceGetName(handle)
                out.append(Gpu(index=index, name=name.decode() if isinstance(name, bytes) else str(name),
                               total_bytes=int(memory.total), free_bytes=int(memory.free),
                               compute_capability=tuple(pynvml.nvmlDeviceGetCudaComputeCapability(handle))))
            return out
        finally:
            pynvml.nvmlShutdown()


@dataclass(frozen=True)
class Request:
    """What the pod asks of its GPUs: ``gpus`` from its resource limit (0: CPU device), the parallelism and
    ``gpu_memory_utilization`` (ratio 0..1) from vLLM's engine arguments, the model's size in bytes."""

    gpus: int
    tensor_parallel_size: int = 1
    pipeline_parallel_size: int = 1
    gpu_memory_utilization: float = 0.9
    model_bytes: int = 0


@dataclass(frozen=True)
class Report:
    """The preflight's findings, logged as one structured line."""

    device: str  # "cpu" | "cuda"
    gpus: list[Gpu] = field(default_factory=list)
    needed_gpus: int = 0
    weights_per_gpu_bytes: int = 0
    budget_per_gpu_bytes: int = 0

    def to_log(self) -> dict[str, Any]:
        return {
            "event": "gpu_preflight", "device": self.device, "visible_gpus": len(self.gpus), "needed_gpus": self.needed_gpus,
            "weights_per_gpu_gib": round(self.weights_per_gpu_bytes / GIB, 3),
            "budget_per_gpu_gib": round(self.budget_per_gpu_bytes / GIB, 3),
            "gpus": [{"index": g.index, "name": g.name, "total_gib": round(g.total_bytes / GIB, 2), "free_gib": round(g.free_bytes / GIB, 2),
                      "compute_capability": f"{g.compute_capability[0]}.{g.compute_capability[1]}"} for g in self.gpus],
        }


def _gib(n: float) -> str:
    return f"{n / GIB:.1f} GiB"


def preflight(request: Request, nvml: Nvml) -> Report:
    """Check that the visible GPUs can serve the model as configured.

    * ``gpus == 0``: the CPU device; NVML is not consulted.
    * No driver: :class:`PreflightError` ("no NVIDIA driver ...").
    * ``tensor_parallel_size x pipeline_parallel_size`` greater than the visible GPUs.
    * A GPU whose compute capability is below 7.0.
    * A GPU whose free memory is below ``gpu_memory_utilization x total`` (vLLM reserves that share at start;
      something else holds the rest).
    * Weights per GPU (``model_bytes / (tp x pp)``) above ``gpu_memory_utilization x total``: no room for
      even the weights, let alone the KV cache.

    Returns the :class:`Report`; raises :class:`PreflightError` naming the first problem found.
    """
    if request.gpus <= 0:
        return Report(device="cpu")
    try:
        gpus = nvml.gpus()
    except NvmlUnavailable as error:
        raise PreflightError(f"no NVIDIA driver: NVML could not be initialised ({error}); this pod asked for "
                             f"{request.gpus} GPU(s). Schedule it on a GPU node with the NVIDIA device plugin, or set "
                             f"resources.gpus: 0 to run on the CPU device.") from None
    needed = request.tensor_parallel_size * request.pipeline_parallel_size
    if needed > len(gpus):
        raise PreflightError(f"tensor-parallel-size {request.tensor_parallel_size} x pipeline-parallel-size "
                             f"{request.pipeline_parallel_size} needs {needed} GPUs; {len(gpus)} visible")
    used = gpus[:needed]
    old = [g for g in used if g.compute_capability < MIN_COMPUTE_CAPABILITY]
    if old:
        g = old[0]
        raise PreflightError(f"GPU {g.index} ({g.name}) has compute capability {g.compute_capability[0]}.{g.compute_capability[1]}; "
                             f"vLLM needs {MIN_COMPUTE_CAPABILITY[0]}.{MIN_COMPUTE_CAPABILITY[1]} or newer")
    util = request.gpu_memory_utilization
    weights = math.ceil(request.model_bytes / needed) if request.model_bytes else 0
    budget = min(int(g.total_bytes * util) for g in used)
    for g in used:
        want = int(g.total_bytes * util)
        if g.free_bytes < want:
            raise PreflightError(f"GPU {g.index} ({g.name}) has {_gib(g.free_bytes)} free of {_gib(g.total_bytes)}; "
                                 f"gpu-memory-utilization {util:g} wants {_gib(want)} (another process holds the rest; "
                                 f"lower gpu-memory-utilization or free the GPU)")
        if weights > want:
            raise PreflightError(f"the model's weights need {_gib(weights)} per GPU ({_gib(request.model_bytes)} over "
                                 f"{needed} GPUs) but gpu-memory-utilization {util:g} x {_gib(g.total_bytes)} on GPU {g.index} "
                                 f"leaves {_gib(want)}; raise tensor-parallel-size or use a quantized model")
    return Report(device="cuda", gpus=gpus, needed_gpus=needed, weights_per_gpu_bytes=weights, budget_per_gpu_bytes=budget)
