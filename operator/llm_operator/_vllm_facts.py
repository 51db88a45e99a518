"""Facts about vLLM 0.32.0, the version the serving image pins. Generated: do not edit.

Regenerate in the vLLM environment after changing the pin (a test fails until you do):
    .venv-vllm/bin/python operator/llm_operator/_vllmgen.py facts > operator/llm_operator/_vllm_facts.py
"""

#: ``vllm.__version__``.
VLLM_VERSION = "0.32.0"

#: ``vllm.model_executor.layers.quantization.QUANTIZATION_METHODS``: what ``--quantization`` accepts.
QUANTIZATION_METHODS = frozenset({
    "auto_awq", "auto_gptq", "awq", "awq_marlin", "compressed-tensors", "deepseek_v4_fp8", "experts_int8",
    "fbgemm_fp8", "fp8", "fp8_per_block", "fp8_per_channel", "fp8_per_tensor", "fp_quant", "gpt_oss_mxfp4",
    "gptq", "gptq_marlin", "humming", "inc", "int8_per_channel_weight_only", "modelopt", "modelopt_fp4",
    "modelopt_mixed", "modelopt_mxfp8", "moe_wna16", "mxfp4", "mxfp8", "nvfp4_per_token", "online", "quark",
    "torchao",
})

#: ``DEPRECATED_QUANTIZATION_METHODS``: refused at start unless ``--allow-deprecated-quantization`` is given.
DEPRECATED_QUANTIZATION_METHODS = frozenset({
    "fbgemm_fp8", "fp_quant",
})

#: ``vllm.v1.engine.FinishReason`` as the ``finished_reason`` label of ``vllm:request_success_total`` carries it.
FINISHED_REASONS = ("stop", "length", "abort", "error", "repetition")
