"""Reading safetensors checkpoints without the safetensors package; tinydg.tools.safetensors_writer writes them.

The safetensors format (https://github.com/huggingface/safetensors, "Format" section of its README):

* 8 bytes: N, an unsigned little-endian 64-bit integer, the size of the header;
* N bytes: a UTF-8 JSON object mapping each tensor name to
  ``{"dtype": "BF16", "shape": [2, 3], "data_offsets": [begin, end]}``, where the offsets are
  relative to the start of the byte buffer that follows the header; an optional ``"__metadata__"``
  key maps strings to strings;
* the byte buffer: each tensor's data, contiguous, little-endian, row-major (C order).

A Hugging Face model folder holds either one ``model.safetensors`` or several shards plus
``model.safetensors.index.json`` = ``{"metadata": {"total_size": ...}, "weight_map": {name: file}}``
(https://huggingface.co/docs/transformers/main/en/big_models).

Opening is lazy: only headers are read, and ``TensorRef.load`` memory-maps one tensor at a time, so a
checkpoint far larger than RAM can be opened. Only regular files are opened (tinydg.files): a named
pipe or a device in the folder is refused, never read; the index is read under a size cap. Pickle
checkpoints (``*.bin``, ``*.pt`` ...) are refused rather than unpickled, because unpickling runs
arbitrary code.
"""

from __future__ import annotations

import os
import struct
from dataclasses import dataclass

import numpy as np

from tinydg import files
from tinydg.bf16 import from_bits
from tinydg.errors import CheckpointError

INDEX_NAME = "model.safetensors.index.json"
SINGLE_NAME = "model.safetensors"

# The reference implementation refuses headers over 100 MB too; real headers are a few hundred KB.
MAX_HEADER_BYTES = 100_000_000

# Stored (little-endian) numpy dtype of each dtype we can load.
_STORED = {"F32": np.dtype("<f4"), "F16": np.dtype("<f2"), "BF16": np.dtype("<u2")}

# Valid safetensors dtypes that tinydg has no use for; named so the error can say "unsupported"
# rather than "unknown".
_UNSUPPORTED = frozenset({
    "BOOL", "U8", "I8", "I16", "U16", "I32", "U32", "I64", "U64", "F64", "C64",
    "F8_E4M3", "F8_E5M2", "F8_E8M0", "F6_E2M3", "F6_E3M2", "F4",
})

_PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl")

# numpy refuses arrays whose size (zero dimensions left out) times itemsize exceeds its index type,
# and arrays of more than 32 dimensions on older versions; headers are held to the same limits so
# that every tensor read_header accepts can be loaded.
_MAX_ARRAY_BYTES = 2**63 - 1
_MAX_NDIM = 32


@dataclass(frozen=True)
class TensorRef:
    """One tensor in one safetensors file, located but not yet read."""

    name: str
    dtype: str
    shape: tuple[int, ...]
    path: str
    offset: int
    nbytes: int

    def raw(self) -> np.ndarray:
        """The stored values, unconverted, as a read-only memory-mapped array.

        uint16 bit patterns for BF16, float16 for F16, float32 for F32. An empty tensor gives a plain
        empty array, since nothing can be mapped.
        """
        stored = _STORED[self.dtype]
        if self.nbytes == 0:
            empty = np.zeros(self.shape, dtype=stored)
            empty.flags.writeable = False
            return empty
        try:  # checked again here: the file may have been replaced (by a pipe, say) since its header was read
            with files.open_regular(self.path, CheckpointError) as f:
                return np.memmap(f, dtype=stored, mode="r", offset=self.offset, shape=self.shape)
        except CheckpointError:
            raise
        except (OSError, ValueError) as e:
            # The file was moved, shortened or replaced after its header was read.
            raise CheckpointError(f"{self.path}: cannot map tensor {self.name!r}: {e}") from e

    def load(self) -> np.ndarray:
        """The tensor as a new float32 array of `shape`, reading only this tensor's bytes."""
        stored = self.raw()
        if self.dtype == "BF16":
            return from_bits(stored)
        return np.array(stored, dtype=np.float32)


# ---------------------------------------------------------------------------------------------
# Reading


def read_header(path) -> dict[str, TensorRef]:
    """Read and validate the header of one .safetensors file; no tensor data is read."""
    path = os.path.abspath(os.fspath(path))
    try:
        with files.open_regular(path, CheckpointError) as f:  # a pipe or device is refused unopened
            size = os.fstat(f.fileno()).st_size
            prefix = f.read(8)
            if len(prefix) < 8:
                raise CheckpointError(f"{path}: file of {len(prefix)} bytes is too short for a safetensors header")
            (n,) = struct.unpack("<Q", prefix)
            _check_header_length(path, n, size)
            raw = f.read(n)
    except OSError as e:
        raise CheckpointError(f"{path}: cannot read: {e}") from e
    if len(raw) != n:
        raise CheckpointError(f"{path}: file shrank while its header was being read")

    header = _parse_json_object(path, raw)
    _check_metadata(path, header.pop("__metadata__", None))
    data_start = 8 + n
    refs = {name: _tensor_ref(path, name, entry, data_start, size) for name, entry in header.items()}
    _check_no_overlap(path, refs)
    return refs


def _check_header_length(path: str, n: int, size: int) -> None:
    # Checked against the file size before anything is allocated for the header.
    if n == 0:
        raise CheckpointError(f"{path}: header length is 0")
    if 8 + n > size:
        raise CheckpointError(f"{path}: header length {n} past the end of file of size {size}")
    if n > MAX_HEADER_BYTES:
        raise CheckpointError(f"{path}: header length {n} is absurdly large (over {MAX_HEADER_BYTES} bytes)")


def _parse_json_object(path: str, raw: bytes) -> dict:
    # files.parse_json refuses repeated tensor names: which one wins would depend on the parser.
    header = files.parse_json(raw, f"{path}: header", CheckpointError)
    if not isinstance(header, dict):
        raise CheckpointError(f"{path}: header is JSON but not an object (got {type(header).__name__})")
    return header


def _check_metadata(path: str, metadata) -> None:
    if metadata is None:
        return
    if not isinstance(metadata, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in metadata.items()
    ):
        raise CheckpointError(f"{path}: __metadata__ must map strings to strings")


def _tensor_ref(path: str, name: str, entry, data_start: int, size: int) -> TensorRef:
    where = f"{path}: tensor {_short(name)}"
    if not isinstance(entry, dict):
        raise CheckpointError(f"{where}: entry is not a JSON object")
    for key in ("dtype", "shape", "data_offsets"):
        if key not in entry:
            raise CheckpointError(f"{where}: entry lacks {key!r}")

    dtype, shape, offsets = entry["dtype"], entry["shape"], entry["data_offsets"]
    _check_dtype(where, dtype)
    if not isinstance(shape, list) or not all(_is_int(d) and d >= 0 for d in shape):
        raise CheckpointError(f"{where}: shape must be a list of non-negative integers, got {_short(shape)}")
    if not (isinstance(offsets, list) and len(offsets) == 2 and all(_is_int(o) for o in offsets)
            and 0 <= offsets[0] <= offsets[1]):
        raise CheckpointError(
            f"{where}: data_offsets must be two integers 0 <= begin <= end, got {_short(offsets)}"
        )

    itemsize = _STORED[dtype].itemsize
    if len(shape) > _MAX_NDIM or _capped_product([itemsize, *(d for d in shape if d)]) > _MAX_ARRAY_BYTES:
        raise CheckpointError(f"{where}: shape {_short(shape)} is too large for a numpy array")

    begin, end = offsets
    needed = 0 if 0 in shape else _capped_product([itemsize, *shape])
    if needed != end - begin:
        raise CheckpointError(
            f"{where}: shape {_short(shape)} of {dtype} needs {needed} bytes but data_offsets give {end - begin}"
        )
    if data_start + end > size:
        raise CheckpointError(
            f"{where} ends at byte {data_start + end} but the file has only {size} bytes: truncated?"
        )
    return TensorRef(name, dtype, tuple(shape), path, data_start + begin, end - begin)


def _check_dtype(where: str, dtype) -> None:
    if not isinstance(dtype, str):
        raise CheckpointError(f"{where}: dtype must be a string, got {_short(dtype)}")
    if dtype in _STORED:
        return
    supported = ", ".join(_STORED)
    if dtype in _UNSUPPORTED:
        raise CheckpointError(f"{where}: dtype {dtype} is unsupported (tinydg reads {supported})")
    raise CheckpointError(f"{where}: unknown dtype {_short(dtype)} (tinydg reads {supported})")


def _is_int(x) -> bool:
    # JSON true/false arrive as bool, which Python counts as int.
    return isinstance(x, int) and not isinstance(x, bool)


def _capped_product(values: list[int]) -> int:
    """The product of `values`, or _MAX_ARRAY_BYTES + 1 as soon as it exceeds that.

    Stopping early keeps an adversarial shape (thousands of huge dimensions) from building a
    gigantic integer.
    """
    total = 1
    for v in values:
        total *= v
        if total > _MAX_ARRAY_BYTES:
            return _MAX_ARRAY_BYTES + 1
    return total


def _check_no_overlap(path: str, refs: dict[str, TensorRef]) -> None:
    # Empty tensors occupy no bytes, so they cannot overlap anything.
    spans = sorted((r.offset, r.offset + r.nbytes, name) for name, r in refs.items() if r.nbytes)
    for (_, prev_end, prev), (begin, _, name) in zip(spans, spans[1:]):
        if begin < prev_end:
            raise CheckpointError(f"{path}: tensors {_short(prev)} and {_short(name)} overlap")


def _short(x, limit: int = 80) -> str:
    """A bounded description of a header value, for error messages about damaged headers."""
    if isinstance(x, list):
        text = _list_repr(x)
    elif isinstance(x, dict):
        text = "{...}"
    else:
        text = repr(x)
    return text if len(text) <= limit else text[:limit] + "..."


def _list_repr(items: list) -> str:
    # Only the first few scalars: the repr of a long or deeply nested list could be slow or recurse
    # too deeply.
    head = ", ".join("..." if isinstance(v, (list, dict)) else repr(v) for v in items[:8])
    return f"[{head}{', ...' if len(items) > 8 else ''}]"


def open_checkpoint(folder) -> dict[str, TensorRef]:
    """Locate every tensor of a Hugging Face model folder (sharded or not); no tensor data is read."""
    folder = os.path.abspath(os.fspath(folder))
    if not os.path.isdir(folder):
        raise CheckpointError(f"checkpoint folder {folder} does not exist or is not a folder")
    index = os.path.join(folder, INDEX_NAME)
    if os.path.exists(index):
        return _open_sharded(folder, index)
    single = os.path.join(folder, SINGLE_NAME)
    if os.path.exists(single):
        return read_header(single)
    pickles = sorted(f for f in os.listdir(folder) if f.endswith(_PICKLE_SUFFIXES))
    if pickles:
        raise CheckpointError(
            f"{folder} holds only pickle checkpoints ({', '.join(pickles)}); they are refused, never "
            "unpickled, because unpickling can run arbitrary code. Convert them to safetensors."
        )
    raise CheckpointError(f"no {SINGLE_NAME} or {INDEX_NAME} in {folder}")


def _read_weight_map(index: str) -> dict[str, str]:
    data = files.read_json(index, files.INDEX_MAX_BYTES, CheckpointError)
    weight_map = data.get("weight_map") if isinstance(data, dict) else None
    if not isinstance(weight_map, dict) or not all(isinstance(v, str) for v in weight_map.values()):
        raise CheckpointError(f"{index}: needs a \"weight_map\" object mapping tensor names to shard files")
    for shard in set(weight_map.values()):
        # Shards live beside the index; a path would let an index point anywhere on disk.
        if shard != os.path.basename(shard) or shard in ("", ".", ".."):
            raise CheckpointError(f"{index}: shard name {_short(shard)} is not a plain file name")
    return weight_map


def _open_sharded(folder: str, index: str) -> dict[str, TensorRef]:
    weight_map = _read_weight_map(index)
    headers = {}
    for shard in sorted(set(weight_map.values())):
        shard_path = os.path.join(folder, shard)
        if not os.path.exists(shard_path):  # a shard that is no regular file is refused by read_header
            raise CheckpointError(f"{index} names shard {shard}, which does not exist in {folder}")
        headers[shard] = read_header(shard_path)

    home: dict[str, str] = {}
    for shard, shard_refs in headers.items():
        for name in shard_refs:
            if name in home:
                raise CheckpointError(f"{folder}: tensor {_short(name)} appears in both {home[name]} and {shard}")
            home[name] = shard
    for name, shard in home.items():
        if weight_map.get(name) != shard:
            raise CheckpointError(
                f"{folder}: shard {shard} holds tensor {_short(name)}, which {INDEX_NAME} does not map to it"
            )
    for name, shard in weight_map.items():
        if name not in home:
            raise CheckpointError(
                f"{index} maps tensor {_short(name)} to shard {shard}, which does not contain it"
            )
    return {name: ref for shard_refs in headers.values() for name, ref in shard_refs.items()}

