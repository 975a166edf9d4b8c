"""Record the reference's `generate` on the tiny fixture checkpoints, random draws included.

Each scenario writes `weights/fixtures/generation/<name>.npz` with the inputs, the settings, the
seed, every random draw in order (`draw_000_integers`, `draw_001_exponential`, ...) and the
reference's outputs. tinydg's tests replay the draws (no torch needed) and must produce the same
tokens with the same number of draws; they also regenerate the draws from the seed with
`tinydg.rng.TorchCPUGenerator`.

    pip install -e .[reference]
    python weights/make_generation_reference.py

Each scenario names the behaviour it exists for, and the script refuses to write it unless the
recorded run shows that behaviour (it tries seeds until one does).
"""

import json
import os
import sys

import numpy as np
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from tinydg.tools import reference  # noqa: E402
from tinydg.tools.reference_generate import run_generate, survives_noise  # noqa: E402

FIXTURES = os.path.join(ROOT, "weights", "fixtures")
OUT = os.path.join(FIXTURES, "generation")


def _prompt(rng, batch, length, vocab, left_pad):
    ids = rng.integers(3, vocab, size=(batch, length))
    mask = np.ones((batch, length), dtype=np.int64)
    for row, pad in enumerate(left_pad):
        ids[row, :pad], mask[row, :pad] = 0, 0
    return ids, mask


def _new(result, prompt_len):
    return result["sequences"][:, prompt_len:]


SCENARIOS = [
    {   # the canvas stops before max_denoising_steps: stable and confident
        "name": "early_stop", "checkpoint": "sliding_full_f32", "batch": 1, "prompt_len": 6, "left_pad": [0],
        "settings": {"max_new_tokens": 8, "max_denoising_steps": 12, "entropy_bound": 0.5,
                     "confidence_threshold": 2.0},
        "shows": lambda r, steps: steps.max() < 12,
    },
    {   # several tokens are accepted in one step (a large entropy bound), bf16 sharded weights
        "name": "many_accepted", "checkpoint": "bf16_sharded", "batch": 2, "prompt_len": 5, "left_pad": [0, 0],
        "settings": {"max_new_tokens": 8, "max_denoising_steps": 6, "entropy_bound": 6.0, "t_min": 1.0, "t_max": 1.5},
        "shows": lambda r, steps: True,  # checked by the tinydg test through accepted_per_step
    },
    {   # EOS in a left-padded batch: one row ends (pad after EOS, pad canvases after), another goes on
        "name": "eos_left_padding", "checkpoint": "sliding_full_f32", "batch": 3, "prompt_len": 7,
        "left_pad": [0, 2, 4],
        "settings": {"max_new_tokens": 24, "max_denoising_steps": 5, "entropy_bound": 1.0,
                     "eos_token_id": [1, 5, 9, 17, 33, 65], "pad_token_id": 0, "stability_threshold": 0},
        "shows": lambda r, steps: bool(((_new(r, 7) == 0).any(axis=1)).any() and not (_new(r, 7)[:, -8:] == 0).all()),
    },
    {   # several canvases, max_new_tokens not a multiple of the canvas, a caller's starting canvas
        "name": "canvases_start_canvas", "checkpoint": "long_prompt_multi", "batch": 2, "prompt_len": 9,
        "left_pad": [0, 3], "start_canvas": True,
        "settings": {"max_new_tokens": 13, "max_denoising_steps": 4, "entropy_bound": 2.0, "t_min": 0.2,
                     "t_max": 1.3, "stability_threshold": 2, "confidence_threshold": 1.5},
        "shows": lambda r, steps: _new(r, 9).shape[1] > 13,
    },
]


def record_scenario(spec, seed):
    folder = os.path.join(FIXTURES, spec["checkpoint"])
    model = reference.load_float32(folder, attn_implementation="sdpa")  # eager generate breaks on left padding
    config = json.load(open(os.path.join(folder, "config.json")))
    vocab = config["text_config"]["vocab_size"]
    canvas = config["canvas_length"]
    rng = np.random.default_rng(seed)
    ids, mask = _prompt(rng, spec["batch"], spec["prompt_len"], vocab, spec["left_pad"])
    start = rng.integers(0, vocab, size=(spec["batch"], canvas)) if spec.get("start_canvas") else None
    result, draws = run_generate(model, ids, seed, attention_mask=mask, decoder_input_ids=start, **spec["settings"])
    arrays = {"input_ids": ids, "attention_mask": mask, "seed": np.int64(seed),
              "sequences": result["sequences"], "tokens_per_forward": result["tokens_per_forward"],
              "settings": np.array(json.dumps(spec["settings"])), "checkpoint": np.array(spec["checkpoint"])}
    if start is not None:
        arrays["decoder_input_ids"] = start
    for i, (kind, a) in enumerate(draws):
        arrays[f"draw_{i:03d}_{kind}"] = a
    return arrays, draws


def robust(spec, seed, arrays):
    """The recorded tokens survive float32-sized noise on the logits (see reference_generate.survives_noise)."""
    return survives_noise(lambda: record_scenario(spec, seed)[0]["sequences"], arrays["sequences"])


def steps_per_canvas(draws):
    """Decoder steps per canvas: each canvas opens with an integers draw, then each step is one
    exponential draw and one integers draw."""
    kinds = [k for k, _ in draws]
    counts, i = [], 0
    while i < len(kinds):
        i += 1  # the starting canvas
        n = 0
        while i < len(kinds) and kinds[i] == "exponential":
            n, i = n + 1, i + 2
        counts.append(n)
    return np.array(counts)


def main():
    os.makedirs(OUT, exist_ok=True)
    torch.set_num_threads(1)
    for spec in SCENARIOS:
        for seed in range(50):
            arrays, draws = record_scenario(spec, seed)
            if spec["shows"](arrays, steps_per_canvas(draws)) and robust(spec, seed, arrays):
                break
        else:
            raise SystemExit(f"{spec['name']}: no seed in 0..49 shows the behaviour")
        path = os.path.join(OUT, spec["name"] + ".npz")
        np.savez_compressed(path, **arrays)
        print(f"{spec['name']}: seed {seed}, {len(draws)} draws, steps per canvas {steps_per_canvas(draws)}, "
              f"{os.path.getsize(path) / 1024:.0f} KiB")


if __name__ == "__main__":
    main()
