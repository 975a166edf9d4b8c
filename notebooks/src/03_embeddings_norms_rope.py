# %% [markdown]
# # 3. Embeddings, RMSNorm and RoPE
#
# Before attention, three small pieces of math: the **embedding** (a row of the embedding matrix
# per token, scaled by sqrt(D)), **RMSNorm** (divide by the root mean square, times a learned
# weight), and **rotary position embeddings** (rotate pairs of dimensions by an angle that grows
# with the position).

# %%
import inspect

import numpy as np
import matplotlib.pyplot as plt

import tinydg
from tinydg import model as tinymodel
from tinydg.norms import rms_norm
from tinydg.rope import apply_rope, cos_sin, inv_freq, inv_freq_for

model = tinydg.load()
text = model.text
print(inspect.getsource(rms_norm))

# %% [markdown]
# ## Embedding
# The LM head is tied to the same matrix: logits are `hidden @ E.T`.

# %%
E = model.weights["model.decoder.embed_tokens.weight"]
ids = np.array([[2, 12, 104]])
x = tinymodel.embed(model.ops, model.weights, ids, text.hidden_size)  # model.ops: the readable functions
print("E:", E.shape, " x:", x.shape, " x = E[ids] * sqrt(D):", np.allclose(x, E[ids] * np.sqrt(text.hidden_size)))

# %% [markdown]
# ## RMSNorm
# After the norm every vector has root mean square 1 (before the weight). DiffusionGemma also
# normalizes q and k per head, which is why its attention uses scale 1.0 instead of 1/sqrt(d):
# the scores' size is already under control.

# %%
y = rms_norm(x, None)
print("rms before:", np.sqrt((x ** 2).mean(-1)).round(3), " after:", np.sqrt((y ** 2).mean(-1)).round(3))

# %% [markdown]
# ## RoPE: default and proportional
# Sliding layers rotate every pair of dimensions; global layers use "proportional" RoPE, where
# only the first quarter of the frequencies are non-zero: the other dimensions pass through.

# %%
for spec in {s.layer_type: s for s in text.layers}.values():
    f = inv_freq_for(spec)
    print(f"{spec.layer_type:18s} head_dim {spec.head_dim:3d}  rope {spec.rope_type:12s}  "
          f"{int((f > 0).sum())} of {len(f)} frequencies rotate")

real = inv_freq(512, "proportional", 1_000_000.0, 0.25)
default = inv_freq(256, "default", 10_000.0)
plt.figure(figsize=(6, 2.8))
plt.semilogy(default, label="sliding: default, d=256")
plt.semilogy(np.where(real > 0, real, np.nan), label="global: proportional, d=512")
plt.xlabel("frequency index j (dims j and j + d/2)")
plt.ylabel("radians per position")
plt.legend()
plt.tight_layout()
plt.show()

# %% [markdown]
# ## Rotations preserve length and encode relative position
# The dot product of a rotated query and key depends only on the distance between them.

# %%
d = 32
rng = np.random.default_rng(0)
q, k = rng.standard_normal((1, 1, 1, d)), rng.standard_normal((1, 1, 1, d))
freqs = inv_freq(d)
def score(pq, pk):
    cq, sq = cos_sin(np.array([pq]), freqs)
    ck, sk = cos_sin(np.array([pk]), freqs)
    return float((apply_rope(q, cq, sq) * apply_rope(k, ck, sk)).sum())
print("positions (5, 2):", round(score(5, 2), 5), "  (105, 102):", round(score(105, 102), 5))

# %% [markdown]
# ## Exercises
# 1. Check that `apply_rope` keeps the norm of every head vector.
# 2. Which dimensions of a global-layer head of the real model (d = 512) rotate? Use `real > 0`.
