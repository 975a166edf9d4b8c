# %% [markdown]
# # 2. Tokens and the Gemma 4 chat format
#
# A language model reads integers. The tokenizer (`tokenizer.json`, read with the `tokenizers`
# library) maps text to ids; a handful of **control tokens** mark the structure of a conversation.
# The real DiffusionGemma has a 262,144-token vocabulary; the embedded model uses one token per
# character plus the same control tokens, so the same code (`tinydg/chat_format.py`) serves both.

# %%
import tinydg
from tinydg.chat_format import encode_prompt, format_prompt, parse_response, split_special
from tinydg.tokenizer import SPECIAL_TOKENS, load_tokenizer

tokenizer = load_tokenizer(tinydg.load().path)
print("vocabulary:", tokenizer.vocab_size)
for name, real_id in SPECIAL_TOKENS.items():
    print(f"{name:20s} real id {real_id:6d}   here {tokenizer.token_to_id(name)}")

# %% [markdown]
# ## Text to ids and back

# %%
ids = tokenizer.encode("sort 3 1 2")
print(ids)
print([tokenizer.id_to_token(i) for i in ids])
print(repr(tokenizer.decode(ids)))

# %% [markdown]
# ## Turns
# A conversation is a list of turns. The prompt ends with the opening of the model's turn; with
# thinking off, it also holds an empty thought channel, so the model writes its answer at once.

# %%
messages = [{"role": "user", "content": "sort 3 1 2"}]
print(format_prompt(messages))
print("---- thinking on:")
print(format_prompt(messages, thinking=True))
print("---- a second turn (earlier thoughts are stripped):")
history = messages + [{"role": "assistant", "content": "<|channel>thought\nthree numbers<channel|>1 2 3"},
                      {"role": "user", "content": "sort 9 8"}]
print(format_prompt(history))

# %% [markdown]
# ## Control tokens are single ids
# `encode_prompt` splits the formatted text at the control tokens and encodes the text between
# them: `<|turn>` is one id, not seven characters.

# %%
text = format_prompt(messages)
pieces = split_special(text, SPECIAL_TOKENS)
print(pieces)
ids = encode_prompt(tokenizer, messages)
print(len(text), "characters ->", len(ids), "tokens")
assert ids == tokenizer.encode(text)

# %% [markdown]
# ## Reading the answer
# The model's turn ends at `<turn|>`; `parse_response` splits off a thought channel, if any.

# %%
print(parse_response("<|channel>thought\nsmall first<channel|>1 2 3<turn|><eos><pad><pad>"))
print(parse_response("1 2 3<turn|><pad>"))

# %% [markdown]
# ## Exercises
# 1. Encode a string with a character outside printable ASCII (say `é`). What do the ids look like?
#    (The tokenizer falls back to bytes.)
# 2. What does `format_prompt` do with a system turn? Try `[{"role": "system", "content": "Be brief."}, ...]`.
