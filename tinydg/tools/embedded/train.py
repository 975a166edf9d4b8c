"""Train the embedded model: a tiny DiffusionGemma that sorts digits, reverses its last answer and
thinks when asked, written to weights/embedded/.

    pip install -e .[reference]
    python -m tinydg.tools.embedded.train [--steps N] [--out FOLDER] [--save-every N]

The reference implementation (transformers, torch on the CPU) is the autograd engine; the
objective is the one tinydg.tools.embedded.training writes out in NumPy (uniform corruption with
t ~ U(eps, 1), one canvas per example with the response then <eos> fill, two-pass
self-conditioning with p = 0.5, unweighted cross-entropy plus the encoder's next-token loss).
The examples (tinydg.tools.embedded.data) are conversations of 1 to 4 turns, thinking on or off, as
tinydg.Chat feeds them to the model; the target is one canvas of the last answer. Everything is
seeded: the same versions on the same machine give the same checkpoint.

Writes config.json, generation_config.json, model.safetensors (bfloat16), tokenizer.json,
chat_template.jinja and training_log.csv (step, seconds, diffusion loss, encoder loss, lr).
"""

import argparse
import copy
import csv
import math
import os
import time

import numpy as np
import torch
from transformers import DiffusionGemmaConfig, DiffusionGemmaForBlockDiffusion
from transformers.models.diffusion_gemma.generation_diffusion_gemma import (
    DiffusionGemmaGenerationConfig,
    EntropyBoundSamplerConfig,
)

from tinydg.chat_format import CHAT_TEMPLATE
from tinydg.config import GENERATION_DEFAULTS
from tinydg.tokenizer import build_tokenizer
from tinydg.tools import reference
from tinydg.tools.embedded import data, training

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..", ".."))  # the repository root
OUT = os.path.join(ROOT, "weights", "embedded")
SEED = 0
STEPS = 7000
BATCH = 32
LR, WARMUP, FINAL_LR_FRACTION = 2e-3, 100, 0.1
CANVAS = 64  # one canvas holds every answer with its thought (at most 44 tokens): no answer crosses a canvas
MAX_NEW_TOKENS = 64  # one canvas
MAX_POSITIONS = 1024  # a chat of about 8 turns (training conversations reach about 400)
SLIDING_WINDOW = 256  # a reverse reaches back about 135 positions to the first digit of the answer it reverses
ENTROPY_BOUND = 1e-3  # the checkpoint's sampler setting: `reverse it` 98.2 % instead of 96.4 % at the reference's
                      # 0.1, the same tokens per forward (weights/embedded/EVAL.md, "Against the entropy bound")
EXPERTS = "eager"  # the reference experts loop (grouped_mm was no faster here)


def make_tokenizer():
    return build_tokenizer(chat_template=CHAT_TEMPLATE)


def model_config(tokenizer):
    ids = {name: tokenizer.token_to_id(name) for name in ("<pad>", "<eos>", "<bos>")}
    return reference.tiny_config(
        vocab_size=tokenizer.vocab_size, hidden_size=128, intermediate_size=256,
        num_attention_heads=4, num_key_value_heads=2, head_dim=32, global_head_dim=64, num_global_key_value_heads=1,
        layer_types=["sliding_attention"] * 3 + ["full_attention"], sliding_window=SLIDING_WINDOW,
        num_experts=8, top_k_experts=2, moe_intermediate_size=128, max_position_embeddings=MAX_POSITIONS,
        pad_token_id=ids["<pad>"], eos_token_id=ids["<eos>"], bos_token_id=ids["<bos>"], canvas_length=CANVAS)


def new_model(config, seed=SEED):
    """The reference model with its own initialization, seeded."""
    torch.manual_seed(seed)
    return DiffusionGemmaForBlockDiffusion._from_config(DiffusionGemmaConfig(**copy.deepcopy(config)), dtype=torch.float32,
                                                        attn_implementation="sdpa", experts_implementation=EXPERTS)


def encoder_targets(prompt_ids, valid):
    """The encoder's next-token targets [B, T-1]: prompt_ids[:, 1:], or -100 (ignored) where the token or
    the one before it is masked (pad after <bos>, the <eos> fill of an earlier answer)."""
    return np.where(valid[:, 1:] & valid[:, :-1], prompt_ids[:, 1:], -100)


def torch_losses(model, prompt_ids, valid, targets, noise):
    """The objective on the reference model, as training.losses: (diffusion, encoder) tensors.
    prompt_ids, valid [B, T]; targets [B, C]."""
    prompt = torch.as_tensor(prompt_ids)
    mask = torch.as_tensor(valid.astype(np.int64))
    decoder_mask = torch.cat([mask, torch.ones(targets.shape, dtype=mask.dtype)], dim=1)
    target = torch.as_tensor(targets)
    noisy = torch.as_tensor(training.corrupt(targets, noise))
    canvas = dict(decoder_input_ids=noisy, decoder_attention_mask=decoder_mask)
    # the encoder runs once: pass 1 returns its cache, which pass 2 reads (the decoder never writes it);
    # no gradient flows through pass 1's logits
    first = model(input_ids=prompt, attention_mask=mask, **canvas)
    out = model(past_key_values=first.past_key_values, **canvas, self_conditioning_logits=first.logits.detach(),
                self_conditioning_mask=torch.as_tensor(noise.sc))
    V = out.logits.shape[-1]
    diffusion = torch.nn.functional.cross_entropy(out.logits.reshape(-1, V), target.reshape(-1))
    cap = model.config.get_text_config().final_logit_softcapping
    encoder_logits = cap * torch.tanh(model.lm_head(first.encoder_last_hidden_state).float() / cap)
    encoder = torch.nn.functional.cross_entropy(encoder_logits[:, :-1].reshape(-1, V),
                                                torch.as_tensor(encoder_targets(prompt_ids, valid)).reshape(-1),
                                                ignore_index=-100)
    return diffusion, encoder


def learning_rate(step, steps):
    if step < WARMUP:
        return LR * (step + 1) / WARMUP
    progress = (step - WARMUP) / max(1, steps - WARMUP)
    return LR * (FINAL_LR_FRACTION + (1 - FINAL_LR_FRACTION) * 0.5 * (1 + math.cos(math.pi * progress)))


def save(model, tokenizer, folder, log):
    os.makedirs(folder, exist_ok=True)
    model.eval()
    reference.save(model, folder, dtype="bfloat16")
    ids = {name: tokenizer.token_to_id(name) for name in ("<pad>", "<eos>", "<bos>", "<turn|>", "<|tool_response>")}
    DiffusionGemmaGenerationConfig(
        max_new_tokens=MAX_NEW_TOKENS, max_denoising_steps=16,
        sampler_config=EntropyBoundSamplerConfig(entropy_bound=ENTROPY_BOUND),
        t_min=GENERATION_DEFAULTS["t_min"], t_max=GENERATION_DEFAULTS["t_max"],
        stability_threshold=GENERATION_DEFAULTS["stability_threshold"],
        confidence_threshold=GENERATION_DEFAULTS["confidence_threshold"],
        bos_token_id=ids["<bos>"], pad_token_id=ids["<pad>"],
        eos_token_id=[ids["<eos>"], ids["<turn|>"], ids["<|tool_response>"]],
    ).save_pretrained(folder)
    tokenizer.save(folder)
    with open(os.path.join(folder, "training_log.csv"), "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["step", "seconds", "diffusion_loss", "encoder_loss", "lr"])
        writer.writerows(log)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=STEPS)
    parser.add_argument("--out", default=OUT)
    parser.add_argument("--save-every", type=int, default=1000, metavar="N",
                        help="also write the model so far every N steps (0: only at the end)")
    args = parser.parse_args()
    torch.set_num_threads(2)
    tokenizer = make_tokenizer()
    model = new_model(model_config(tokenizer))
    model.train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=LR, weight_decay=0.0)
    data_rng, noise_rng = np.random.default_rng(SEED), np.random.default_rng(SEED + 1)
    examples = data.batches(tokenizer, data_rng, BATCH, CANVAS)
    log, start = [], time.time()
    for step in range(args.steps):
        lr = learning_rate(step, args.steps)
        for group in optimizer.param_groups:
            group["lr"] = lr
        prompt_ids, valid, targets = next(examples)
        noise = training.draw_noise(noise_rng, *targets.shape, tokenizer.vocab_size)
        diffusion, encoder = torch_losses(model, prompt_ids, valid, targets, noise)
        optimizer.zero_grad()
        (diffusion + encoder).backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        if step % 25 == 0 or step == args.steps - 1:
            log.append([step, round(time.time() - start, 1), round(diffusion.item(), 5), round(encoder.item(), 5), lr])
            print(*log[-1], flush=True)
        if args.save_every and (step + 1) % args.save_every == 0 and step + 1 < args.steps:
            save(model, tokenizer, args.out, log)
            model.train()
    save(model, tokenizer, args.out, log)
    files = sorted(os.listdir(args.out))
    size = sum(os.path.getsize(os.path.join(args.out, f)) for f in files)
    print(f"wrote {', '.join(files)} to {args.out}: {size / 1e6:.2f} MB in {time.time() - start:.0f} s")


if __name__ == "__main__":
    main()
