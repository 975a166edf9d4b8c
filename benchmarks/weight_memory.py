"""Peak memory and speed of the numpy backend's weight-store modes: tinydg.load(path, weight_cache_bytes=N).

Writes a synthetic sharded bf16 checkpoint of about 3 GB into a temporary folder: the real config
(weights/real/config.json) scaled down to hidden 2048, six layers in the 5:1 sliding/full pattern,
128 experts top-8 beside a dense MLP, vocab 65,536; matrices N(0, 0.02), norm weights and scales
1 + N(0, 0.02). Then for each mode (keep every converted float32 tensor; keep the first --cache-gb;
keep none), in a fresh process: load, encode a 64-token prompt, one denoise step over a 32-token
canvas. Reported: peak RSS (getrusage ru_maxrss), RSS after, the first encode + denoise (which
converts the weights), and the median wall time of encode and of denoise over --repeats runs after
it. The folder is deleted afterwards. The children use --threads BLAS threads (default 1: on a
shared machine, two threads waiting on each other made the times vary tenfold).

    python benchmarks/weight_memory.py [--cache-gb 1] [--repeats 3] [--threads 1] [--tmp DIR]
"""

import argparse
import json
import math
import os
import platform
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from tinydg.bf16 import to_bits  # noqa: E402
from tinydg.checkpoint import INDEX_NAME  # noqa: E402
from tinydg.config import load_config  # noqa: E402
from tinydg.tools.safetensors_writer import encode_header  # noqa: E402
from tinydg.weights import count_parameters, weight_shapes  # noqa: E402

TEXT = dict(vocab_size=65_536, hidden_size=2048, intermediate_size=1536, num_hidden_layers=6,
            num_attention_heads=16, num_key_value_heads=8, head_dim=128, global_head_dim=256,
            num_global_key_value_heads=2, num_experts=128, top_k_experts=8, moe_intermediate_size=256,
            layer_types=["sliding_attention"] * 5 + ["full_attention"])
PROMPT, CANVAS = 64, 32
SHARD_BYTES = 1_000_000_000
CHUNK = 1 << 24  # values drawn at a time while writing


def write_checkpoint(folder, text=TEXT, seed=0):
    """config.json (the real one with `text`'s sizes, text-only), bf16 shards of about SHARD_BYTES and the index,
    written a chunk at a time. Returns the TextConfig."""
    with open(os.path.join(ROOT, "weights", "real", "config.json")) as f:
        config = json.load(f)
    config["text_config"].update(text)
    config["canvas_length"] = CANVAS
    del config["vision_config"]  # text weights only: the vision tower is never read by encode or denoise
    with open(os.path.join(folder, "config.json"), "w") as f:
        json.dump(config, f, indent=2)
    shapes = weight_shapes(load_config(folder)[0].text_config)
    shards, used = [[]], 0
    for name, shape in shapes.items():
        nbytes = 2 * math.prod(shape)
        if shards[-1] and used + nbytes > SHARD_BYTES:
            shards, used = shards + [[]], 0
        shards[-1].append(name)
        used += nbytes
    rng, weight_map = np.random.default_rng(seed), {}
    for i, names in enumerate(shards, start=1):
        file = f"model-{i:05d}-of-{len(shards):05d}.safetensors"
        prefix, _ = encode_header({name: ("BF16", shapes[name]) for name in names}, {"format": "pt"})
        with open(os.path.join(folder, file), "wb") as f:
            f.write(prefix)
            for name in names:
                size, mean = math.prod(shapes[name]), float(len(shapes[name]) == 1)  # vectors: norms and scales
                for lo in range(0, size, CHUNK):
                    values = rng.standard_normal(min(CHUNK, size - lo), dtype=np.float32) * np.float32(0.02) + mean
                    f.write(to_bits(values).tobytes())
                weight_map[name] = file
    with open(os.path.join(folder, INDEX_NAME), "w") as f:
        json.dump({"metadata": {"total_size": 2 * sum(map(math.prod, shapes.values()))}, "weight_map": weight_map}, f)
    return load_config(folder)[0].text_config


def rss_bytes():
    """The resident set now (VmRSS), not the peak."""
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) * 1024 for line in f if line.startswith("VmRSS:"))


def cpu_name():
    try:
        with open("/proc/cpuinfo") as f:
            return next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        return platform.processor() or platform.machine()


def median_s(fn, repeats):
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def measure(folder, cache_bytes, repeats):
    """In this process: load, the first encode + denoise, then the timed ones. A dict of bytes and seconds."""
    import tinydg
    start = rss_bytes()
    model = tinydg.load(folder, weight_cache_bytes=cache_bytes)
    rng = np.random.default_rng(0)
    ids, canvas = (rng.integers(0, model.text.vocab_size, (1, n)) for n in (PROMPT, CANVAS))
    t = time.perf_counter()
    _, cache = tinydg.encode(model, ids)
    tinydg.denoise(model, canvas, cache)
    first = time.perf_counter() - t
    encode = median_s(lambda: tinydg.encode(model, ids), repeats)
    denoise = median_s(lambda: tinydg.denoise(model, canvas, cache), repeats)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # KiB on Linux
    return dict(start=start, peak=peak, after=rss_bytes(), first=first, encode=encode, denoise=denoise,
                kept=model.weights.kept_bytes())


def run(folder, modes, repeats, threads=1):
    """measure() for each mode, each in a fresh process with `threads` BLAS threads: {mode: dict}."""
    env = dict(os.environ, **{v: str(threads) for v in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")})
    results = {}
    for mode in modes:
        out = subprocess.run([sys.executable, __file__, "--measure", folder, "--cache-bytes", str(mode),
                              "--repeats", str(repeats)], check=True, capture_output=True, text=True, env=env).stdout
        results[mode] = json.loads(out.splitlines()[-1])
    return results


def table(results, total_bytes):
    """A Markdown table of run()'s results; total_bytes: the checkpoint's bf16 size."""
    gb = 1e9
    lines = ["| weight_cache_bytes | peak RSS GB | peak / bf16 size | RSS after GB | weights kept GB | first encode + "
             "denoise s | encode ms (median) | denoise ms (median) |", "|---|---|---|---|---|---|---|---|"]
    for mode, r in results.items():
        lines.append(f"| {mode} | {r['peak'] / gb:.2f} | {r['peak'] / total_bytes:.2f} | {r['after'] / gb:.2f} | "
                     f"{r['kept'] / gb:.2f} | {r['first']:.2f} | {1e3 * r['encode']:.0f} | {1e3 * r['denoise']:.0f} |")
    return "\n".join(lines)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--cache-gb", type=float, default=1.0, help="the bounded mode's size")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1, help="BLAS threads of each measuring process")
    ap.add_argument("--tmp", help="where to write the checkpoint (default: the system's temporary folder)")
    ap.add_argument("--measure", metavar="FOLDER", help=argparse.SUPPRESS)  # the child process
    ap.add_argument("--cache-bytes", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.measure:
        print(json.dumps(measure(args.measure, None if args.cache_bytes == "None" else int(args.cache_bytes),
                                 args.repeats)))
        return
    folder = tempfile.mkdtemp(prefix="weight_memory_", dir=args.tmp)
    try:
        t = time.perf_counter()
        text = write_checkpoint(folder)
        total, _ = count_parameters(text)
        print(f"# checkpoint: {total / 1e9:.2f}B parameters, {2 * total / 1e9:.2f} GB bf16 "
              f"({4 * total / 1e9:.2f} GB as float32), written in {time.perf_counter() - t:.0f} s; prompt {PROMPT}, "
              f"canvas {CANVAS}")
        results = run(folder, [None, int(args.cache_gb * 1e9), 0], args.repeats, args.threads)
    finally:
        shutil.rmtree(folder)
    start = max(r["start"] for r in results.values())
    print(f"# {cpu_name()}, {os.cpu_count()} cores ({args.threads} BLAS thread(s)), "
          f"Linux {platform.release()}, "
          f"python {platform.python_version()}, numpy {np.__version__}, load average {os.getloadavg()[1]:.1f} "
          f"(5 min, at the end); RSS before load <= {start / 1e9:.2f} GB")
    print(table(results, 2 * total))


if __name__ == "__main__":
    main()
