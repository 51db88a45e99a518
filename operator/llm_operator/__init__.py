"""llm-operator: serve large language models with vLLM on Kubernetes, and roll new model revisions out
by SLO-driven canary analysis.

The public API is small and checked by a test (``__all__``): the custom resources' types, rendering,
the CRD generator and validation. Everything else lives in private modules and may change.
"""

from ._api import API_VERSION, GROUP, VERSION, LLMDeploymentSpec, LLMDeploymentStatus, LLMRolloutSpec, LLMRolloutStatus, parse_duration
from ._crdgen import crd_manifests
from ._render import render
from ._validation import FieldError, InvalidSpec, parse_llmdeployment, parse_llmrollout

__version__ = "0.1.0"

__all__ = [
    "API_VERSION",
    "GROUP",
    "VERSION",
    "FieldError",
    "InvalidSpec",
    "LLMDeploymentSpec",
    "LLMDeploymentStatus",
    "LLMRolloutSpec",
    "LLMRolloutStatus",
    "crd_manifests",
    "parse_duration",
    "parse_llmdeployment",
    "parse_llmrollout",
    "render",
]
