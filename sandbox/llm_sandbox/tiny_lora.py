"""Generate a tiny LoRA adapter for the tiny Llama (:mod:`llm_sandbox.tiny_model`) with PEFT (no hub is reachable here).

Random, non-zero weights (PEFT starts ``lora_B`` at zero, which would make the adapter a no-op: both matrices are
drawn from a seeded normal instead), saved as PEFT does (``adapter_config.json``, ``adapter_model.safetensors``).
Run it with the vLLM environment's Python, which has ``torch``, ``transformers`` and ``peft`` (``make vllm-env``):

    python -m llm_sandbox.tiny_lora BASE_DIR OUT_DIR [--rank 8] [--seed 1] [--base-name NAME]

``--base-name`` writes another ``base_model_name_or_path`` than ``BASE_DIR`` (PEFT records the path the base model
was loaded from): an adapter that says it was trained on another model.
"""

from __future__ import annotations

import argparse
import json
import pathlib

TARGET_MODULES = ["q_proj", "k_proj", "v_proj", "o_proj"]


def generate(base: pathlib.Path, out: pathlib.Path, *, rank: int = 8, seed: int = 1, base_name: str | None = None,
             scale: float = 0.5) -> pathlib.Path:
    """Write a LoRA adapter of ``rank`` on the attention projections of the model in ``base`` into ``out``."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32)
    peft_model = get_peft_model(model, LoraConfig(r=rank, lora_alpha=2 * rank, target_modules=TARGET_MODULES,
                                                  lora_dropout=0.0, bias="none", task_type="CAUSAL_LM"))
    with torch.no_grad():
        for name, parameter in peft_model.named_parameters():
            if "lora_A" in name or "lora_B" in name:
                parameter.normal_(0.0, scale)
    out.mkdir(parents=True, exist_ok=True)
    peft_model.save_pretrained(out, safe_serialization=True)
    if base_name is not None:
        config_path = out / "adapter_config.json"
        config = json.loads(config_path.read_text())
        config["base_model_name_or_path"] = base_name
        config_path.write_text(json.dumps(config, indent=2))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("base", type=pathlib.Path)
    parser.add_argument("out", type=pathlib.Path)
    parser.add_argument("--rank", type=int, default=8)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--base-name")
    args = parser.parse_args()
    print(generate(args.base, args.out, rank=args.rank, seed=args.seed, base_name=args.base_name))


if __name__ == "__main__":
    main()
