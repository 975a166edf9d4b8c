"""Write `weights/demo/`: a tiny DiffusionGemma checkpoint with RANDOM weights, for the command line.

This is a stand-in with untrained weights, so that `python -m tinydg "Hello"` runs on a fresh clone;
it generates noise. A trained embedded model (`weights/embedded/`) replaces it later: the command
line prefers that folder when it exists.

    pip install -e .[reference]
    python weights/make_demo.py

The weights are made and saved by the reference (`transformers`), so the folder has the Hugging
Face layout of the real checkpoint in miniature:

- config.json: 4 layers (3 sliding-window + 1 full attention, like the real 5:1 pattern), hidden 64,
  8 experts top-2 beside a dense MLP, canvas 32, vocab = the tokenizer's vocabulary;
- model.safetensors in bfloat16;
- tokenizer.json: `tinydg.tokenizer.build_tokenizer()`, one character per token, the Gemma 4
  control tokens packed at the start of the vocabulary (<pad> 0, <eos> 1, <bos> 2, ...), byte
  fallback; chat_template.jinja: tinydg's Gemma 4 template;
- generation_config.json: the reference's sampler defaults with 64 new tokens and at most 16
  denoising steps; generation ends at <eos>, <turn|> or <|tool_response>, as in the real checkpoint.
"""

import json
import os
import sys

from transformers.models.diffusion_gemma.generation_diffusion_gemma import (
    DiffusionGemmaGenerationConfig,
    EntropyBoundSamplerConfig,
)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from tinydg.tools import reference  # noqa: E402
from tinydg.chat_format import CHAT_TEMPLATE  # noqa: E402
from tinydg.config import GENERATION_DEFAULTS  # noqa: E402
from tinydg.tokenizer import build_tokenizer  # noqa: E402

OUT = os.path.join(ROOT, "weights", "demo")
SEED = 0


def main(folder=OUT):
    tokenizer = build_tokenizer(chat_template=CHAT_TEMPLATE)
    names = ("<pad>", "<eos>", "<bos>", "<turn|>", "<|tool_response>")
    special = {name: tokenizer.token_to_id(name) for name in names}  # by string, never by number
    config = reference.tiny_config(
        vocab_size=tokenizer.vocab_size,
        hidden_size=64,
        intermediate_size=64,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=16,
        global_head_dim=32,
        num_global_key_value_heads=1,
        layer_types=["sliding_attention"] * 3 + ["full_attention"],
        sliding_window=16,
        num_experts=8,
        top_k_experts=2,
        moe_intermediate_size=32,
        max_position_embeddings=2048,
        pad_token_id=special["<pad>"],
        eos_token_id=special["<eos>"],
        bos_token_id=special["<bos>"],
        canvas_length=32,
    )
    model = reference.build_model(config, seed=SEED)
    os.makedirs(folder, exist_ok=True)
    reference.save(model, folder, dtype="bfloat16")
    generation = DiffusionGemmaGenerationConfig(
        max_new_tokens=64,
        max_denoising_steps=16,
        sampler_config=EntropyBoundSamplerConfig(entropy_bound=GENERATION_DEFAULTS["entropy_bound"]),
        t_min=GENERATION_DEFAULTS["t_min"],
        t_max=GENERATION_DEFAULTS["t_max"],
        stability_threshold=GENERATION_DEFAULTS["stability_threshold"],
        confidence_threshold=GENERATION_DEFAULTS["confidence_threshold"],
        bos_token_id=special["<bos>"],
        pad_token_id=special["<pad>"],
        eos_token_id=[special["<eos>"], special["<turn|>"], special["<|tool_response>"]],
    )
    generation.save_pretrained(folder)
    tokenizer.save(folder)

    files = sorted(os.listdir(folder))
    total = sum(os.path.getsize(os.path.join(folder, f)) for f in files)
    with open(os.path.join(folder, "generation_config.json")) as f:
        print(json.dumps(json.load(f), sort_keys=True))
    print(f"wrote {', '.join(files)} to {os.path.relpath(folder, ROOT)}: {total / 1e6:.2f} MB, "
          f"vocab {tokenizer.vocab_size}")


if __name__ == "__main__":
    main(*sys.argv[1:])
