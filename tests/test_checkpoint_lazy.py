"""Opening a multi-gigabyte checkpoint must read only headers, not tensor data.

The checkpoint is a sparse file: each shard's header is written and the file is then extended to
its full size, so the data (all zeros, which are valid bfloat16) costs neither time nor disk.
"""

import gc
import json
import os
import shutil
import time

import numpy as np
import pytest

from tinydg.bf16 import from_bits, to_bits
from tinydg.checkpoint import INDEX_NAME, open_checkpoint
from tinydg.tools.safetensors_writer import encode_header

pytestmark = pytest.mark.skipif(not os.path.exists("/proc/self/status"), reason="needs /proc/self/status")

SHARDS = 3
BIG = (24576, 24576)  # 1.2 GB of bfloat16 per shard
HEAD = np.linspace(-2, 2, 32, dtype=np.float32).reshape(4, 8)


def rss_bytes() -> int:
    # Current resident set, not the high-water mark that getrusage reports.
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    pytest.skip("no VmRSS in /proc/self/status")


def bytes_read() -> int | None:
    """Bytes this process has passed through read() calls so far, where the kernel reports it."""
    try:
        with open("/proc/self/io") as f:
            return next(int(line.split()[1]) for line in f if line.startswith("rchar:"))
    except (OSError, StopIteration):
        return None


def write_sparse_shard(path, index: int) -> int:
    specs = {
        f"shard{index}.head": ("BF16", HEAD.shape),
        f"shard{index}.big": ("BF16", BIG),
        f"shard{index}.tail": ("BF16", (3, 5)),
    }
    prefix, data_size = encode_header(specs, {"format": "pt"})
    with open(path, "wb") as f:
        f.write(prefix + to_bits(HEAD).tobytes())
        f.truncate(len(prefix) + data_size)
    return len(prefix) + data_size


@pytest.fixture(scope="module")
def big_checkpoint(tmp_path_factory):
    folder = tmp_path_factory.mktemp("big")
    if shutil.disk_usage(folder).free < 10 * 2**30:
        pytest.skip("needs 10 GB of free disk in case sparse files are not supported")
    weight_map, total = {}, 0
    for i in range(1, SHARDS + 1):
        name = f"model-{i:05d}-of-{SHARDS:05d}.safetensors"
        size = write_sparse_shard(folder / name, i)
        if os.stat(folder / name).st_blocks * 512 > size // 2:
            pytest.skip("the temporary file system does not support sparse files")
        weight_map.update({f"shard{i}.{part}": name for part in ("head", "big", "tail")})
        total += size
    (folder / INDEX_NAME).write_text(json.dumps({"metadata": {"total_size": total}, "weight_map": weight_map}))
    yield folder, total
    shutil.rmtree(folder)


def test_open_reads_only_headers(big_checkpoint):
    folder, total = big_checkpoint
    assert total > 3.5e9
    gc.collect()
    rss_before, read_before = rss_bytes(), bytes_read()
    start = time.perf_counter()
    refs = open_checkpoint(folder)
    elapsed = time.perf_counter() - start
    rss_after, read_after = rss_bytes(), bytes_read()

    assert len(refs) == 3 * SHARDS
    assert refs["shard2.big"].shape == BIG and refs["shard2.big"].nbytes == 2 * BIG[0] * BIG[1]
    assert elapsed < 3.0
    assert rss_after - rss_before < 0.02 * total
    if read_before is not None and read_after is not None:
        assert read_after - read_before < 2**20


def test_load_touches_one_tensor(big_checkpoint):
    folder, total = big_checkpoint
    refs = open_checkpoint(folder)
    gc.collect()
    rss_before = rss_bytes()

    tail = refs["shard3.tail"].load()
    assert tail.dtype == np.float32 and tail.shape == (3, 5)
    np.testing.assert_array_equal(tail, 0)
    head = refs["shard1.head"].load()
    np.testing.assert_array_equal(head, from_bits(to_bits(HEAD)))
    assert rss_bytes() - rss_before < 0.02 * total


def test_raw_of_a_large_tensor_stays_mapped(big_checkpoint):
    folder, total = big_checkpoint
    ref = open_checkpoint(folder)["shard2.big"]
    gc.collect()
    rss_before = rss_bytes()

    raw = ref.raw()
    assert isinstance(raw, np.memmap) and not raw.flags.owndata and not raw.flags.writeable
    assert raw.shape == BIG and raw.dtype == np.uint16
    np.testing.assert_array_equal(raw[-1, -8:], 0)  # reads one page, not 1.2 GB
    assert rss_bytes() - rss_before < 0.02 * total
