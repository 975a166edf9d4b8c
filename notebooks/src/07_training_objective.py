# %% [markdown]
# # 7. The forward process and the training objective
#
# A diffusion language model learns to undo noise. DiffusionGemma's noise is **uniform-state**:
# each canvas position is, with probability `t`, replaced by a token drawn uniformly from the
# vocabulary. Training picks `t ~ U(eps, 1)` per example, corrupts the target canvas, and asks the
# decoder to predict the clean canvas everywhere. `tinydg/tools/embedded/training.py` writes the
# objective out in NumPy (forward only); the embedded model was trained with exactly these numbers,
# computed by torch (`tinydg/tools/embedded/train.py`), and a test checks that the two agree.

# %%
import inspect

import numpy as np
import matplotlib.pyplot as plt

import tinydg
from tinydg.tokenizer import load_tokenizer
from tinydg.tools.embedded import data, task, training

model = tinydg.load()
tokenizer = load_tokenizer(model.path)
C, V = model.config.canvas_length, model.text.vocab_size
print(inspect.getsource(training.corrupt))

# %% [markdown]
# ## One training example
# An example is a conversation as `tinydg.Chat` feeds it to the model (`tinydg/tools/embedded/data.py`):
# the first turn, the model's answer as it wrote it (its `<eos>` fill masked out, shown `_`, but still
# taking positions), then the new turn. The target canvas is the next answer, `<turn|>`, then `<eos>`
# to the end of the canvas (the EOS fill is supervised too: the model learns where the answer ends).

# %%
conversation = [task.sort_turn([7, 2, 9, 2, 4, 0, 5]), task.reverse_turn([0, 2, 2, 4, 5, 7, 9])]
ids, valid, target = data.example(tokenizer, conversation, thinking=False, system=None, canvas_length=C, block=0)
print("".join(tokenizer.decode([int(i)]) if v else "_" for i, v in zip(ids, valid)))
print(repr(tokenizer.decode(target.tolist())))
prompt, mask, targets = ids[None], valid[None], target[None]  # a batch of one

# %% [markdown]
# ## Corruption at different noise levels

# %%
rng = np.random.default_rng(0)
for t in (0.1, 0.5, 0.9):
    noise = training.draw_noise(rng, 1, C, V)
    noise = training.Noise(np.array([t], np.float32), noise.u, noise.fresh, noise.sc)
    noisy = training.corrupt(targets, noise)
    shown = "".join(tokenizer.decode([int(x)]) if x == y else "·" for x, y in zip(noisy[0], targets[0]))
    print(f"t = {t}: {int((noisy != targets).sum()):2d} of {C} positions corrupted   {shown[:40]!r}")

# %% [markdown]
# ## The loss against the noise level
# `training.losses` runs the encoder on the prompt (its masked tokens left out), the decoder
# twice on the noisy canvas (the second pass self-conditioned on the first for the examples that
# drew `sc`), and returns the diffusion cross-entropy and the encoder's next-token loss. On the trained model the loss stays
# small until most of the canvas is noise: the prompt alone says what the answer must be.

# %%
ts = np.linspace(0.05, 1.0, 12)
losses = []
for t in ts:
    noise = training.draw_noise(np.random.default_rng(1), 8, C, V)
    noise = training.Noise(np.full(8, t, np.float32), noise.u, noise.fresh, noise.sc)
    diffusion, encoder = training.losses(model, np.repeat(prompt, 8, 0), np.repeat(mask, 8, 0), np.repeat(targets, 8, 0), noise)
    losses.append(diffusion)
plt.figure(figsize=(5, 3))
plt.plot(ts, losses, "o-")
plt.xlabel("noise level t")
plt.ylabel("diffusion loss (nats / position)")
plt.yscale("log")
plt.title("trained embedded model")
plt.tight_layout()
plt.show()

# %% [markdown]
# ## Self-conditioning
# The decoder can read its own previous prediction (`self_conditioning_logits`): the softmax of
# the last logits, embedded with the same embedding matrix. In training, pass 1 runs without it
# and pass 2 uses pass 1's logits for half of the examples, so the model learns both cases.

# %%
noise = training.draw_noise(np.random.default_rng(2), 8, C, V)
high = training.Noise(np.full(8, 0.9, np.float32), noise.u, noise.fresh, noise.sc)
with_sc = training.Noise(high.t, high.u, high.fresh, np.ones(8, bool))
without_sc = training.Noise(high.t, high.u, high.fresh, np.zeros(8, bool))
P, M, T = np.repeat(prompt, 8, 0), np.repeat(mask, 8, 0), np.repeat(targets, 8, 0)
print("t = 0.9, loss without self-conditioning: %.4f" % training.losses(model, P, M, T, without_sc)[0])
print("t = 0.9, loss with self-conditioning:    %.4f" % training.losses(model, P, M, T, with_sc)[0])

# %% [markdown]
# ## Exercises
# 1. Plot the encoder's next-token loss against `t`. Why does it not depend on `t`?
# 2. Compute the loss on the untrained stand-in (`tinydg.load("../weights/demo")`, whose tokenizer
#    is the same). What value do you expect for a model that knows nothing? (Hint: `log V`.)
# 3. Read `tinydg/tools/embedded/train.py: torch_losses` next to `training.losses`: which line of
#    one matches which line of the other?
