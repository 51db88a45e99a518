"""Generate a tiny Llama that vLLM's CPU build can serve (no model hub is reachable here).

Random weights, a byte-level BPE tokenizer trained on a local text, a chat template. Run it with a Python
that has ``torch``, ``transformers`` and ``tokenizers`` (the vLLM environment):

    python -m llm_sandbox.tiny_model OUT_DIR [--layers 2] [--hidden 128] [--seed 0]

Measured here (vLLM CPU 0.32, 2 cores, float32, max-model-len 256): 2 layers x hidden 128 loads in about a
minute and generates 64 tokens in ~0.15 s; 16 layers x hidden 1024 generates them ~25x slower.
head_dim must be at least 64 (the CPU attention kernels reject 16), hence 2 heads at hidden 128.
"""

from __future__ import annotations

import argparse
import json
import pathlib

CORPUS = """
Kubernetes operators reconcile desired state with observed state. A canary release sends a small share of
traffic to the new revision, measures its error ratio and latency against the stable revision, and promotes
it only when the service level objectives hold. The error budget is the share of requests allowed to fail.
Burn rate is how fast the budget is spent. Large language models answer questions, summarise documents and
write code; serving them needs GPUs, batching, and a key-value cache for attention.
""" * 20

CHAT_TEMPLATE = (
    "{% for message in messages %}{{ message['role'] }}: {{ message['content'] }}\n{% endfor %}"
    "{% if add_generation_prompt %}assistant:{% endif %}"
)


def generate(out: pathlib.Path, *, layers: int = 2, hidden: int = 128, heads: int | None = None, vocab: int = 512,
             seed: int = 0) -> pathlib.Path:
    """Write a LlamaForCausalLM (safetensors) with its tokenizer into ``out``; returns ``out``."""
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    torch.manual_seed(seed)
    out.mkdir(parents=True, exist_ok=True)
    bpe = Tokenizer(models.BPE(unk_token="<unk>"))
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab, special_tokens=["<unk>", "<s>", "</s>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    bpe.train_from_iterator(CORPUS.split("\n"), trainer=trainer)
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=bpe, unk_token="<unk>", bos_token="<s>", eos_token="</s>")
    tokenizer.chat_template = CHAT_TEMPLATE
    tokenizer.save_pretrained(out)

    heads = heads or max(1, hidden // 64)
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=hidden, intermediate_size=hidden * 2,
                         num_hidden_layers=layers, num_attention_heads=heads, num_key_value_heads=heads,
                         max_position_embeddings=512, bos_token_id=1, eos_token_id=2, tie_word_embeddings=False,
                         torch_dtype="float32")
    model = LlamaForCausalLM(config)
    model.save_pretrained(out, safe_serialization=True)
    (out / "generation_config.json").write_text(json.dumps({"bos_token_id": 1, "eos_token_id": 2, "do_sample": False}))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=pathlib.Path)
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--hidden", type=int, default=128)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    print(generate(args.out, layers=args.layers, hidden=args.hidden, seed=args.seed))


if __name__ == "__main__":
    main()
