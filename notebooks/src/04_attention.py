# %% [markdown]
# # 4. Attention: the causal encoder, sliding windows, the bidirectional canvas
#
# One weight stack attends in two ways. The **encoder** reads the prompt causally (a token sees
# itself and what came before; on sliding layers only the last `window` tokens) and writes the
# KV cache. The **decoder** reads the canvas bidirectionally: every canvas position sees every
# other canvas position and every cached position its layer keeps. Masks in tinydg are small
# functions of positions (`tinydg/attention.py`); here they are drawn as images.

# %%
import inspect

import numpy as np
import matplotlib.pyplot as plt

import tinydg
from tinydg import attention, model as tinymodel
from tinydg.cache import empty_cache

model = tinydg.load()
text = model.text
print("sliding window:", text.sliding_window, "  layers:", [s.layer_type for s in text.layers])
print(inspect.getsource(attention.sliding_window_mask))

# %% [markdown]
# ## Encoder masks
# A 20-token prompt on a toy window of 6: causal for global layers, a band for sliding ones.

# %%
pos = np.arange(20)
fig, axes = plt.subplots(1, 2, figsize=(8, 3.6))
axes[0].imshow(attention.causal_mask(pos, pos), cmap="Blues")
axes[0].set_title("causal (global layers)")
axes[1].imshow(attention.sliding_window_mask(pos, pos, 6), cmap="Blues")
axes[1].set_title("sliding window 6")
for ax in axes:
    ax.set_xlabel("key position")
    ax.set_ylabel("query position")
plt.tight_layout()
plt.show()

# %% [markdown]
# ## What the cache keeps
# Sliding layers keep only the last `window - 1` positions (all that a later query can still
# see); global layers keep everything.

# %%
ids = np.random.default_rng(0).integers(20, 100, size=(1, 150))
_, cache = tinydg.encode(model, ids)
for i, spec in enumerate(text.layers):
    print(f"layer {i} ({spec.layer_type}): keys {cache.keys[i].shape}  -> {cache.layer_length(i)} positions kept")

# %% [markdown]
# ## The decoder's view: [cache ; canvas]
# The canvas attends to every kept cache position and to the whole canvas, in both directions;
# only left padding would be masked. Which keys each query sees is one value, a `Visibility`
# (`tinydg.attention`), built once per call and layer type; its `mask` is None when nothing is masked.
# The GPU backend passes the same value to its kernels as launch arguments.

# %%
C = model.config.canvas_length
valid = np.ones((1, cache.length + C), dtype=bool)
seen = tinymodel.visibilities(text, cache, valid, encoder=False)
print(seen[text.layers[0].layer_type])
print("mask:", seen[text.layers[0].layer_type].mask)
print(inspect.getsource(attention.visible))
S = cache.layer_length(0)
view = np.ones((C, S + C), dtype=bool)
plt.figure(figsize=(8, 2.5))
plt.imshow(view, cmap="Greens", aspect="auto", vmin=0, vmax=1)
plt.axvline(S - 0.5, color="k")
plt.title(f"sliding layer: {C} canvas queries see {S} cached keys | {C} canvas keys")
plt.xlabel("key (cache, then canvas)")
plt.ylabel("canvas query")
plt.tight_layout()
plt.show()

# %% [markdown]
# ## The attention function
# Grouped-query attention: several query heads share one key/value head. Scale 1.0, because q
# and k are RMS-normalized per head. A query row that sees no key at all returns zeros.

# %%
print(inspect.getsource(attention.attention))
rng = np.random.default_rng(1)
q = rng.standard_normal((1, 4, 3, 8)).astype(np.float32)    # 4 query heads
k = rng.standard_normal((1, 2, 5, 8)).astype(np.float32)    # 2 KV heads: heads 0,1 read KV 0; heads 2,3 read KV 1
v = rng.standard_normal((1, 2, 5, 8)).astype(np.float32)
out = attention.attention(q, k, v, attention.causal_mask(np.arange(2, 5), np.arange(5))[None, None])
print(out.shape)

# %% [markdown]
# ## Exercises
# 1. Encode a prompt longer than the window and check that the sliding layers' cache holds
#    exactly `sliding_window - 1` positions.
# 2. Build a left-padded batch (`attention_mask` with zeros on the left) and print the encoder's
#    `tinydg.model.visibilities(..., encoder=True)` masks for it. Which rows are all False, and what
#    does attention return there?
