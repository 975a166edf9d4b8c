# %% [markdown]
# # 9. Block after block: EOS, padding, and a conversation
#
# `generate` produces one canvas at a time: denoise until it stops, commit it, start the next,
# until every row has written an end token or reached `max_new_tokens`. Tokens after a row's
# first end token become `<pad>`. The returned cache lets a conversation continue without
# encoding the history again.

# %%
import numpy as np

import tinydg
from tinydg.chat_format import encode_prompt, format_prompt, parse_response
from tinydg.tokenizer import load_tokenizer

model = tinydg.load()
tokenizer = load_tokenizer(model.path)
g = model.generation_config
print("end tokens:", [tokenizer.id_to_token(i) for i in g.eos_token_id], " pad:", tokenizer.id_to_token(g.pad_token_id))

# %% [markdown]
# ## A batch with left padding
# Prompts of different lengths are padded on the left; `attention_mask` marks the padding.

# %%
prompts = [encode_prompt(tokenizer, [{"role": "user", "content": c}]) for c in ("sort 3 1 2", "sort 9 0 8 1 7 2 6 3 5 4")]
T = max(len(p) for p in prompts)
ids = np.array([[g.pad_token_id] * (T - len(p)) + p for p in prompts])
mask = np.array([[0] * (T - len(p)) + [1] * len(p) for p in prompts])
out = tinydg.generate(model, ids, attention_mask=mask, seed=0, max_new_tokens=128)  # two canvases of 64
for row in out.sequences[:, T:]:
    print(repr(tokenizer.decode(row.tolist())[:60]))
print("canvases:", out.steps_per_canvas.shape[0], " tokens per forward:", out.tokens_per_forward)

# %% [markdown]
# ## A second turn from the cache
# `out.cache` holds everything but the last canvas. To continue a conversation, pass it with only
# what it does not hold yet: the last canvas as the model wrote it, its `<pad>` (and any `<eos>`)
# masked out with `attention_mask`, then the text that the chat format puts after the model's turn,
# ending with the new generation prompt. The embedded model was trained on conversations fed exactly
# this way, so `reverse it` can find the answer it has to reverse in the cache. The command line's
# `--chat` and `tinydg.Chat(model).send(text)` do the same.

# %%
first = [{"role": "user", "content": "sort 4 2 7"}]
ids = np.array([encode_prompt(tokenizer, first)])
out = tinydg.generate(model, ids, seed=0)
canvas = out.sequences[0, ids.shape[1]:]
answer = parse_response(tokenizer.decode(canvas.tolist())).answer
print("turn 1:", answer, "   cache holds", out.cache.length, "positions: the first prompt")
history = first + [{"role": "assistant", "content": answer}]
after = format_prompt(history + [{"role": "user", "content": "reverse it"}])[len(format_prompt(history, add_generation_prompt=False)):]
new_text = tokenizer.encode("\n" + after)                 # the canvas already ends the model's turn with <turn|>
new_ids = np.array([canvas.tolist() + new_text])
hidden = [g.pad_token_id, *g.eos_token_id]                # what pads or stops the canvas, but <turn|> stays
valid = np.array([[t not in hidden or t == tokenizer.token_to_id("<turn|>") for t in canvas] + [True] * len(new_text)])
print(repr(tokenizer.decode([t for t, v in zip(new_ids[0].tolist(), valid[0]) if v])))
out2 = tinydg.generate(model, new_ids, cache=out.cache, attention_mask=valid, seed=1)
print("turn 2:", repr(parse_response(tokenizer.decode(out2.sequences[0, new_ids.shape[1]:].tolist())).answer))
print("encoded", new_ids.shape[1], "new tokens; the cache now holds", out2.cache.length)

# %% [markdown]
# ## Exercises
# 1. Set `max_new_tokens=128` for a single short problem: how many canvases are produced, and what
#    is in the second one?
# 2. In the multi-turn example, why does `out.cache` not include the last canvas? (Think about
#    what the next call has to encode anyway.)
