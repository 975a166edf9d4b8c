"""Tests for tinydg.checkpoint and its writer (tinydg.tools.safetensors_writer): round trips,
cross-checks against safetensors/torch, and damaged input."""

import builtins
import io
import json
import os
import re
import struct

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tinydg.bf16 import from_bits, to_bits
from tinydg.checkpoint import INDEX_NAME, open_checkpoint, read_header
from tinydg.errors import CheckpointError
from tinydg.tools.safetensors_writer import encode_header, save_safetensors, save_sharded

# Special values deliberately overflow float16.
pytestmark = pytest.mark.filterwarnings("ignore:overflow encountered in cast:RuntimeWarning")

import safetensors.numpy as safetensors_numpy

try:  # torch is only in the `reference` extra; the cross-checks against it skip without it.
    import safetensors.torch as safetensors_torch
    import torch
except ImportError:
    torch = safetensors_torch = None

needs_torch = pytest.mark.skipif(torch is None, reason="needs torch (the `reference` extra)")


def special_values(rng, shape=(5, 7)):
    """Random normals with zeros, infinities and denormals mixed in."""
    x = rng.standard_normal(shape).astype(np.float32)
    flat = x.reshape(-1)
    flat[:6] = [0.0, -0.0, np.inf, -np.inf, 1e-40, -3.0e38]
    return x


def raw_file(path, header, data=b""):
    """Write a safetensors file from a header given as a dict (JSON-encoded here) or as raw bytes."""
    body = header if isinstance(header, bytes) else json.dumps(header).encode()
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(body)) + body + data)
    return path


# ---------------------------------------------------------------------------------------------
# Round trips and cross-checks


@pytest.mark.parametrize("dtype, np_dtype", [("F32", np.float32), ("F16", np.float16), ("BF16", None)])
def test_round_trip(tmp_path, dtype, np_dtype):
    rng = np.random.default_rng(0)
    tensors = {"a.weight": special_values(rng), "b": np.float32(1.5), "empty": np.zeros((0, 3), np.float32)}
    path = tmp_path / "m.safetensors"
    save_safetensors(path, tensors, dtype=dtype, metadata={"format": "pt"})
    refs = read_header(path)
    assert list(refs) == list(tensors)
    for name, x in tensors.items():
        ref = refs[name]
        assert ref.dtype == dtype and ref.shape == np.shape(x) and ref.path == str(path)
        got = ref.load()
        assert got.dtype == np.float32 and got.shape == np.shape(x)
        if np_dtype is not None:
            want = np.asarray(x).astype(np_dtype).astype(np.float32)
        else:
            want = from_bits(to_bits(x))
        np.testing.assert_array_equal(got.view(np.uint32), want.view(np.uint32))


@pytest.mark.parametrize("dtype, np_dtype", [("F32", np.float32), ("F16", np.float16)])
def test_matches_safetensors_numpy(tmp_path, dtype, np_dtype):
    x = special_values(np.random.default_rng(1)).astype(np_dtype)
    theirs = tmp_path / "theirs.safetensors"
    safetensors_numpy.save_file({"x": x, "y": x[:2]}, str(theirs))
    refs = read_header(theirs)
    np.testing.assert_array_equal(refs["x"].raw(), x)
    np.testing.assert_array_equal(refs["y"].load(), x[:2].astype(np.float32))

    ours = tmp_path / "ours.safetensors"
    save_safetensors(ours, {"x": x}, dtype=dtype)
    back = safetensors_numpy.load_file(str(ours))["x"]
    assert back.dtype == np_dtype
    np.testing.assert_array_equal(back, x)


@needs_torch
def test_bf16_written_by_torch_loads_bit_exactly(tmp_path):
    t = torch.tensor(special_values(np.random.default_rng(2))).to(torch.bfloat16)
    path = tmp_path / "torch.safetensors"
    safetensors_torch.save_file({"w": t}, str(path))
    ref = read_header(path)["w"]
    assert ref.dtype == "BF16"
    np.testing.assert_array_equal(ref.load().view(np.uint32), t.float().numpy().view(np.uint32))
    np.testing.assert_array_equal(ref.raw(), t.view(torch.int16).numpy().view(np.uint16))


@needs_torch
def test_bf16_writer_rounds_like_torch(tmp_path):
    # Random bit patterns hit ties and near-overflow values far more often than normals do.
    bits = np.random.default_rng(3).integers(0, 2**32, size=20_000, dtype=np.uint64).astype(np.uint32)
    bits[:4] = [0x3F808000, 0x3F818000, 0x7F7FFFFF, 0x00008000]  # ties to even, overflow, denormal tie
    x = bits.view(np.float32)
    x = x[~np.isnan(x)]
    path = tmp_path / "ours.safetensors"
    save_safetensors(path, {"x": x}, dtype="BF16")
    theirs = safetensors_torch.load_file(str(path))["x"]
    np.testing.assert_array_equal(theirs.view(torch.int16).numpy().view(np.uint16),
                                  torch.tensor(x).to(torch.bfloat16).view(torch.int16).numpy().view(np.uint16))


def test_bf16_writer_keeps_nan_and_raw_uint16(tmp_path):
    # NaNs whose payload sits only in the low bits would become infinities if merely truncated.
    nan_low_payload = np.array([0x7F800001, 0xFF800001, 0x7FC00000], np.uint32).view(np.float32)
    bits = to_bits(nan_low_payload)
    assert np.isnan(from_bits(bits)).all()
    assert (bits == 0x7FC0).all()  # torch's rule: every NaN becomes the canonical quiet NaN

    patterns = np.arange(0, 2**16, 4099, dtype=np.uint16)
    path = tmp_path / "raw.safetensors"
    save_safetensors(path, {"p": patterns}, dtype="BF16")
    np.testing.assert_array_equal(read_header(path)["p"].raw(), patterns)


def test_writer_rejects_bad_input(tmp_path):
    with pytest.raises(CheckpointError, match="F64"):
        save_safetensors(tmp_path / "a.safetensors", {"x": np.zeros(2)}, dtype="F64")
    with pytest.raises(CheckpointError, match="floating-point"):
        save_safetensors(tmp_path / "a.safetensors", {"x": np.zeros(2, np.int32)})
    with pytest.raises(CheckpointError, match="floating-point"):
        save_safetensors(tmp_path / "a.safetensors", {"x": np.zeros(2, np.uint16)}, dtype="F32")
    with pytest.raises(CheckpointError, match="metadata"):
        save_safetensors(tmp_path / "a.safetensors", {"x": np.zeros(2)}, metadata={"a": 1})


def test_raw_is_read_only_memmap_and_load_is_a_copy(tmp_path):
    x = np.arange(12, dtype=np.float32).reshape(3, 4)
    path = tmp_path / "m.safetensors"
    save_safetensors(path, {"x": x})
    ref = read_header(path)["x"]
    raw = ref.raw()
    assert isinstance(raw, np.memmap) and not raw.flags.writeable
    loaded = ref.load()
    assert loaded.flags.writeable and not isinstance(loaded, np.memmap)
    loaded[0, 0] = 99
    np.testing.assert_array_equal(ref.load(), x)


def test_load_after_file_shrank_raises(tmp_path):
    path = tmp_path / "m.safetensors"
    save_safetensors(path, {"x": np.ones(100, np.float32)})
    ref = read_header(path)["x"]
    os.truncate(path, 64)
    with pytest.raises(CheckpointError, match="cannot map"):
        ref.load()


# ---------------------------------------------------------------------------------------------
# Folders


def sharded_folder(tmp_path, dtype="F32"):
    rng = np.random.default_rng(4)
    tensors = {f"layer{i}.w": rng.standard_normal((8, 16)).astype(np.float32) for i in range(5)}
    folder = tmp_path / "model"
    itemsize = 4 if dtype == "F32" else 2
    save_sharded(folder, tensors, dtype=dtype, max_shard_bytes=2 * 8 * 16 * itemsize)  # two tensors a shard
    return folder, tensors


def edit_index(folder, change):
    index_path = folder / INDEX_NAME
    index = json.loads(index_path.read_text())
    change(index)
    index_path.write_text(json.dumps(index))


@pytest.mark.parametrize("dtype", ["F32", "BF16"])
def test_sharded_round_trip(tmp_path, dtype):
    folder, tensors = sharded_folder(tmp_path, dtype)
    index = json.loads((folder / INDEX_NAME).read_text())
    shards = sorted(set(index["weight_map"].values()))
    assert shards == [f"model-0000{i}-of-00003.safetensors" for i in (1, 2, 3)]
    assert index["metadata"]["total_size"] == sum(x.size for x in tensors.values()) * (4 if dtype == "F32" else 2)
    refs = open_checkpoint(folder)
    assert sorted(refs) == sorted(tensors)
    for name, x in tensors.items():
        assert os.path.basename(refs[name].path) == index["weight_map"][name]
        want = x if dtype == "F32" else from_bits(to_bits(x))
        np.testing.assert_array_equal(refs[name].load(), want)


def test_single_file_folder_and_transformers_metadata(tmp_path):
    save_safetensors(tmp_path / "model.safetensors", {"x": np.ones(3, np.float32)})
    np.testing.assert_array_equal(open_checkpoint(tmp_path)["x"].load(), np.ones(3))
    folder, _ = sharded_folder(tmp_path)
    with safetensors_numpy.safe_open(str(folder / "model-00001-of-00003.safetensors"), "np") as f:
        assert f.metadata() == {"format": "pt"}


def test_index_names_missing_shard(tmp_path):
    folder, _ = sharded_folder(tmp_path)
    os.remove(folder / "model-00002-of-00003.safetensors")
    with pytest.raises(CheckpointError, match="model-00002-of-00003.safetensors.*does not exist"):
        open_checkpoint(folder)


def test_index_names_tensor_absent_from_shard(tmp_path):
    folder, _ = sharded_folder(tmp_path)
    edit_index(folder, lambda ix: ix["weight_map"].update({"ghost": "model-00001-of-00003.safetensors"}))
    with pytest.raises(CheckpointError, match="'ghost' to shard model-00001-of-00003.safetensors"):
        open_checkpoint(folder)


def test_shard_holds_tensor_missing_from_index(tmp_path):
    folder, _ = sharded_folder(tmp_path)
    edit_index(folder, lambda ix: ix["weight_map"].pop("layer3.w"))
    with pytest.raises(CheckpointError, match="holds tensor 'layer3.w'"):
        open_checkpoint(folder)


def test_same_tensor_in_two_shards(tmp_path):
    x = np.ones(4, np.float32)
    save_safetensors(tmp_path / "a.safetensors", {"w": x, "u": x})
    save_safetensors(tmp_path / "b.safetensors", {"w": x})
    (tmp_path / INDEX_NAME).write_text(json.dumps({"weight_map": {"w": "b.safetensors", "u": "a.safetensors"}}))
    with pytest.raises(CheckpointError, match="'w' appears in both a.safetensors and b.safetensors"):
        open_checkpoint(tmp_path)


@pytest.mark.parametrize("index_text", [
    "{not json",
    "[1, 2]",
    '{"metadata": {}}',
    '{"weight_map": ["a"]}',
    '{"weight_map": {"x": 3}}',
    '{"weight_map": {"x": "../elsewhere.safetensors"}}',
    '{"weight_map": {"x": "/etc/passwd"}}',
])
def test_bad_index(tmp_path, index_text):
    (tmp_path / INDEX_NAME).write_text(index_text)
    with pytest.raises(CheckpointError, match=re.escape(INDEX_NAME)):
        open_checkpoint(tmp_path)


def test_pickle_only_folder_refused_without_reading(tmp_path, monkeypatch):
    (tmp_path / "pytorch_model.bin").write_bytes(os.urandom(4096))
    (tmp_path / "config.json").write_text("{}")
    opened = []
    for module, name in [(builtins, "open"), (io, "open"), (os, "open")]:
        real = getattr(module, name)
        monkeypatch.setattr(module, name, lambda p, *a, _real=real, **k: opened.append(str(p)) or _real(p, *a, **k))
    with pytest.raises(CheckpointError, match=r"pytorch_model\.bin.*refused.*never unpickled.*safetensors"):
        open_checkpoint(tmp_path)
    monkeypatch.undo()
    assert not any("pytorch_model.bin" in p for p in opened)


def test_empty_missing_and_non_folder(tmp_path):
    with pytest.raises(CheckpointError, match=f"no model.safetensors or {re.escape(INDEX_NAME)} in "):
        open_checkpoint(tmp_path)
    with pytest.raises(CheckpointError, match="nowhere"):
        open_checkpoint(tmp_path / "nowhere")
    (tmp_path / "file").write_text("x")
    with pytest.raises(CheckpointError, match="file"):
        open_checkpoint(tmp_path / "file")


# ---------------------------------------------------------------------------------------------
# Damaged headers, one problem at a time


def entry(dtype="F32", shape=(2,), offsets=(0, 8)):
    return {"dtype": dtype, "shape": list(shape), "data_offsets": list(offsets)}


HEADER_CASES = [
    ({"x": 3}, "'x': entry is not a JSON object"),
    ({"x": {"shape": [2], "data_offsets": [0, 8]}}, "'x': entry lacks 'dtype'"),
    ({"x": {"dtype": "F32", "data_offsets": [0, 8]}}, "'x': entry lacks 'shape'"),
    ({"x": {"dtype": "F32", "shape": [2]}}, "'x': entry lacks 'data_offsets'"),
    ({"x": entry(dtype=7)}, "dtype must be a string"),
    ({"x": entry(dtype="I32")}, "'x': dtype I32 is unsupported"),
    ({"x": entry(dtype="F8_E4M3")}, "'x': dtype F8_E4M3 is unsupported"),
    ({"x": entry(dtype="Q4_K")}, "'x': unknown dtype 'Q4_K'"),
    ({"x": {**entry(), "shape": 2}}, "shape must be a list of non-negative integers"),
    ({"x": entry(shape=(-1,))}, "shape must be a list of non-negative integers"),
    ({"x": entry(shape=(2.0,))}, "shape must be a list of non-negative integers"),
    ({"x": entry(shape=(True, 2))}, "shape must be a list of non-negative integers"),
    ({"x": entry(shape=(1,) * 33, offsets=(0, 4))}, "too large for a numpy array"),
    ({"x": entry(shape=(0, 10**30), offsets=(0, 0))}, "too large for a numpy array"),
    ({"x": entry(shape=[10**300] * 5)}, "too large for a numpy array"),
    ({"x": entry(offsets=(8,))}, "data_offsets must be two integers"),
    ({"x": entry(offsets=(8, 0))}, "data_offsets must be two integers"),
    ({"x": entry(offsets=(-8, 0))}, "data_offsets must be two integers"),
    ({"x": entry(offsets=(0, 8.0))}, "data_offsets must be two integers"),
    ({"x": {**entry(), "data_offsets": "0-8"}}, "data_offsets must be two integers"),
    ({"x": entry("BF16", (2, 3), (0, 10))}, "'x': shape [2, 3] of BF16 needs 12 bytes but data_offsets give 10"),
    ({"x": entry(), "y": entry(offsets=(4, 12))}, "tensors 'x' and 'y' overlap"),
    ({"b": entry(offsets=(8, 16)), "a": entry(offsets=(0, 16), shape=(4,))}, "tensors 'a' and 'b' overlap"),
    ({"__metadata__": ["x"], "x": entry()}, "__metadata__ must map strings to strings"),
    ({"__metadata__": {"format": 1}, "x": entry()}, "__metadata__ must map strings to strings"),
]


@pytest.mark.parametrize("header, message", HEADER_CASES)
def test_bad_header_entries(tmp_path, header, message):
    path = raw_file(tmp_path / "bad.safetensors", header, bytes(64))
    with pytest.raises(CheckpointError, match=re.escape(message)) as info:
        read_header(path)
    assert str(path) in str(info.value)


@pytest.mark.parametrize("content, message", [
    (b"", "file of 0 bytes is too short"),
    (b"\x01\x00\x00", "file of 3 bytes is too short"),
    (struct.pack("<Q", 0) + b"{}", "header length is 0"),
    (struct.pack("<Q", 100) + b"{}", "header length 100 past the end of file of size 10"),
    (struct.pack("<Q", 2**64 - 1) + b"{}", f"header length {2**64 - 1} past the end of file of size 10"),
    (struct.pack("<Q", 2) + b"\xff\xfe", "header is not UTF-8"),
    (struct.pack("<Q", 5) + b"{oops", "header is not valid JSON"),
    (struct.pack("<Q", 6) + b"[1, 2]", "header is JSON but not an object"),
    (struct.pack("<Q", 5) + b"\"abc\"", "header is JSON but not an object"),
    (struct.pack("<Q", 100_000) + b"[" * 100_000, "header is not valid JSON"),
])
def test_bad_framing(tmp_path, content, message):
    path = tmp_path / "bad.safetensors"
    path.write_bytes(content)
    with pytest.raises(CheckpointError, match=re.escape(message)):
        read_header(path)


def test_duplicate_tensor_name(tmp_path):
    body = b'{"x": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}, ' \
           b'"x": {"dtype": "F32", "shape": [1], "data_offsets": [4, 8]}}'
    path = raw_file(tmp_path / "dup.safetensors", body, bytes(8))
    with pytest.raises(CheckpointError, match="duplicate key 'x'"):
        read_header(path)


def test_absurd_header_length_is_refused_before_reading(tmp_path):
    # A sparse file big enough to hold the claimed header, so only the size cap can refuse it.
    path = tmp_path / "huge.safetensors"
    path.write_bytes(struct.pack("<Q", 100_000_001))
    os.truncate(path, 100_000_016)
    with pytest.raises(CheckpointError, match="header length 100000001 is absurdly large"):
        read_header(path)


def test_truncated_file(tmp_path):
    path = tmp_path / "m.safetensors"
    save_safetensors(path, {"a": np.ones(4, np.float32), "b": np.ones(6, np.float32)})
    size = path.stat().st_size
    os.truncate(path, size - 1)
    with pytest.raises(CheckpointError, match=rf"tensor 'b' ends at byte {size} but the file has only "
                                              rf"{size - 1} bytes: truncated\?"):
        read_header(path)


def test_missing_file(tmp_path):
    with pytest.raises(CheckpointError, match="absent.safetensors"):
        read_header(tmp_path / "absent.safetensors")


def test_valid_oddities_are_accepted(tmp_path):
    # Metadata is skipped, gaps between tensors are allowed, empty tensors may sit anywhere.
    header = {
        "__metadata__": {"format": "pt"},
        "gap": entry(offsets=(16, 24)),
        "first": entry(offsets=(0, 8)),
        "nothing": entry(shape=(0, 5), offsets=(4, 4)),
        "scalar": entry(shape=(), offsets=(24, 28)),
    }
    data = np.arange(8, dtype="<f4").tobytes()
    path = raw_file(tmp_path / "odd.safetensors", header, data)
    refs = read_header(path)
    assert sorted(refs) == ["first", "gap", "nothing", "scalar"]
    np.testing.assert_array_equal(refs["first"].load(), [0, 1])
    np.testing.assert_array_equal(refs["gap"].load(), [4, 5])
    assert refs["nothing"].load().shape == (0, 5)
    assert refs["scalar"].load() == 6


# ---------------------------------------------------------------------------------------------
# Fuzzing: read_header either succeeds (and then every tensor loads) or raises CheckpointError


FUZZ_SETTINGS = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def valid_file_bytes():
    a, b = np.ones((2, 3), np.float32), np.arange(4, dtype=np.float32)
    prefix, _ = encode_header({"a": ("BF16", a.shape), "b": ("BF16", b.shape)}, {"format": "pt"})
    return prefix + to_bits(a).tobytes() + to_bits(b).tobytes()


VALID = valid_file_bytes()
VALID_N = struct.unpack("<Q", VALID[:8])[0]
VALID_HEADER = json.loads(VALID[8:8 + VALID_N])

json_values = st.recursive(
    st.none() | st.booleans() | st.floats() | st.text(max_size=8)
    | st.integers(-(2**70), 2**70) | st.sampled_from([0, 1, 2, 8, 12, 2**63, 2**64]),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner, max_size=4),
    max_leaves=12,
)


@pytest.fixture(scope="module")
def fuzz_path(tmp_path_factory):
    return str(tmp_path_factory.mktemp("fuzz") / "fuzz.safetensors")


def check_reads_or_refuses(path, content: bytes):
    with open(path, "wb") as f:
        f.write(content)
    try:
        refs = read_header(path)
    except CheckpointError:
        return
    for ref in refs.values():
        assert ref.load().shape == ref.shape


@FUZZ_SETTINGS
@given(st.binary(max_size=300))
def test_fuzz_arbitrary_bytes(fuzz_path, content):
    check_reads_or_refuses(fuzz_path, content)


@FUZZ_SETTINGS
@given(st.binary(max_size=120))
def test_fuzz_arbitrary_header(fuzz_path, header):
    check_reads_or_refuses(fuzz_path, struct.pack("<Q", len(header)) + header + bytes(32))


@FUZZ_SETTINGS
@given(st.lists(st.tuples(st.integers(0, len(VALID) - 1), st.integers(1, 255)), min_size=1, max_size=6))
def test_fuzz_flipped_bytes(fuzz_path, flips):
    content = bytearray(VALID)
    for at, mask in flips:
        content[at] ^= mask
    check_reads_or_refuses(fuzz_path, bytes(content))


@FUZZ_SETTINGS
@given(st.integers(0, len(VALID)))
def test_fuzz_truncated(fuzz_path, length):
    check_reads_or_refuses(fuzz_path, VALID[:length])


@FUZZ_SETTINGS
@given(st.integers(0, 2**64 - 1) | st.integers(0, 2 * len(VALID)))
def test_fuzz_length_prefix(fuzz_path, n):
    check_reads_or_refuses(fuzz_path, struct.pack("<Q", n) + VALID[8:])


@FUZZ_SETTINGS
@given(st.sampled_from(["a", "b", "__metadata__", "new"]),
       st.sampled_from([None, "dtype", "shape", "data_offsets"]),
       json_values)
def test_fuzz_header_fields(fuzz_path, name, field, value):
    header = json.loads(json.dumps(VALID_HEADER))
    if field is None or not isinstance(header.get(name), dict):
        header[name] = value
    else:
        header[name][field] = value
    body = json.dumps(header).encode()
    check_reads_or_refuses(fuzz_path, struct.pack("<Q", len(body)) + body + VALID[8 + VALID_N:])
