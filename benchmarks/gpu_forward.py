"""tinydg's whole forward pass at DiffusionGemma's real size on one GPU, with random bf16 weights.

    python benchmarks/gpu_forward.py [--prompt 1024] [--repeats 5] [--dtype bfloat16|float8]

Builds the real configuration (weights/real/config.json: 30 layers, 128 experts top-8, hidden
2816, vocab 262144) with random weights made directly on the GPU in bf16 (N(0, 1/fan_in) for
matrices, ones for norms and scales), then times with CUDA events: the prefill of a P-token
prompt (`encode`), one decoder forward over the 256-token canvas (`denoise`, with
self-conditioning), and the commit of a canvas (`encode` of 256 tokens after the prompt).
Medians after a warm-up; peak device memory from CuPy's pool. Random weights do not make text:
this measures time only.
"""

import argparse
import os
import sys
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)


def random_model(folder, dtype="bfloat16", *, emulate=False):
    """The configuration in `folder` with random weights (N(0, 1/fan_in) for matrices, 0.02 for the
    embedding, ones for norms and scales), made where the model computes and laid out as its ops
    (tinydg.gpu.gpu_ops(dtype), the measured kernels) store them: on the GPU, with the kernels;
    emulate=True: on the host, with their NumPy twins (the dry run on the CPU)."""
    import tinydg
    from tinydg.config import load_config
    from tinydg.gpu import gpu_ops, launchers, twins
    from tinydg.weights import Weights, weight_shapes
    config, generation_config = load_config(folder)
    ops = gpu_ops(dtype, emulate=emulate, text=config.text_config)
    lib, xp = (twins if emulate else launchers), ops.xp
    shapes = weight_shapes(config.text_config)
    weights = Weights(shapes)  # by name only: every array is made below
    r = xp.random.default_rng(0)
    for name, shape in shapes.items():
        if len(shape) >= 2:
            std = 0.02 if name.endswith("embed_tokens.weight") else shape[-1] ** -0.5
            w = r.standard_normal(shape, dtype=xp.float32) * np.float32(std)
            weights._arrays[name] = stored(lib, dtype, w)
            del w
        else:
            weights._arrays[name] = xp.ones(shape, dtype=xp.float32)
    return tinydg.Model(config, generation_config, weights, None, ops)


def stored(lib, dtype, w):
    """A float32 matrix made on the device, in the layout `ops.upload` gives a host one: float8
    experts (the 3-D weights) as tinydg.fp8.Float8Rows, other bf16 / float8 matrices as bf16 bits.
    (`ops.upload` takes host arrays, and drawing 25B random parameters on the host takes minutes.)"""
    if dtype == "float8" and w.ndim == 3:
        return lib.quantize_rows(w)
    return w if dtype == "float32" else lib.to_bf16(w)


def median_ms(cupy, fn, repeats):
    """Median milliseconds of fn() between CUDA events, after three warm-up calls."""
    for _ in range(3):
        fn()
    cupy.cuda.Device().synchronize()
    times = []
    for _ in range(repeats):
        start, end = cupy.cuda.Event(), cupy.cuda.Event()
        start.record()
        fn()
        end.record()
        end.synchronize()
        times.append(cupy.cuda.get_elapsed_time(start, end))
    return float(np.median(times))


def measure(prompt=1024, repeats=5, folder=os.path.join(ROOT, "weights", "real"), dtype="bfloat16"):
    import cupy

    import tinydg
    pool = cupy.get_default_memory_pool()
    start = time.time()
    model = random_model(folder, dtype)
    cupy.cuda.Device().synchronize()
    build_s = time.time() - start
    weights_gb = pool.used_bytes() / 1e9
    V, C = model.text.vocab_size, model.config.canvas_length
    rng = np.random.default_rng(0)
    ids = rng.integers(0, V, size=(1, prompt))
    canvas = cupy.asarray(rng.integers(0, V, size=(1, C)))
    _, cache = tinydg.encode(model, ids)
    sc = tinydg.denoise(model, canvas, cache)
    results = {
        "prompt": prompt, "canvas": C, "weights_GB": round(weights_gb, 1), "build_s": round(build_s, 1),
        "prefill_ms": median_ms(cupy, lambda: tinydg.encode(model, ids), max(3, repeats // 2)),
        "denoise_ms": median_ms(cupy, lambda: tinydg.denoise(model, canvas, cache, sc), repeats),
        "commit_ms": median_ms(cupy, lambda: tinydg.encode(model, canvas, cache), repeats),
        "peak_pool_GB": round(pool.total_bytes() / 1e9, 1),
    }
    return results


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--prompt", type=int, default=1024)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--dtype", choices=("bfloat16", "float8"), default="bfloat16")
    args = p.parse_args()
    print(measure(args.prompt, args.repeats, dtype=args.dtype))


if __name__ == "__main__":
    main()
