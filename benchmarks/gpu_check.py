"""The GPU check: every GPU test, a smoke generation and kernel timings at the real model's sizes,
in a few minutes on one H100/H200, with nothing to download, then the full-scale benchmark
(benchmarks/gpu_full_scale.py) into OUT_DIR/full_scale/. Prints a short table last; full logs
go to the folder given.

    python benchmarks/gpu_check.py OUT_DIR [--skip-full-scale]   (from the repository root; needs tinydg[gpu,test])

Timings: CUDA events around each launch sequence, after a warm-up, median of repeats. Sizes are
DiffusionGemma's (hidden 2816, 128 experts top-8 of width 704, canvas 256, sliding head_dim 256
with 8 KV heads, global head_dim 512 with 2 KV heads), bf16 weights, random data.
"""

import datetime
import json
import os
import platform
import subprocess
import sys
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

TESTS = ["tests/test_cuda_compile.py", "tests/test_gpu_wiring.py", "tests/test_gpu.py", "tests/test_vision_golden.py"]
N, D, I, E, A, V = 256, 2816, 704, 128, 8, 262144  # canvas rows, hidden, expert width, experts, top-k, vocab


def environment(cupy):
    props = cupy.cuda.runtime.getDeviceProperties(0)
    return {
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "gpu": props["name"].decode() if isinstance(props["name"], bytes) else str(props["name"]),
        "memory_GiB": round(props["totalGlobalMem"] / 2**30, 1),
        "cuda_runtime": cupy.cuda.runtime.runtimeGetVersion(),
        "driver": cupy.cuda.runtime.driverGetVersion(),
        "cupy": cupy.__version__,
        "numpy": np.__version__,
        "python": platform.python_version(),
    }


def run_tests(out):
    """pytest over the GPU tests; returns (passed, failed, skipped, seconds)."""
    start = time.time()
    with open(os.path.join(out, "pytest.log"), "w") as log:
        code = subprocess.call([sys.executable, "-m", "pytest", "-q", "-rfEs", "-p", "no:cacheprovider",
                                f"--junitxml={os.path.join(out, 'junit.xml')}", *TESTS], cwd=ROOT, stdout=log,
                               stderr=subprocess.STDOUT)
    import xml.etree.ElementTree as ET
    suite = ET.parse(os.path.join(out, "junit.xml")).getroot()
    suite = suite if suite.tag == "testsuite" else suite[0]
    total, failures, errors, skipped = (int(suite.get(k, 0)) for k in ("tests", "failures", "errors", "skipped"))
    return code, total - failures - errors - skipped, failures + errors, skipped, time.time() - start


def smoke_generation():
    import tinydg
    from tinydg.chat_format import encode_prompt, parse_response
    from tinydg.model import default_checkpoint
    from tinydg.tokenizer import load_tokenizer
    folder = default_checkpoint()
    model = tinydg.load(folder, backend="cupy")
    tok = load_tokenizer(folder)
    ids = np.array([encode_prompt(tok, [{"role": "user", "content": "sort 7 2 9 2 4 0 5"}])])
    steps = 0
    start = time.time()
    run = tinydg.stream(model, ids, seed=0)
    while True:
        try:
            event = next(run)
            steps += isinstance(event, tinydg.Step)
        except StopIteration as done:
            out = done.value
            break
    seconds = time.time() - start
    text = tok.decode(out.sequences[0, ids.shape[1]:].tolist(), skip_special_tokens=False)
    return {"weights": os.path.relpath(folder, ROOT), "steps": steps, "seconds": round(seconds, 3),
            "tokens_per_forward": float(out.tokens_per_forward[0]), "answer": parse_response(text).answer[:80]}


def time_ms(cupy, fn, repeats=20):
    from gpu_forward import median_ms
    return median_ms(cupy, fn, repeats)


def kernel_timings(cupy):
    """Median ms per call at the real sizes, with bytes moved and the copy-bandwidth floor."""
    from tinydg.gpu import launchers
    r = cupy.random.default_rng(0)
    rows = {}
    bandwidth = copy_bandwidth(cupy, r, rows)
    logits = r.standard_normal((N, E), dtype=cupy.float32)
    scale = cupy.ones(E, dtype=cupy.float32)
    rows["router_topk 256x128 top-8"] = {"ms": time_ms(cupy, lambda: launchers.router_topk(logits, scale, A))}
    expert_timings(cupy, r, *launchers.router_topk(logits, scale, A), bandwidth, rows)
    attention_timings(cupy, r, rows)
    E_bits = bf16_random(r, (V, D), 0.02)
    h = r.standard_normal((N, D), dtype=cupy.float32)
    ms = time_ms(cupy, lambda: launchers.linear(h, E_bits), 10)
    rows["LM head 256x2816 @ 2816x262144 (bf16 cuBLAS)"] = {"ms": ms, "TFLOP/s": round(2 * N * D * V / ms / 1e9, 1)}
    return rows


def bf16_random(r, shape, scale=1.0):
    """Random normal values times scale, as bf16 bits on the GPU."""
    from tinydg.gpu import launchers
    return launchers.to_bf16(r.standard_normal(shape, dtype=np.float32) * np.float32(scale))


def copy_bandwidth(cupy, r, rows):
    """Bytes per second of a 2 GiB device-to-device copy, counting bytes read and written."""
    big = r.standard_normal(1 << 28, dtype=cupy.float32)
    dst = cupy.empty_like(big)
    ms = time_ms(cupy, lambda: cupy.copyto(dst, big), 10)
    bandwidth = 2 * big.nbytes / (ms * 1e-3)
    rows["copy 2 GiB (bandwidth)"] = {"ms": ms, "GB/s": round(bandwidth / 1e9)}
    return bandwidth


def expert_timings(cupy, r, w, idx, bandwidth, rows):
    """One layer's experts along every implementation, against the readable float32 mixture."""
    from tinydg import moe
    from tinydg.gpu import launchers
    from tinydg.gpu.experimental import experts_gemm
    x = r.standard_normal((N, D), dtype=cupy.float32)
    gate_up, down = bf16_random(r, (E, 2 * I, D), D ** -0.5), bf16_random(r, (E, D, I), I ** -0.5)
    expert_bytes = gate_up.nbytes + down.nbytes
    readable = lambda: moe.experts(x, idx.astype(cupy.int64), w, launchers.to_float32(gate_up),
                                   launchers.to_float32(down))
    want = readable()
    calls = {"tensor cores (mma)": lambda: launchers.experts(x, idx, w, gate_up, down, variant="auto"),
             "FMA": lambda: launchers.experts(x, idx, w, gate_up, down, variant="fma"),
             "cuBLAS, batched over experts": lambda: experts_gemm.experts(x, idx, w, gate_up, down, launchers)}
    for label, call in calls.items():
        try:  # a path not yet run on a GPU may fail: report it and time the rest
            ms = time_ms(cupy, call, 10)
            got = call()
            rows[f"experts, one layer, bf16, {label}"] = {
                "ms": ms, "weights_GB": round(expert_bytes / 1e9, 2), "floor_ms": round(expert_bytes / bandwidth * 1e3, 3),
                "rel_err_vs_f32": float(cupy.abs(got - want).max() / cupy.abs(want).max())}
        except Exception as e:
            rows[f"experts, one layer, bf16, {label}"] = {"error": f"{type(e).__name__}: {e}"[:200]}
    rows["experts, readable moe.experts on CuPy (f32)"] = {"ms": time_ms(cupy, readable, 3)}


def attention_call(variant, q, past_k, past_v, k, v, causal, window=0):
    """One attention over the cache segment past_k, past_v and this call's keys k, v (which start at the
    first query's position): kernels.attention's variants "auto" and "scalar", or "gemm" on cuBLAS."""
    import cupy

    from tinydg.attention import Visibility
    from tinydg.gpu import launchers
    from tinydg.gpu.experimental import attention_gemm
    S = past_k.shape[2]
    if variant == "gemm":
        seen = Visibility(S, S, causal, window, cupy.ones((q.shape[0], S + k.shape[2]), dtype=bool))
        return lambda: attention_gemm.attention(q, past_k, past_v, k, v, seen, launchers)
    return lambda: launchers.attention(q, past_k, past_v, 0, k, v, S, S, causal=causal, window=window, variant=variant)


def attention_timings(cupy, r, rows):
    """The decoder's attention on a sliding and a global layer, and a sliding layer's prefill."""
    T = 2048  # encoder prefill of a 2048-token prompt on a sliding layer (causal, window 1024)
    cases = [(f"attention decoder {label} (d={d}, {S}+{N} keys)", K, d, S, N, False, 0, 20)
             for label, K, d, S in (("sliding", 8, 256, 1023), ("global", 2, 512, 4096))]
    cases.append((f"attention prefill sliding (d=256, T={T}, causal)", 8, 256, 0, T, True, 1024, 5))
    for name, K, d, S, Tq, causal, window, repeats in cases:
        q = r.standard_normal((1, 16, Tq, d), dtype=cupy.float32)
        past_k, past_v = bf16_random(r, (1, K, S, d)), bf16_random(r, (1, K, S, d))
        k, v = bf16_random(r, (1, K, Tq, d)), bf16_random(r, (1, K, Tq, d))
        for variant in ("auto", "scalar", "gemm"):
            try:
                rows[f"{name}, {variant}"] = {"ms": time_ms(cupy, attention_call(variant, q, past_k, past_v, k, v,
                                                                                  causal, window), repeats)}
            except Exception as e:
                rows[f"{name}, {variant}"] = {"error": f"{type(e).__name__}: {e}"[:200]}


def full_scale_rows(out, table, results):
    """benchmarks/gpu_full_scale.py into OUT_DIR/full_scale/ (its own tables and plot), summed up in the table."""
    try:
        import gpu_full_scale
        full, _ = gpu_full_scale.run(os.path.join(out, "full_scale"), [1024, 8192, 32768], 5, [1024], False,
                                     gpu_full_scale.default_wheel())
        results["full_scale"] = full
        for row in full["prompts"]:
            table.append((f"real size, {row['dtype']}, {row['path']}, prompt {row['prompt']}",
                          row.get("error") or
                          f"prefill {row['prefill_ms']:.0f} ms, decoder forward {row['decoder_forward_ms']:.1f} ms "
                          f"(graph {row.get('decoder_forward_graph_ms', float('nan')):.1f}), "
                          f"floor {row['floor_ms']:.1f} ms, commit {row['commit_ms']:.1f} ms, pool {row['pool_GB']} GB"))
        tf = full.get("transformers", {})
        table.append(("transformers side by side", tf.get("error") or "see full_scale/full_scale.md"))
    except Exception as e:
        table.append(("full-scale benchmark", f"FAIL {type(e).__name__}: {e}"))
        results["full_scale"] = {"error": repr(e)}


def main(out, full_scale=True):
    os.makedirs(out, exist_ok=True)
    import cupy
    env = environment(cupy)
    table = [("GPU", env["gpu"] + f" ({env['memory_GiB']} GiB)"),
             ("versions", f"CUDA runtime {env['cuda_runtime']}, driver {env['driver']}, CuPy {env['cupy']}, "
                          f"NumPy {env['numpy']}")]
    code, passed, failed, skipped, seconds = run_tests(out)
    table.append(("GPU tests", f"{'PASS' if code == 0 else 'FAIL'}: {passed} passed, {failed} failed, "
                               f"{skipped} skipped in {seconds:.0f} s"))
    results = {"environment": env, "tests": {"exit_code": code, "passed": passed, "failed": failed,
                                             "skipped": skipped, "seconds": round(seconds, 1)}}
    try:
        smoke = smoke_generation()
        table.append(("smoke generation", f"{smoke['weights']}: {smoke['steps']} steps in {smoke['seconds']} s, "
                                          f"{smoke['tokens_per_forward']:.2f} tok/forward, answer {smoke['answer']!r}"))
        results["smoke"] = smoke
    except Exception as e:  # report and go on to the timings
        table.append(("smoke generation", f"FAIL {type(e).__name__}: {e}"))
        results["smoke"] = {"error": repr(e)}
    try:
        timings = kernel_timings(cupy)
        results["timings"] = timings
        for name, row in timings.items():
            table.append((name, ", ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}" for k, v in row.items())))
    except Exception as e:
        table.append(("timings", f"FAIL {type(e).__name__}: {e}"))
        results["timings"] = {"error": repr(e)}
    if full_scale:
        full_scale_rows(out, table, results)
    else:
        table.append(("full-scale benchmark", "skipped: run benchmarks/gpu_full_scale.py OUT_DIR/full_scale"))
    with open(os.path.join(out, "gpu_check.json"), "w") as f:
        json.dump(results, f, indent=1)
    width = max(len(k) for k, _ in table)
    print("\n".join(f"{k.ljust(width)}  {v}" for k, v in table))
    return 0 if code == 0 and "error" not in results["smoke"] else 1


if __name__ == "__main__":
    import argparse
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("out", nargs="?", default="gpu_check_out")
    p.add_argument("--skip-full-scale", action="store_true",
                   help="stop after the tests, the smoke generation and the kernel timings (the full-scale "
                        "benchmark then runs on its own: python benchmarks/gpu_full_scale.py OUT_DIR/full_scale)")
    args = p.parse_args()
    sys.exit(main(args.out, full_scale=not args.skip_full_scale))
