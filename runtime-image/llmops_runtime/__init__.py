"""The serving image's entrypoint: fetch the model (MLflow registry or storage), check the GPUs with NVML,
exec vLLM's OpenAI server. See ``_entrypoint`` for the behaviour and ``_contract`` for the environment."""

from ._entrypoint import main

__all__ = ["main"]
