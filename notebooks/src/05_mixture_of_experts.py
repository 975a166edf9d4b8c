# %% [markdown]
# # 5. Mixture of experts
#
# Each DiffusionGemma layer has a dense gated MLP *and*, beside it, a mixture of experts: a
# **router** scores the experts for every token, the top-k are kept and renormalized, and each
# chosen expert (a small gated MLP) processes the token. The real model has 128 experts and uses
# 8 per token; the embedded one has 8 and uses 2.

# %%
import inspect

import numpy as np
import matplotlib.pyplot as plt

import tinydg
from tinydg import moe
from tinydg.chat_format import encode_prompt
from tinydg.tokenizer import load_tokenizer

model = tinydg.load()
text = model.text
tokenizer = load_tokenizer(model.path)
print(inspect.getsource(moe.router))
print(inspect.getsource(moe.route))
from tinydg import layer
print(inspect.getsource(layer.feed_forward))   # the dense MLP and the experts side by side

# %% [markdown]
# ## Which experts does a canvas use?
# `trace` collects each decoder layer's router choices during a forward pass.

# %%
ids = np.array([encode_prompt(tokenizer, [{"role": "user", "content": "sort 4 8 1 5 9 2 6"}])])
_, cache = tinydg.encode(model, ids)
canvas = np.random.default_rng(0).integers(0, text.vocab_size, size=(1, model.config.canvas_length))
trace = {}
tinydg.denoise(model, canvas, cache, trace=trace)
fig, axes = plt.subplots(1, text.num_hidden_layers, figsize=(12, 2.5), sharey=True)
for layer, (idx, ax) in enumerate(zip(trace["router_idx"], axes)):
    load = np.bincount(idx.ravel(), minlength=text.num_experts)
    ax.bar(range(text.num_experts), load)
    ax.set_title(f"layer {layer}")
    ax.set_xlabel("expert")
axes[0].set_ylabel("token-expert pairs")
plt.tight_layout()
plt.show()
print("weights of the first token's experts, layer 0:", trace["router_w"][0][0], trace["router_idx"][0][0])

# %% [markdown]
# ## Grouping by expert
# The experts run one matrix product each over all of their tokens. `expert_groups` is a counting
# sort of the (token, slot) pairs; the GPU backend does the same sort in a kernel.

# %%
idx = trace["router_idx"][0]
order, offsets = moe.expert_groups(idx, text.num_experts)
print("offsets:", offsets)
for e in range(3):
    pairs = order[offsets[e]:offsets[e + 1]]
    print(f"expert {e}: tokens {pairs // text.top_k_experts}")

# %% [markdown]
# ## The same sum, as the math reads
# `moe.experts_dense` computes each token's weighted sum over its chosen experts with three einsums:
# obviously right, but it gathers every chosen expert's weights per token. `moe.experts` (what runs)
# groups the tokens by expert instead; the two agree.

# %%
print(inspect.getsource(moe.experts_dense))
lw = model.weights.layer(0)
x = np.random.default_rng(1).standard_normal((6, text.hidden_size)).astype(np.float32)
w, idx = moe.router(model.ops, x, lw["router.proj.weight"], lw["router.scale"], lw["router.per_expert_scale"],
                    text.top_k_experts, text.rms_norm_eps)
grouped = moe.experts(x, idx, w, lw["experts.gate_up_proj"], lw["experts.down_proj"])
dense = moe.experts_dense(x, idx, w, lw["experts.gate_up_proj"], lw["experts.down_proj"])
print("largest difference:", np.abs(grouped - dense).max())

# %% [markdown]
# ## Why a 256-token canvas touches every expert
# With 128 experts and 8 choices per token, the chance that one expert is chosen by none of 256
# tokens (if choices were uniform) is (1 - 8/128)^256: so every step reads every expert's weights.

# %%
print("P(an expert is untouched) =", (1 - 8 / 128) ** 256)
print("expected untouched experts per layer:", 128 * (1 - 8 / 128) ** 256)

# %% [markdown]
# ## Exercises
# 1. Which expert is the most used in each layer? Does it change with the prompt?
# 2. Replace `per_expert_scale` by ones (`model.weights._arrays[...] = np.ones(...)`) and compare
#    the logits: how much do the scales matter?
