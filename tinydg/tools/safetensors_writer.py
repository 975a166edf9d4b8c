"""Writing safetensors checkpoints, for tests and fixture scripts: the inverse of tinydg.checkpoint.

The format is the one tinydg/checkpoint.py reads and describes (the "Format" section of
https://github.com/huggingface/safetensors's README); a sharded folder gets
``model.safetensors.index.json`` as ``save_pretrained`` writes it
(https://huggingface.co/docs/transformers/main/en/big_models).
"""

from __future__ import annotations

import json
import math
import os
import struct

import numpy as np

from tinydg.bf16 import to_bits
from tinydg.checkpoint import _STORED, INDEX_NAME
from tinydg.errors import CheckpointError

# HF's default shard size in `save_pretrained`.
DEFAULT_MAX_SHARD_BYTES = 5_000_000_000


def encode_header(specs: dict[str, tuple[str, tuple[int, ...]]], metadata: dict[str, str] | None = None
                  ) -> tuple[bytes, int]:
    """The bytes that precede the data of a safetensors file, and the size of that data.

    `specs` maps each tensor name to (dtype, shape); the data is laid out in that order. Writing the
    returned prefix and then `data_size` bytes of tensor data gives a complete file.
    """
    header: dict[str, object] = {}
    if metadata is not None:
        if not all(isinstance(k, str) and isinstance(v, str) for k, v in metadata.items()):
            raise CheckpointError("metadata must map strings to strings")
        header["__metadata__"] = dict(metadata)
    end = 0
    for name, (dtype, shape) in specs.items():
        if dtype not in _STORED:
            raise CheckpointError(f"cannot write tensor {name!r} as {dtype}; choose one of {', '.join(_STORED)}")
        begin, end = end, end + _STORED[dtype].itemsize * math.prod(int(d) for d in shape)
        header[name] = {"dtype": dtype, "shape": [int(d) for d in shape], "data_offsets": [begin, end]}
    text = json.dumps(header, separators=(",", ":")).encode("utf-8")
    # Pad with spaces (valid JSON whitespace) so the data starts 8-byte aligned, as the reference
    # writer does; aligned data maps straight into float32 arrays.
    text += b" " * (-len(text) % 8)
    return struct.pack("<Q", len(text)) + text, end


def _stored_values(name: str, array, dtype: str) -> np.ndarray:
    """`array` converted to the little-endian layout of `dtype`."""
    array = np.asarray(array)
    if dtype == "BF16" and array.dtype.kind == "u" and array.dtype.itemsize == 2:
        return np.asarray(array, dtype="<u2", order="C")
    if array.dtype.kind != "f":
        raise CheckpointError(f"tensor {name!r}: expected a floating-point array, got {array.dtype}")
    if dtype == "BF16":
        return to_bits(array)
    return np.asarray(array, dtype=_STORED[dtype], order="C")


def save_safetensors(path, tensors: dict[str, np.ndarray], dtype: str = "F32",
                     metadata: dict[str, str] | None = None) -> None:
    """Write `tensors` to one safetensors file, every tensor stored as `dtype` (F32, F16 or BF16).

    Float arrays are rounded to `dtype` (to nearest even for BF16); with dtype="BF16", uint16 arrays
    are taken as raw bfloat16 bit patterns.
    """
    if dtype not in _STORED:
        raise CheckpointError(f"cannot write {dtype}; choose one of {', '.join(_STORED)}")
    values = {name: _stored_values(name, array, dtype) for name, array in tensors.items()}
    prefix, _ = encode_header({name: (dtype, v.shape) for name, v in values.items()}, metadata)
    with open(path, "wb") as f:
        f.write(prefix)
        for v in values.values():
            f.write(v.tobytes())


def save_sharded(folder, tensors: dict[str, np.ndarray], dtype: str = "F32",
                 max_shard_bytes: int = DEFAULT_MAX_SHARD_BYTES) -> None:
    """Write `tensors` as model-0000i-of-0000N.safetensors shards plus model.safetensors.index.json.

    Tensors are packed in order, starting a new shard when the next one would push the current shard
    past `max_shard_bytes` (a tensor larger than that gets a shard of its own). Each shard carries
    the metadata {"format": "pt"}, which transformers expects.
    """
    if dtype not in _STORED:
        raise CheckpointError(f"cannot write {dtype}; choose one of {', '.join(_STORED)}")
    itemsize = _STORED[dtype].itemsize
    shards: list[dict[str, np.ndarray]] = [{}]
    used = 0
    for name, array in tensors.items():
        nbytes = itemsize * np.asarray(array).size
        if shards[-1] and used + nbytes > max_shard_bytes:
            shards.append({})
            used = 0
        shards[-1][name] = array
        used += nbytes

    os.makedirs(folder, exist_ok=True)
    weight_map, total = {}, 0
    for i, shard in enumerate(shards, start=1):
        file = f"model-{i:05d}-of-{len(shards):05d}.safetensors"
        save_safetensors(os.path.join(folder, file), shard, dtype, metadata={"format": "pt"})
        for name, array in shard.items():
            weight_map[name] = file
            total += itemsize * np.asarray(array).size
    index = {"metadata": {"total_size": total}, "weight_map": weight_map}
    with open(os.path.join(folder, INDEX_NAME), "w", encoding="utf-8") as f:
        json.dump(index, f, indent=2)
