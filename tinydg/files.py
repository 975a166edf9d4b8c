"""Reading the small files of a checkpoint folder, safely.

tinydg reads a few files whole: config.json, generation_config.json, processor_config.json,
model.safetensors.index.json, tokenizer.json, tokenizer_config.json and chat_template.jinja (the
safetensors shards are memory-mapped instead, and their headers read by tinydg.checkpoint through
`open_regular`). A checkpoint folder can come from anywhere, so every read here is bounded:

- only a regular file is opened; a symlink to one is fine (the Hugging Face cache is made of them).
  A named pipe would block the open forever, a device such as /dev/zero never ends, a directory is
  no file: each is refused after os.stat, before it is opened. The file is then opened non-blocking
  and checked again on the open descriptor, so one swapped for a pipe in between cannot hang either;
- each kind of file has a size cap (the *_MAX_BYTES constants below, generous for the real
  checkpoint), and at most cap + 1 bytes are read, so even a file that grows while it is read, or
  reports no size, is refused without being read whole;
- text must be UTF-8;
- JSON may nest at most MAX_JSON_DEPTH levels, and an object may not repeat a key (which of the two
  values wins depends on the parser that reads the file).

Every problem raises the caller's error class (ConfigError for the config files, CheckpointError for
the others) with the file's path in the message.
"""

import json
import os
import stat

MiB = 2**20

# Size caps, per kind of file; the real DiffusionGemma checkpoint's sizes in brackets.
CONFIG_MAX_BYTES = 4 * MiB  # config.json [about 2.5 KB], generation_config.json [0.5 KB], processor_config.json
INDEX_MAX_BYTES = 64 * MiB  # model.safetensors.index.json, one line per tensor [about 100 KB]
TOKENIZER_MAX_BYTES = 128 * MiB  # tokenizer.json, the whole vocabulary and merges [about 32 MB]
TOKENIZER_CONFIG_MAX_BYTES = 64 * MiB  # tokenizer_config.json, which may list every added token
TEMPLATE_MAX_BYTES = 4 * MiB  # chat_template.jinja [tens of KB]

# The deepest JSON nesting accepted ([] is depth 1); the files above nest a few levels. Python's parser
# recurses once per level and raises RecursionError near 1000 levels: that is caught too.
MAX_JSON_DEPTH = 64

# Opening non-blocking makes open() on a pipe return at once instead of waiting for a writer; binary
# mode matters on Windows only. Either flag is 0 where the platform lacks it.
_OPEN_FLAGS = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_BINARY", 0)

_KINDS = ((stat.S_ISDIR, "a directory"), (stat.S_ISFIFO, "a named pipe"), (stat.S_ISCHR, "a character device"),
          (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket"))


def open_regular(path, error):
    """`path` opened for binary reading, once it is known to be a regular file (else `error`)."""
    try:
        mode = os.stat(path).st_mode
    except (OSError, ValueError) as e:  # ValueError: a NUL character in the path
        raise _cannot(path, "open", e, error) from None
    _check_regular(path, mode, error)
    try:
        f = open(os.open(path, _OPEN_FLAGS), "rb")
    except OSError as e:
        raise _cannot(path, "open", e, error) from None
    try:
        _check_regular(path, os.fstat(f.fileno()).st_mode, error)  # replaced since the os.stat?
    except BaseException:
        f.close()
        raise
    return f


def read_bytes(path, cap, error, missing_ok=False):
    """The whole content of the regular file `path`, at most `cap` bytes; None when `missing_ok`
    and nothing is at `path` (a symlink that leads nowhere is not nothing: it is refused)."""
    if missing_ok and not os.path.lexists(path):
        return None
    with open_regular(path, error) as f:
        size = os.fstat(f.fileno()).st_size
        if size > cap:
            raise error(f"{path}: {size} bytes is larger than the {cap} bytes allowed for this file")
        try:
            data = f.read(cap + 1)
        except OSError as e:
            raise _cannot(path, "read", e, error) from None
    if len(data) > cap:
        raise error(f"{path}: larger than the {cap} bytes allowed for this file (it grew while being read)")
    return data


def decode_utf8(data: bytes, where, error) -> str:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise error(f"{where} is not UTF-8: {e.reason} at byte {e.start}") from None


def read_text(path, cap, error, missing_ok=False):
    """`read_bytes`, decoded from UTF-8."""
    data = read_bytes(path, cap, error, missing_ok)
    return None if data is None else decode_utf8(data, path, error)


def read_json(path, cap, error, missing_ok=False):
    """`read_bytes`, parsed by `parse_json`."""
    data = read_bytes(path, cap, error, missing_ok)
    return None if data is None else parse_json(data, path, error)


def parse_json(data: bytes, where, error):
    """UTF-8 JSON bytes -> value; `where` starts every error message (a path, or "path: header")."""
    text = decode_utf8(data, where, error)
    try:
        value = json.loads(text, object_pairs_hook=_no_duplicate_keys)
        too_deep = not _nesting_within(value, MAX_JSON_DEPTH)
    except RecursionError:  # the parser recurses once per level: this is far deeper than the limit
        too_deep = True
    except ValueError as e:  # malformed JSON, a duplicate key, an integer past Python's digit limit
        raise error(f"{where} is not valid JSON: {str(e)[:200]}") from None
    if too_deep:
        raise error(f"{where} is not valid JSON for tinydg: it nests deeper than {MAX_JSON_DEPTH} levels")
    return value


def _no_duplicate_keys(pairs):
    out = {}
    for key, value in pairs:
        if key in out:
            text = repr(key)
            raise ValueError(f"duplicate key {text if len(text) <= 80 else text[:80] + '...'}")
        out[key] = value
    return out


def _nesting_within(value, limit) -> bool:
    """Whether no list or object in the parsed JSON `value` sits deeper than `limit`; iterative, so
    that it cannot recurse too deeply itself."""
    stack = [(value, 1)]
    while stack:
        node, depth = stack.pop()
        children = node.values() if isinstance(node, dict) else node if isinstance(node, list) else None
        if children is None:
            continue
        if depth > limit:
            return False
        stack.extend((child, depth + 1) for child in children if isinstance(child, (dict, list)))
    return True


def _check_regular(path, mode, error):
    if stat.S_ISREG(mode):
        return
    kind = next((name for test, name in _KINDS if test(mode)), "a special file")
    link = " (through a symlink)" if os.path.islink(path) else ""
    raise error(f"{path} is {kind}{link}, not a regular file: refused without reading it")


def _cannot(path, action, e, error):
    if isinstance(e, FileNotFoundError):
        return error(f"{os.path.basename(path)} not found in {os.path.dirname(path) or '.'}")
    return error(f"{path}: cannot {action}: {getattr(e, 'strerror', None) or e}")
