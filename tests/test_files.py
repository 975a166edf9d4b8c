"""The files of a checkpoint folder that tinydg reads whole (tinydg.files): special files are refused
before they are opened, sizes are capped, text must be UTF-8 and JSON neither too deep nor ambiguous.
Each case names the file in its error and ends at once (a named pipe must not hang the load)."""

import builtins
import contextlib
import io
import json
import os
import shutil
import signal
import struct

import pytest

import tinydg
from helpers import EMBEDDED, FIXTURES, ROOT
from tinydg import files
from tinydg.checkpoint import INDEX_NAME, open_checkpoint, read_header
from tinydg.config import load_config
from tinydg.errors import CheckpointError, ConfigError, TinyDGError
from tinydg.tokenizer import load_tokenizer

F32 = os.path.join(FIXTURES, "sliding_full_f32")
SHARDED = os.path.join(FIXTURES, "bf16_sharded")

needs_posix = pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="named pipes and /dev/zero are POSIX")


@contextlib.contextmanager
def deadline(seconds=20):
    """Fail instead of hanging: a blocking open() of a pipe is interrupted by SIGALRM."""
    def expire(signum, frame):
        raise TimeoutError(f"still running after {seconds} s")
    previous = signal.signal(signal.SIGALRM, expire)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


@pytest.fixture
def checkpoint(tmp_path):
    """A copy of the embedded model: config, generation config, weights, tokenizer and chat template."""
    return shutil.copytree(EMBEDDED, tmp_path / "ckpt")


@pytest.fixture
def sharded(tmp_path):
    return shutil.copytree(SHARDED, tmp_path / "sharded")


def first_shard(folder):
    return sorted(p for p in os.listdir(folder) if p.startswith("model-"))[0]


# Each file tinydg reads, how it is read, and the error class it raises.
READERS = {
    "config.json": (load_config, ConfigError),
    "generation_config.json": (load_config, ConfigError),
    "model.safetensors": (open_checkpoint, CheckpointError),
    "tokenizer.json": (load_tokenizer, CheckpointError),
    "chat_template.jinja": (load_tokenizer, CheckpointError),
    "tokenizer_config.json": (load_tokenizer, CheckpointError),
}


def replace_with(folder, name, make):
    path = os.path.join(folder, name)
    if os.path.exists(path):
        os.remove(path)
    make(path)
    return path


def without_template(folder):
    """tokenizer_config.json is read only when there is no chat_template.jinja."""
    os.remove(os.path.join(folder, "chat_template.jinja"))


# --- special files ------------------------------------------------------------------------------------

@needs_posix
@pytest.mark.parametrize("name", sorted(READERS))
def test_a_named_pipe_is_refused_without_being_opened(checkpoint, name, monkeypatch):
    read, error = READERS[name]
    if name == "tokenizer_config.json":
        without_template(checkpoint)
    path = replace_with(checkpoint, name, os.mkfifo)
    opened = []
    for module, fn in [(builtins, "open"), (io, "open"), (os, "open")]:
        real = getattr(module, fn)
        monkeypatch.setattr(module, fn, lambda p, *a, _real=real, **k: opened.append(str(p)) or _real(p, *a, **k))
    with deadline(), pytest.raises(error, match=f"{name} is a named pipe, not a regular file"):
        read(str(checkpoint))
    monkeypatch.undo()
    assert path not in opened


@needs_posix
def test_a_named_pipe_as_index_or_shard(sharded):
    shard = first_shard(sharded)
    replace_with(sharded, shard, os.mkfifo)
    with deadline(), pytest.raises(CheckpointError, match=f"{shard} is a named pipe"):
        tinydg.load(str(sharded))
    replace_with(sharded, INDEX_NAME, os.mkfifo)
    with deadline(), pytest.raises(CheckpointError, match=f"{INDEX_NAME} is a named pipe"):
        open_checkpoint(sharded)


@pytest.mark.parametrize("name", sorted(READERS))
def test_a_directory_in_the_place_of_a_file(checkpoint, name):
    read, error = READERS[name]
    if name == "tokenizer_config.json":
        without_template(checkpoint)
    replace_with(checkpoint, name, os.mkdir)
    with pytest.raises(error, match=f"{name} is a directory, not a regular file"):
        read(str(checkpoint))


@needs_posix
@pytest.mark.parametrize("name", ["tokenizer.json", "chat_template.jinja", "config.json", "model.safetensors"])
def test_a_symlink_to_dev_zero_is_never_read(checkpoint, name):
    read, error = READERS[name]
    replace_with(checkpoint, name, lambda p: os.symlink("/dev/zero", p))
    with deadline(), pytest.raises(error, match=f"{name} is a character device \\(through a symlink\\)"):
        read(str(checkpoint))


def test_symlinks_to_regular_files_are_followed(checkpoint, tmp_path):
    # the Hugging Face cache is a folder of symlinks into a blob store
    blobs = tmp_path / "blobs"
    blobs.mkdir()
    for name in os.listdir(checkpoint):
        os.rename(checkpoint / name, blobs / name)
        os.symlink(blobs / name, checkpoint / name)
    tokenizer = load_tokenizer(str(checkpoint))
    model = tinydg.load(str(checkpoint))
    assert model.config.canvas_length == load_config(EMBEDDED)[0].canvas_length and tokenizer.chat_template


def test_a_symlink_that_leads_nowhere_is_not_an_absent_file(checkpoint):
    replace_with(checkpoint, "chat_template.jinja", lambda p: os.symlink(p + ".gone", p))
    with pytest.raises(CheckpointError, match="chat_template.jinja not found"):
        load_tokenizer(str(checkpoint))


# --- sizes --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("name, cap", [("config.json", files.CONFIG_MAX_BYTES),
                                       ("generation_config.json", files.CONFIG_MAX_BYTES),
                                       ("tokenizer.json", files.TOKENIZER_MAX_BYTES),
                                       ("chat_template.jinja", files.TEMPLATE_MAX_BYTES)])
def test_oversize_files_are_refused_unread(checkpoint, name, cap):
    read, error = READERS[name]
    os.truncate(os.path.join(checkpoint, name), cap + 1)  # sparse: no disk is used
    with pytest.raises(error, match=f"{name}: {cap + 1} bytes is larger than the {cap} bytes allowed"):
        read(str(checkpoint))


def test_oversize_index(sharded):
    os.truncate(os.path.join(sharded, INDEX_NAME), files.INDEX_MAX_BYTES + 1)
    with pytest.raises(CheckpointError, match=f"{INDEX_NAME}: .* is larger than"):
        open_checkpoint(sharded)


def test_real_sizes_are_within_the_caps():
    # the real checkpoint's tokenizer.json is about 32 MB, its index about 100 KB
    assert files.TOKENIZER_MAX_BYTES >= 4 * 32_000_000 and files.INDEX_MAX_BYTES >= 100 * 100_000
    for name, cap in [("config.json", files.CONFIG_MAX_BYTES), ("generation_config.json", files.CONFIG_MAX_BYTES)]:
        assert os.path.getsize(os.path.join(ROOT, "weights", "real", name)) * 100 < cap


@pytest.mark.skipif(not os.path.exists("/proc/self/maps"), reason="needs /proc")
def test_at_most_cap_plus_one_bytes_are_read_from_a_file_that_reports_no_size():
    # /proc files are regular files of size 0 whose content appears as they are read
    assert os.path.getsize("/proc/self/maps") == 0
    with pytest.raises(CheckpointError, match="larger than the 10 bytes allowed for this file"):
        files.read_bytes("/proc/self/maps", 10, CheckpointError)


# --- text and JSON --------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", sorted(set(READERS) - {"model.safetensors"}))
def test_bytes_that_are_not_utf8(checkpoint, name):
    read, error = READERS[name]
    if name == "tokenizer_config.json":
        without_template(checkpoint)
    (checkpoint / name).write_bytes(b'{"a": "\xff\xfe"}')
    with pytest.raises(error, match=f"{name} is not UTF-8: invalid start byte at byte 7"):
        read(str(checkpoint))


@pytest.mark.parametrize("name", ["config.json", "generation_config.json", "tokenizer.json", "tokenizer_config.json"])
def test_deep_nesting(checkpoint, name):
    read, error = READERS[name]
    if name == "tokenizer_config.json":
        without_template(checkpoint)
    (checkpoint / name).write_text("[" * 100_000 + "]" * 100_000)
    with pytest.raises(error, match=name):
        read(str(checkpoint))


def test_deep_nesting_of_the_index_and_a_header(sharded, tmp_path):
    (sharded / INDEX_NAME).write_text('{"weight_map": ' + "[" * 100_000)
    with pytest.raises(CheckpointError, match=f"{INDEX_NAME} is not valid JSON for tinydg: it nests deeper"):
        open_checkpoint(sharded)
    body = b'{"__metadata__": ' + b"[" * 70 + b"]" * 70 + b"}"
    path = tmp_path / "deep.safetensors"
    path.write_bytes(struct.pack("<Q", len(body)) + body)
    with pytest.raises(CheckpointError, match="header is not valid JSON for tinydg: it nests deeper than 64"):
        read_header(path)


def test_the_nesting_limit_is_exact():
    deepest = "[" * files.MAX_JSON_DEPTH + "]" * files.MAX_JSON_DEPTH
    assert files.parse_json(deepest.encode(), "x", CheckpointError) is not None
    with pytest.raises(CheckpointError, match="x is not valid JSON for tinydg: it nests deeper than 64 levels"):
        files.parse_json(("[" + deepest + "]").encode(), "x", CheckpointError)
    inside = '{"a": [' + '{"b": ' * (files.MAX_JSON_DEPTH - 2) + "1" + "}" * (files.MAX_JSON_DEPTH - 2) + "]}"
    assert files.parse_json(inside.encode(), "x", CheckpointError)["a"]
    with pytest.raises(CheckpointError, match="nests deeper"):
        files.parse_json(inside.replace("1", '{"c": 1}', 1).encode(), "x", CheckpointError)


@pytest.mark.parametrize("name", ["config.json", "generation_config.json", "tokenizer_config.json"])
def test_duplicate_keys_are_ambiguous(checkpoint, name):
    read, error = READERS[name]
    if name == "tokenizer_config.json":
        without_template(checkpoint)
    (checkpoint / name).write_text('{"a": 1, "b": {"c": 1, "c": 2}}')
    with pytest.raises(error, match=f"{name} is not valid JSON: duplicate key 'c'"):
        read(str(checkpoint))


def test_duplicate_tensor_in_the_index(sharded):
    text = (sharded / INDEX_NAME).read_text()
    name = next(iter(json.loads(text)["weight_map"]))
    duplicate = text.replace('"weight_map": {', f'"weight_map": {{"{name}": "x.safetensors", ', 1)
    (sharded / INDEX_NAME).write_text(duplicate)
    with pytest.raises(CheckpointError, match=f"duplicate key '{name}'"):
        open_checkpoint(sharded)


def test_invalid_json_names_the_file(checkpoint):
    for name in ("config.json", "generation_config.json"):
        copy = shutil.copytree(checkpoint, checkpoint.parent / name)
        (copy / name).write_text('{"a": ')
        with pytest.raises(ConfigError, match=f"{name} is not valid JSON"):
            load_config(str(copy))


def test_crlf_chat_template_reads_as_text_mode_does(checkpoint):
    template = (checkpoint / "chat_template.jinja").read_text()
    (checkpoint / "chat_template.jinja").write_bytes(template.replace("\n", "\r\n").encode())
    assert load_tokenizer(str(checkpoint)).chat_template == template


def test_a_missing_generation_config_is_fine_a_missing_config_is_not(checkpoint):
    os.remove(checkpoint / "generation_config.json")
    assert load_config(str(checkpoint))[1].max_denoising_steps == 48  # the reference's default
    os.remove(checkpoint / "config.json")
    with pytest.raises(ConfigError, match="config.json not found in"):
        load_config(str(checkpoint))


def test_every_error_is_tinydgs(tmp_path):
    for content in (b"", b"\x00" * 64, b"\xef\xbb\xbf{}", b"[]", b"null", b"1e400", b'"\\ud800"'):
        (tmp_path / "config.json").write_bytes(content)
        with pytest.raises(TinyDGError, match="config"):
            load_config(str(tmp_path))


def test_a_shard_replaced_by_a_pipe_after_its_header_was_read_is_refused(tmp_path):
    """open_checkpoint reads headers only; a tensor is mapped later, when first used: a shard swapped
    for a named pipe in between is refused then, not opened (which would block)."""
    folder = tmp_path / "ckpt"
    shutil.copytree(os.path.join(FIXTURES, "sliding_full_f32"), folder)
    model = tinydg.load(str(folder))
    os.remove(folder / "model.safetensors")
    os.mkfifo(folder / "model.safetensors")
    with deadline(), pytest.raises(CheckpointError, match="named pipe"):
        model.weights["model.decoder.norm.weight"]
