"""A first look at the two modes, on a tiny checkpoint made by the reference (weights/fixtures).

    python -m tinydg.tools.demo [checkpoint folder]

Encodes a prompt into the KV cache, denoises a uniformly random canvas once, and shows what the
decoder proposes for every canvas position (argmax token and its probability). The tiny
checkpoint has random weights, so the tokens mean nothing: the point is the data flow.
"""

import os
import sys

import numpy as np

import tinydg
from tinydg.attention import softmax

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))  # the repository root
DEFAULT = os.path.join(ROOT, "weights", "fixtures", "sliding_full_f32")


def main(path=DEFAULT):
    model = tinydg.load(path)
    text, C = model.text, model.config.canvas_length
    print(f"checkpoint {os.path.basename(path)}: {text.num_hidden_layers} layers {list(text.layer_types)}, "
          f"hidden {text.hidden_size}, vocab {text.vocab_size}, {text.num_experts} experts top-{text.top_k_experts}, "
          f"canvas {C}")
    rng = np.random.default_rng(0)
    prompt = rng.integers(3, text.vocab_size, (1, 10))
    hidden, cache = tinydg.encode(model, prompt)
    print(f"encode: prompt {prompt.tolist()[0]} -> hidden {hidden.shape}, cache of {cache.length} positions "
          f"(per layer: {[cache.layer_length(i) for i in range(text.num_hidden_layers)]})")
    canvas = rng.integers(0, text.vocab_size, (1, C))
    logits = tinydg.denoise(model, canvas, cache)
    probs = softmax(logits[0])
    print(f"denoise: random canvas {canvas.tolist()[0]} -> logits {logits.shape}")
    print("position  noisy token  ->  argmax token  (probability)")
    for i, (tok, best) in enumerate(zip(canvas[0], probs.argmax(-1))):
        print(f"{i:8d}  {tok:11d}  ->  {best:12d}  ({probs[i, best]:.3f})")
    print(f"tensors converted so far (lazy loading): {model.weights.loaded()} of {len(model.weights)}")


if __name__ == "__main__":
    main(*sys.argv[1:])
