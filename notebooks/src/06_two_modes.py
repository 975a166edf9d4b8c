# %% [markdown]
# # 6. One weight stack, two modes: encode, denoise, commit
#
# DiffusionGemma has one set of layer weights used twice. `tinydg.encode` runs it causally over
# tokens and returns a new KV cache; `tinydg.denoise` runs it bidirectionally over a canvas,
# reading the cache and never writing it, and returns logits for every canvas position. When a
# canvas is done it is **committed**: encoded like a prompt, so the next canvas sees it in the
# cache. Only one tensor per layer differs between the modes: each side's `layer_scalar` (in the
# embedded model both are still 1, as initialized; in a real checkpoint they differ).

# %%
import numpy as np

import tinydg
from tinydg.chat_format import encode_prompt
from tinydg.tokenizer import load_tokenizer

model = tinydg.load()
tokenizer = load_tokenizer(model.path)
scalars = [(float(model.weights[f"model.encoder.language_model.layers.{i}.layer_scalar"][0]),
            float(model.weights[f"model.decoder.layers.{i}.layer_scalar"][0])) for i in range(model.text.num_hidden_layers)]
print("layer_scalar (encoder, decoder) per layer:", np.round(scalars, 3).tolist())

# %% [markdown]
# ## Encode the prompt

# %%
ids = np.array([encode_prompt(tokenizer, [{"role": "user", "content": "sort 5 3 8 1"}])])
hidden, cache = tinydg.encode(model, ids)
print("hidden:", hidden.shape, " cache length:", cache.length, " valid:", cache.valid.shape)

# %% [markdown]
# ## Denoise a canvas, twice
# The second call is self-conditioned on the first call's logits. The cache is the same object
# both times: `denoise` only reads it.

# %%
C = model.config.canvas_length
canvas = np.random.default_rng(0).integers(0, model.text.vocab_size, size=(1, C))
logits = tinydg.denoise(model, canvas, cache)
print("logits:", logits.shape, " draft:", repr(tokenizer.decode(logits[0].argmax(-1).tolist())))
logits2 = tinydg.denoise(model, logits[0].argmax(-1)[None], cache, logits)
print("after a second pass:", repr(tokenizer.decode(logits2[0].argmax(-1).tolist())))
print("cache length unchanged:", cache.length)

# %% [markdown]
# ## Commit, and the next block
# Committing encodes the finished canvas at positions `T .. T + C - 1`; the grown cache is a new
# value, and the old one is untouched. A second canvas would now be denoised at positions after it.

# %%
committed = logits2[0].argmax(-1)[None]
_, grown = tinydg.encode(model, committed, cache)
print("old cache:", cache.length, " grown cache:", grown.length)
next_logits = tinydg.denoise(model, canvas, grown)
print("a second canvas would see", grown.length, "cached positions; its draft:",
      repr(tokenizer.decode(next_logits[0].argmax(-1).tolist())[:30]))

# %% [markdown]
# ## Exercises
# 1. Compare `tinydg.encode(model, prompt + committed)` in one call with encoding the prompt and
#    then the committed canvas: are the caches equal?
# 2. Set the decoder's `layer_scalar` of layer 0 to 0.5 (`model.weights._arrays[name] = ...`) and
#    look at the draft. Which mode did you change, and which cached values stay the same?
