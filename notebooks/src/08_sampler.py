# %% [markdown]
# # 8. The sampler: from logits to a new canvas
#
# One denoising step turns the decoder's logits into the next canvas (`tinydg/sampler.py`):
#
# 1. **temperature**: divide the logits by T, which falls linearly from `t_max` to `t_min`;
# 2. **propose** a token per position by sampling (an exponential race), and take the argmax as the
#    *draft* (what would be committed if the canvas stopped now);
# 3. **entropy** of each position's distribution;
# 4. **accept** the lowest-entropy positions while the entropies before them sum to at most the
#    entropy bound;
# 5. **renoise**: accepted positions keep their proposal, the rest get fresh random tokens;
# 6. **stop** a row when its draft is stable and its mean entropy is low.

# %%
import inspect

import numpy as np
import matplotlib.pyplot as plt

import tinydg
from tinydg import sampler
from tinydg.chat_format import encode_prompt, parse_response
from tinydg.rng import TorchCPUGenerator
from tinydg.tokenizer import load_tokenizer
from tinydg.tools.embedded import task

model = tinydg.load()
tokenizer = load_tokenizer(model.path)
g = model.generation_config
print(f"max steps {g.max_denoising_steps}, t_max {g.t_max}, t_min {g.t_min}, entropy bound {g.entropy_bound}, "
      f"stability {g.stability_threshold}, confidence {g.confidence_threshold}")

# %% [markdown]
# ## The temperature schedule

# %%
N = g.max_denoising_steps
temps = [float(sampler.temperature(s, N, g.t_min, g.t_max)) for s in range(N, 0, -1)]
plt.figure(figsize=(5, 2.5))
plt.plot(range(1, N + 1), temps, "o-")
plt.xlabel("step")
plt.ylabel("temperature")
plt.tight_layout()
plt.show()

# %% [markdown]
# ## One step by hand
# Encode a prompt, start from a random canvas, and run the decoder once.

# %%
C, V = model.config.canvas_length, model.text.vocab_size
prompt = np.array([encode_prompt(tokenizer, [{"role": "user", "content": "sort 8 1 6 3 3 9 0 2 7"}])])
_, cache = tinydg.encode(model, prompt)
rng = TorchCPUGenerator(0)
canvas = sampler.initialize_canvas(rng, 1, C, V)
logits = tinydg.denoise(model, canvas, cache)
processed = logits / sampler.temperature(N, N, g.t_min, g.t_max)
proposal, draft, entropy = sampler.propose(processed, rng)
print("draft:", repr(tokenizer.decode(draft[0].tolist())))
print("entropy per position:", np.round(entropy[0], 2))

# %% [markdown]
# ## Which positions are accepted

# %%
print(inspect.getsource(sampler.accept))
for bound in sorted({0.01, 0.1, 1.0, g.entropy_bound}):  # the checkpoint's bound among them
    accepted = sampler.accept(entropy, bound)
    print(f"bound {bound:5}: {int(accepted.sum()):2d} of {C} accepted")
accepted = sampler.accept(entropy, g.entropy_bound)
order = np.argsort(entropy[0])
plt.figure(figsize=(7, 2.5))
plt.bar(range(C), entropy[0][order], color=np.where(accepted[0][order], "tab:green", "tab:gray"))
plt.xlabel("positions, lowest entropy first")
plt.ylabel("entropy (nats)")
plt.title("green: accepted at the checkpoint's bound")
plt.tight_layout()
plt.show()

# %% [markdown]
# ## Renoise, and the next step
# Accepted positions keep their proposal; every other position gets a fresh uniform token. The
# next forward is self-conditioned on `processed`.

# %%
new_canvas = sampler.renoise(np.where(accepted, proposal, canvas), accepted, rng, V)
print("canvas after step 1:", repr(tokenizer.decode(new_canvas[0].tolist())))
logits = tinydg.denoise(model, new_canvas, cache, processed)
print("draft at step 2:    ", repr(tokenizer.decode(logits[0].argmax(-1).tolist())))

# %% [markdown]
# ## The entropy bound trades forwards for safety
# A small bound accepts few tokens per step (more forwards, each more careful); a large one
# accepts many at once.

# %%
problems = task.test_problems(np.random.default_rng(3), 30)
for bound in sorted({0.05, 0.3, g.entropy_bound, 10.0}):
    right, tpf = 0, []
    for digits in problems:
        ids = np.array([encode_prompt(tokenizer, [{"role": "user", "content": task.prompt_text(digits)}])])
        out = tinydg.generate(model, ids, seed=0, entropy_bound=bound)
        right += task.is_correct(digits, parse_response(tokenizer.decode(out.sequences[0, ids.shape[1]:].tolist())).answer)
        tpf.append(float(out.tokens_per_forward[0]))
    print(f"entropy bound {bound:5}: {right}/{len(problems)} right, {np.mean(tpf):.2f} tokens per forward")

# %% [markdown]
# ## Tokens per forward against the number of steps
# With at most N denoising steps the canvas is committed after N forwards at the latest.

# %%
rows = []
for n in (1, 2, 4, 16):
    right, forwards = 0, []
    for digits in problems:
        ids = np.array([encode_prompt(tokenizer, [{"role": "user", "content": task.prompt_text(digits)}])])
        out = tinydg.generate(model, ids, seed=0, max_denoising_steps=n)
        right += task.is_correct(digits, parse_response(tokenizer.decode(out.sequences[0, ids.shape[1]:].tolist())).answer)
        forwards.append(int(out.steps_per_canvas.sum()))
    rows.append((n, right / len(problems), np.mean(forwards)))
    print(f"at most {n:2d} steps: {right}/{len(problems)} right, {np.mean(forwards):.2f} forwards per canvas")
plt.figure(figsize=(5, 2.6))
plt.plot([r[0] for r in rows], [r[1] for r in rows], "o-")
plt.xscale("log", base=2)
plt.xlabel("max denoising steps")
plt.ylabel("exact match")
plt.tight_layout()
plt.show()

# %% [markdown]
# ## Exercises
# 1. Set `stability_threshold=0` in `generate`. What changes in the number of steps?
# 2. Replace the exponential race by the argmax (`proposal = draft`). Does accuracy change on this
#    model? Why might it matter for a model that is less sure of itself?
# 3. `sampler.accept` always accepts the lowest-entropy position, whatever the bound. Why is
#    that needed for the loop to make progress?
