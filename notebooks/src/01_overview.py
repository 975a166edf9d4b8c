# %% [markdown]
# # 1. Overview: a canvas of noise becomes an answer
#
# DiffusionGemma writes text by **discrete diffusion**. A causal *encoder* reads the prompt into a
# KV cache. Then a bidirectional *decoder* looks at a whole **canvas** of tokens at once, starting
# from random tokens, and over a few denoising steps replaces them with text: at each step it
# proposes a token for every position, keeps the ones it is sure about and draws fresh noise
# everywhere else. When the canvas stops changing it is committed, encoded into the cache, and the
# next canvas begins.
#
# This notebook runs the whole pipeline on the **embedded model** (`weights/embedded/`): a tiny
# DiffusionGemma, the real architecture in miniature, trained to sort digits. Everything here
# runs on a laptop CPU in seconds.

# %%
import numpy as np
import matplotlib.pyplot as plt

import tinydg
from tinydg.chat_format import encode_prompt, format_prompt, parse_response
from tinydg.tokenizer import load_tokenizer

model = tinydg.load()                      # no path: the embedded model
tokenizer = load_tokenizer(model.path)
print(model.path)
print(f"{model.text.num_hidden_layers} layers, hidden {model.text.hidden_size}, "
      f"{model.text.num_experts} experts (top {model.text.top_k_experts}), canvas {model.config.canvas_length}, "
      f"vocabulary {model.text.vocab_size}")

# %% [markdown]
# ## The prompt
# The model speaks the Gemma 4 chat format. Control tokens such as `<|turn>` are single tokens;
# everything else is one token per character in this tiny tokenizer.

# %%
messages = [{"role": "user", "content": "sort 7 2 9 2 4 0 5"}]
print(format_prompt(messages))
ids = np.array([encode_prompt(tokenizer, messages)])
print(ids.shape, ids[0, :12], "...")

# %% [markdown]
# ## Denoising, step by step
# `tinydg.stream` yields a `Step` after every denoising step and a `Canvas` when a canvas is
# committed. Each step carries the current draft (the most likely token everywhere), which
# positions were accepted, the per-position entropy and the next canvas (accepted tokens plus
# fresh noise).

# %%
steps = []
for event in tinydg.stream(model, ids, seed=0):
    if isinstance(event, tinydg.Step):
        steps.append(event)
        print(f"step {event.cur_step:2d}  accepted {int(event.accepted.sum()):2d}/{event.accepted.size}  "
              f"mean entropy {float(event.entropy.mean()):.3f}  draft: {tokenizer.decode(event.draft[0].tolist())!r}")
    else:
        print("committed:", repr(tokenizer.decode(event.tokens[0].tolist())))

# %% [markdown]
# ## The canvas as a picture
# Rows are denoising steps, columns are canvas positions. Left: the per-position entropy of the
# model's distribution (dark = certain). Right: which positions were accepted at that step.

# %%
entropy = np.stack([s.entropy[0] for s in steps])
accepted = np.stack([s.accepted[0] for s in steps])
fig, axes = plt.subplots(1, 2, figsize=(10, 1.2 + 0.5 * len(steps)))
axes[0].imshow(entropy, cmap="magma", aspect="auto")
axes[0].set_title("entropy per position")
axes[1].imshow(accepted, cmap="Greens", aspect="auto", vmin=0, vmax=1)
axes[1].set_title("accepted")
for ax in axes:
    ax.set_xlabel("canvas position")
    ax.set_ylabel("step")
plt.tight_layout()
plt.show()

# %% [markdown]
# ## The answer
# `generate` runs the same loop to the end. `tokens_per_forward` counts the new tokens per decoder
# forward: a left-to-right model makes one token per forward; the diffusion model here makes
# several.

# %%
out = tinydg.generate(model, ids, seed=0)
text = tokenizer.decode(out.sequences[0, ids.shape[1]:].tolist())
print(repr(text))
print("answer:", parse_response(text).answer)
print("tokens per forward:", float(out.tokens_per_forward[0]), " forwards:", int(out.steps_per_canvas.sum()))

# %% [markdown]
# ## Exercises
# 1. Change the seed. Does the answer change? Does the number of steps?
# 2. Ask for a longer list (up to 12 digits). How many steps does the canvas need now?
# 3. Pass `max_denoising_steps=1` to `generate`: the whole canvas is committed after one forward.
#    Try a few prompts: how often is it still right? (`weights/embedded/EVAL.md` measured it.)
