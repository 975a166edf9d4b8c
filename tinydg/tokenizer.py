"""The tokenizer: a thin wrapper over the Hugging Face `tokenizers` library.

A checkpoint folder holds `tokenizer.json` (the real one: 262144 tokens, a SentencePiece-style
BPE with byte fallback) and the chat template (`chat_template.jinja`, or the `chat_template` key
of `tokenizer_config.json`). `load_tokenizer(folder)` reads them; `Tokenizer` exposes the few
operations tinydg needs: text <-> ids, token <-> id.

`build_tokenizer(alphabet)` makes a small tokenizer for tiny models and tests. Its model is the
real one in miniature: a BPE with no merges (one character = one token) and byte fallback (a
character outside the alphabet becomes its UTF-8 bytes, `<0x00>`..`<0xFF>`, so every text
encodes). Its vocabulary begins with the Gemma 4 control tokens of `SPECIAL_TOKENS`:

    real_ids=False (packed):  [ 17 control tokens | alphabet | 256 bytes ]
    real_ids=True:            [ each control token at its real id, <unusedN> filling the gaps
                                (N = the id) up to 258882 | alphabet | 256 bytes ]

The control tokens are "added tokens": the library recognizes them inside any text and maps
each to its one id, exactly as the Hugging Face tokenizer does. Code looks them up by string
(`token_to_id("<|turn>")`), never by number, so it runs unchanged on either layout and on the
real vocabulary.

Sources: the `tokenizers` documentation (models.BPE byte_fallback, decoders.ByteFallback/Fuse,
AddedToken); the special ids of `google/diffusiongemma-26B-A4B-it` (facts sheet, section 6).
"""

import numbers
import os
import re
from collections import abc

from tokenizers import AddedToken, decoders, models
from tokenizers import Tokenizer as _Backend

from . import files
from .errors import CheckpointError, InputError, shown

# The Gemma 4 control tokens and their ids in the real checkpoint's tokenizer.json.
SPECIAL_TOKENS = {
    "<pad>": 0,
    "<eos>": 1,
    "<bos>": 2,
    "<|tool>": 46, "<tool|>": 47,                       # a tool declaration in the system turn
    "<|tool_call>": 48, "<tool_call|>": 49,             # a call the model makes
    "<|tool_response>": 50, "<tool_response|>": 51,     # the tool's answer
    "<|think|>": 98,                                    # switches thinking on (system turn)
    "<|channel>": 100, "<channel|>": 101,               # the model's thought channel
    "<|turn>": 105, "<turn|>": 106,                     # one turn of the conversation
    "<|image>": 255999, "<|image|>": 258880, "<image|>": 258882,   # begin / soft token / end of an image
}

# Printable ASCII plus newline and tab: enough for prompts in the tests and the demo.
DEFAULT_ALPHABET = "\n\t" + "".join(chr(c) for c in range(32, 127))

TOKENIZER_FILE = "tokenizer.json"
TEMPLATE_FILE = "chat_template.jinja"
TOKENIZER_CONFIG_FILE = "tokenizer_config.json"

# A code point in U+D800..U+DFFF: half of a UTF-16 pair, no character on its own. Python strings can
# hold one (os.fsdecode, errors='surrogateescape' make them from bytes that are not UTF-8); the
# tokenizer library cannot take them.
_SURROGATE = re.compile("[\ud800-\udfff]")


class Tokenizer:
    """Text <-> token ids. `chat_template` is the checkpoint's Jinja template text, or None."""

    def __init__(self, backend, chat_template=None):
        self._backend = backend
        self.chat_template = chat_template

    @property
    def vocab_size(self):
        return self._backend.get_vocab_size(with_added_tokens=True)

    def encode(self, text):
        """str -> list of ids. Adds no <bos>/<eos> (the chat format writes <bos> itself); special
        token strings inside the text become their single ids, as in Hugging Face."""
        if not isinstance(text, str):
            raise InputError(f"encode expects a str, got {type(text).__name__}")
        lone = _SURROGATE.search(text)
        if lone:
            raise InputError(f"text to encode has a lone surrogate (U+{ord(lone.group()):04X}) at index "
                             f"{lone.start()}, which is no character (text decoded from bytes that are not UTF-8?)")
        try:
            return self._backend.encode(text, add_special_tokens=False).ids
        except MemoryError:
            raise
        except Exception as e:  # the library raises a TypeError or a bare Exception, whatever the cause
            raise InputError(f"the tokenizer cannot encode this text: {shown(str(e))}") from None

    def decode(self, ids, skip_special_tokens=False):
        """ids -> str. Special tokens are kept as their strings unless skip_special_tokens."""
        ids = self._check_ids(ids)
        if not isinstance(skip_special_tokens, bool):
            raise InputError(f"skip_special_tokens must be True or False, got {shown(skip_special_tokens)}")
        return self._backend.decode(ids, skip_special_tokens=skip_special_tokens)

    def token_to_id(self, token):
        token_id = self._backend.token_to_id(token)
        if token_id is None:
            raise InputError(f"token {token!r} is not in the tokenizer's vocabulary")
        return token_id

    def id_to_token(self, token_id):
        (token_id,) = self._check_ids([token_id])
        return self._backend.id_to_token(token_id)

    def save(self, folder):
        """Write tokenizer.json (and chat_template.jinja when there is a template) into folder."""
        os.makedirs(folder, exist_ok=True)
        self._backend.save(os.path.join(folder, TOKENIZER_FILE))
        if self.chat_template is not None:
            with open(os.path.join(folder, TEMPLATE_FILE), "w", encoding="utf-8") as f:
                f.write(self.chat_template)

    def _check_ids(self, ids):
        """ids as a list of Python ints, each inside the vocabulary. Integers only, Python's or NumPy's:
        a float, a bool or a string is refused rather than read as a token."""
        if isinstance(ids, (str, bytes)) or not isinstance(ids, abc.Iterable):
            raise InputError(f"token ids must be a sequence of integers, got {type(ids).__name__}")
        ids = list(ids)
        wrong = [i for i in ids if isinstance(i, bool) or not isinstance(i, numbers.Integral)]
        if wrong:
            raise InputError(f"token ids must be integers, got {shown(wrong[0])} ({type(wrong[0]).__name__})")
        ids = [int(i) for i in ids]
        bad = [i for i in ids if not 0 <= i < self.vocab_size]
        if bad:
            raise InputError(f"token ids hold {shown(bad[0])}, outside the vocabulary [0, {self.vocab_size})")
        return ids


def load_tokenizer(folder):
    """Read tokenizer.json and the chat template from a checkpoint folder (through tinydg.files:
    regular files only, each under its size cap)."""
    path = os.path.join(folder, TOKENIZER_FILE)
    text = files.read_text(path, files.TOKENIZER_MAX_BYTES, CheckpointError)
    try:
        backend = _Backend.from_str(text)  # the library's JSON parser limits nesting to 128 levels
    except Exception as e:  # the library raises a bare Exception for every parse problem
        raise CheckpointError(f"{path}: not a valid {TOKENIZER_FILE} ({str(e)[:200]})") from None
    return Tokenizer(backend, _read_chat_template(folder))


def _read_chat_template(folder):
    """chat_template.jinja wins; else tokenizer_config.json's "chat_template" (a string, or a list
    of {"name", "template"} of which we take "default"); else None."""
    path = os.path.join(folder, TEMPLATE_FILE)
    template = files.read_text(path, files.TEMPLATE_MAX_BYTES, CheckpointError, missing_ok=True)
    if template is not None:
        # newlines as Python's text mode reads them, as transformers does: \r\n and \r become \n
        return template.replace("\r\n", "\n").replace("\r", "\n")
    path = os.path.join(folder, TOKENIZER_CONFIG_FILE)
    config = files.read_json(path, files.TOKENIZER_CONFIG_MAX_BYTES, CheckpointError, missing_ok=True)
    if config is None:
        return None
    if not isinstance(config, dict):
        raise CheckpointError(f"{path}: not a JSON object")
    template = config.get("chat_template")
    if isinstance(template, list):
        template = next((t.get("template") for t in template if isinstance(t, dict) and t.get("name") == "default"),
                        None)
    if template is not None and not isinstance(template, str):
        raise CheckpointError(f"{path}: chat_template must be a string, got {type(template).__name__}")
    return template


def build_tokenizer(alphabet=DEFAULT_ALPHABET, real_ids=False, chat_template=None):
    """A character-level tokenizer whose vocabulary starts with the Gemma 4 control tokens.

    real_ids=False packs them at ids 0..16 in table order (pad=0, eos=1, bos=2, ...);
    real_ids=True puts each at its real id, so the vocabulary exceeds 258882 entries.
    """
    if not isinstance(alphabet, str) or not alphabet:
        raise InputError("alphabet must be a non-empty str of characters")
    vocab = {}                                          # token string -> id, ids in insertion order
    if real_ids:
        real = {token_id: token for token, token_id in SPECIAL_TOKENS.items()}
        for token_id in range(max(real) + 1):
            vocab[real.get(token_id, f"<unused{token_id}>")] = token_id
    else:
        for token in SPECIAL_TOKENS:
            vocab[token] = len(vocab)
    for char in dict.fromkeys(alphabet):                # each character once, in order
        vocab.setdefault(char, len(vocab))
    for byte in range(256):
        vocab[f"<0x{byte:02X}>"] = len(vocab)

    backend = _Backend(models.BPE(vocab, [], byte_fallback=True))   # no merges: one char, one token
    backend.decoder = decoders.Sequence([decoders.ByteFallback(), decoders.Fuse()])
    backend.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in SPECIAL_TOKENS])
    return Tokenizer(backend, chat_template)
