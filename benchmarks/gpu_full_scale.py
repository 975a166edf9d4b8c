"""DiffusionGemma at full scale on one GPU: tinydg's speed against the memory floor and transformers.

    python benchmarks/gpu_full_scale.py OUT_DIR [--prompts 1024 8192 32768] [--repeats 5]
                                                [--float8-prompts 1024] [--transformers-prompts 1024]
                                                [--transformers-wheel WHL]
    python benchmarks/gpu_full_scale.py OUT_DIR --tiny     (dry run on the CPU: demo config, NumPy twins)

Nothing to download: the real configuration (weights/real/config.json) gets random bf16 weights
made on the GPU (benchmarks/gpu_forward.py). Fixed work, no adaptive stopping: every number is
one call of a fixed size, timed with CUDA events after a warm-up (medians). For each prompt length P:
- prefill: `encode` of P tokens, one call;
- decoder forward: `denoise` of the 256-token canvas over the cache, with self-conditioning,
  eager and replayed from a CUDA graph (tinydg.gpu.experimental.graph);
- each along four paths (PATHS, each a tinydg.gpu.Kernels): the kernels measured so far ("per-row"
  attention), attention on cuBLAS ("gemm": tinydg.gpu.experimental.attention_gemm), that with the
  fused RMSNorm, RoPE, gelu * up, soft-capping and sampler's pass ("gemm+fused"), and that with the
  experts on cuBLAS too ("gemm+fused+cublas": tinydg.gpu.experimental.experts_gemm);
- commit: `encode` of the 256 canvas tokens after the prompt;
- the floor: bytes a decoder forward must move (all weights once, the embedding a second time for
  self-conditioning, the KV cache, the logits written and the previous logits read) divided by the
  measured copy bandwidth; the roofline ratio is measured time / floor;
- tok/s for one sequence at 12, 16 and 48 steps per canvas: 256 / (steps x forward + commit), and
  measured end to end with `tinydg.generate` (two canvases, a fixed number of steps, sampler and
  host work included; with and without CUDA graphs);
- device memory: CuPy's pool after the prompt (weights included), and the largest prompt that
  would fit, extrapolated linearly from the two longest measured prompts.
At the first prompt length, one eager forward is broken down by kind (benchmarks/forward_profile.py)
and the sampler (softmax, entropy, draws, acceptance, renoising) is timed on its logits. The same
then runs with the experts in float8 (dtype "float8", tinydg.fp8) at --float8-prompts.
Then, if transformers with DiffusionGemma is installed, benchmarks/gpu_vs_transformers.py runs in a
fresh process (same kind of random weights, shared zero-copy with tinydg) at --transformers-prompts;
on a machine whose transformers predates DiffusionGemma, pass the 5.23 wheel (--transformers-wheel).

Writes OUT_DIR/full_scale.json, full_scale.md (the tables) and full_scale.png (the plot).
"""

import argparse
import dataclasses
import datetime
import json
import os
import platform
import subprocess
import sys

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, ROOT)
sys.path.insert(0, HERE)

from gpu_forward import random_model  # noqa: E402  (after the path set-up above)

from tinydg.gpu import Kernels, gpu_ops  # noqa: E402

STEPS = (12, 16, 48)
H100_GB = round(78 * 2**30 / 1e9, 1)  # what CUDA leaves usable on an 80 GB H100, about 78 GiB, in 10^9 bytes
PATHS = {  # name: the GPU implementations it runs (tinydg.gpu.Kernels)
    "per-row": Kernels(),                             # the kernels measured so far: attention one warp per query row
    "gemm": Kernels(attention="gemm"),                # attention on cuBLAS
    "gemm+fused": Kernels(attention="gemm", fused=True),  # and fused RMSNorm, RoPE, gelu * up, soft-cap, sampler pass
    "gemm+fused+cublas": Kernels("gemm", "cublas", fused=True),  # and the experts on cuBLAS
}


def path_model(model, path, tiny):
    """The same weights with the ops of one of PATHS: their layout depends on the dtype alone, so the
    model is not rebuilt. The dry run (tiny) emulates the GPU ops on NumPy: the cuBLAS attention and
    experts run their own code there, cuBLAS and the kernels replaced by their twins."""
    return dataclasses.replace(model, ops=gpu_ops(model.dtype, PATHS[path], emulate=tiny, text=model.text))


class Bench:
    """The device under test: its array module, clock and memory counters."""

    def __init__(self, tiny):
        from forward_profile import CudaClock, HostClock
        self.tiny = tiny
        if tiny:
            self.xp, self.clock = np, HostClock()
        else:
            import cupy
            self.xp, self.clock = cupy, CudaClock()
            self.pool = cupy.get_default_memory_pool()

    def median_ms(self, fn, repeats, warmup=2):
        for _ in range(warmup):
            fn()
        times = []
        for _ in range(repeats):
            start = self.clock.mark()
            fn()
            end = self.clock.mark()
            self.clock.sync()
            times.append(self.clock.ms(start, end))
        return float(np.median(times))

    def pool_GB(self):
        return None if self.tiny else round(self.pool.total_bytes() / 1e9, 2)

    def device_GB(self):
        if self.tiny:
            return None
        free, total = self.xp.cuda.runtime.memGetInfo()
        return round(total / 1e9, 2)

    def copy_bandwidth(self):
        """Bytes per second of a large device-to-device copy, counting bytes read and written."""
        n = (1 << 20) if self.tiny else (1 << 28)
        src = self.xp.ones(n, dtype=self.xp.float32)
        dst = self.xp.empty_like(src)
        ms = self.median_ms(lambda: self.xp.copyto(dst, src), 10)
        return 2 * src.nbytes / (ms * 1e-3)


def environment(bench):
    env = {"date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
           "numpy": np.__version__, "python": platform.python_version()}
    if bench.tiny:
        env["gpu"] = "none (dry run on the CPU with the NumPy twins)"
        return env
    cupy = bench.xp
    props = cupy.cuda.runtime.getDeviceProperties(0)
    name = props["name"]
    env.update(gpu=name.decode() if isinstance(name, bytes) else str(name),
               memory_GiB=round(props["totalGlobalMem"] / 2**30, 1), cuda_runtime=cupy.cuda.runtime.runtimeGetVersion(),
               driver=cupy.cuda.runtime.driverGetVersion(), cupy=cupy.__version__)
    return env


# --- the measurements --------------------------------------------------------------------------------

def nbytes(a):
    return int(a.nbytes)  # arrays, and tinydg.fp8.Float8Rows (codes and scales)


def must_move(model, cache, B):
    """Bytes one decoder forward cannot avoid moving: every weight once, the embedding once more
    (self-conditioning's probs @ E besides the LM head), the whole KV cache, the logits written and
    the previous step's logits read."""
    from tinydg.weights import DECODER
    weights = sum(nbytes(model.weights[name]) for name in model.weights)
    embedding = nbytes(model.weights[DECODER + "embed_tokens.weight"])
    kv = sum(nbytes(a) for a in cache.keys) + sum(nbytes(a) for a in cache.values)
    logits = 2 * B * model.config.canvas_length * model.text.vocab_size * 4
    return {"weights": weights, "embedding_again": embedding, "kv_cache": kv, "logits": logits,
            "total": weights + embedding + kv + logits}


def sampler_ms(bench, model, logits, repeats):
    from tinydg import sampler
    from tinydg.rng import TorchCPUGenerator
    g = model.generation_config
    if bench.tiny:
        rng = TorchCPUGenerator(0)
    else:
        from tinydg.gpu import DeviceRNG
        rng = DeviceRNG(0)
    canvas = bench.xp.zeros(logits.shape[:2], dtype=bench.xp.int64)

    def step():
        processed = logits / np.float32(0.8)
        proposal, _, entropy = model.ops.propose(processed, rng)  # the readable pass, or its fused kernel
        accepted = sampler.accept(entropy, g.entropy_bound)
        sampler.renoise(bench.xp.where(accepted, proposal, canvas), accepted, rng, model.text.vocab_size)
    return bench.median_ms(step, repeats)


def breakdown(bench, model, canvas, cache, sc):
    import tinydg
    from forward_profile import Profile
    prof = Profile(bench.clock, model.text.vocab_size, model.text.num_experts)
    timed = prof.model(model)
    with prof:
        tinydg.denoise(timed, canvas, cache, sc)
    table = prof.table()
    return {"total_ms": prof.total_ms(), "ms": dict(sorted(table.items(), key=lambda kv: -kv[1]))}


def measure_prompt(bench, model, P, repeats, bandwidth, first, path="per-row"):
    import tinydg
    xp, V, C = bench.xp, model.text.vocab_size, model.config.canvas_length
    rng = np.random.default_rng(P)
    ids = xp.asarray(rng.integers(0, V, size=(1, P)))
    canvas = xp.asarray(rng.integers(0, V, size=(1, C)))
    if not bench.tiny:
        bench.pool.free_all_blocks()
    row = {"dtype": model.dtype, "path": path, "prompt": P}
    if first:  # compile and upload before anything is timed
        _, cache = tinydg.encode(model, ids)
    start = bench.clock.mark()
    _, cache = tinydg.encode(model, ids)
    end = bench.clock.mark()
    bench.clock.sync()
    row["prefill_ms"] = bench.clock.ms(start, end)
    if first:
        row["prefill_ms"] = bench.median_ms(lambda: tinydg.encode(model, ids), max(2, repeats // 2), warmup=0)
    sc = tinydg.denoise(model, canvas, cache)
    row["decoder_forward_ms"] = bench.median_ms(lambda: tinydg.denoise(model, canvas, cache, sc), repeats)
    row["commit_ms"] = bench.median_ms(lambda: tinydg.encode(model, canvas, cache), repeats)
    if not bench.tiny:
        from tinydg.gpu.experimental.graph import GraphedDenoise
        try:  # a path that reads back to the host (the cuBLAS experts) cannot be captured
            graphed = GraphedDenoise(model)
            logits = graphed(canvas, cache, sc)
            eager = tinydg.denoise(model, canvas, cache, sc)
            row["graph_max_abs_diff"] = float(xp.abs(logits - eager).max())
            row["decoder_forward_graph_ms"] = bench.median_ms(lambda: graphed(canvas, cache, sc), repeats)
            del graphed, logits, eager
        except Exception as e:
            row["graph_error"] = f"{type(e).__name__}: {e}"[:200]
    best = min(row["decoder_forward_ms"], row.get("decoder_forward_graph_ms", np.inf))
    moved = must_move(model, cache, 1)
    row["must_move_bytes"] = moved
    row["must_move_GB"] = round(moved["total"] / 1e9, 3)
    row["kv_cache_GB"] = round(moved["kv_cache"] / 1e9, 3)
    row["floor_ms"] = moved["total"] / bandwidth * 1e3
    row["roofline_ratio"] = best / row["floor_ms"]
    row["tok_per_s"] = {str(s): C / ((s * best + row["commit_ms"]) * 1e-3) for s in STEPS}
    row["pool_GB"] = bench.pool_GB()
    extra = {}
    if first:
        extra["breakdown"] = breakdown(bench, model, canvas, cache, sc)
        extra["breakdown"]["sampler_ms"] = sampler_ms(bench, model, tinydg.denoise(model, canvas, cache, sc), repeats)
    return row, extra


def generate_rate(bench, model, P, steps, cuda_graph):
    """tinydg.generate end to end, sampler and host work included: two canvases after a P-token
    prompt already in the cache (so one commit), exactly `steps` forwards each (adaptive stopping
    and end-of-sequence off). Wall clock of the second call; generate returns host arrays, so the
    device has finished."""
    import time

    import tinydg
    C, V = model.config.canvas_length, model.text.vocab_size
    ids = bench.xp.asarray(np.random.default_rng(P + 1).integers(0, V, size=(1, P)))
    _, cache = tinydg.encode(model, ids[:, :-1])

    def run():
        return tinydg.generate(model, ids[:, -1:], cache=cache, max_new_tokens=2 * C, max_denoising_steps=steps,
                               confidence_threshold=1e-30, eos_token_id=[], seed=0, cuda_graph=cuda_graph)
    run()
    start = time.perf_counter()
    out = run()
    seconds = time.perf_counter() - start
    return {"prompt": P, "steps": steps, "cuda_graph": cuda_graph, "seconds": seconds,
            "forwards": int(out.steps_per_canvas.sum()), "tok_per_s": 2 * C / seconds}


# generate end to end: (steps per canvas, CUDA graph) per dtype and path; the cuBLAS experts read back to
# the host, so that path runs without graphs; float8 is timed on one path (the cuBLAS experts are bf16 only)
GENERATE_PLAN = {
    "bfloat16": {"per-row": [(16, False), (16, True)], "gemm": [(16, True)],
                 "gemm+fused": [(12, True), (16, True), (48, True)],
                 "gemm+fused+cublas": [(12, False), (16, False), (48, False)]},
    "float8": {"gemm+fused": [(16, True)]},
}
MODEL_PATHS = {"bfloat16": tuple(PATHS), "float8": ("per-row", "gemm+fused")}  # paths timed per dtype


def generate_rates(bench, model, P, path):
    """tinydg.generate as GENERATE_PLAN says for this dtype and path (no CUDA graphs in the dry run)."""
    plan = GENERATE_PLAN.get(model.dtype, {}).get(path, [])
    if bench.tiny:
        plan = sorted({(steps, False) for steps, _ in plan})
    rows = []
    for steps, graph in plan:
        try:
            rows.append({"path": path, **generate_rate(bench, model, P, steps, graph)})
        except Exception as e:
            rows.append({"path": path, "prompt": P, "steps": steps, "cuda_graph": graph,
                         "error": f"{type(e).__name__}: {e}"[:300]})
    return rows


def largest_prompt(rows, device_GB, max_positions):
    """The prompt at which the pool would reach the device's memory, extrapolated linearly from the
    two longest measured prompts (pool bytes grow with the prompt: KV cache and prefill workspace)."""
    good = [r for r in rows if r.get("pool_GB") is not None]
    if device_GB is None or len(good) < 2:
        return None
    a, b = good[-2], good[-1]
    per_token = (b["pool_GB"] - a["pool_GB"]) / (b["prompt"] - a["prompt"])
    if per_token <= 0:
        return max_positions
    return int(min(max_positions, b["prompt"] + (device_GB - b["pool_GB"]) / per_token))


def transformers_env(wheel, out):
    """The environment for the transformers processes: with a wheel given (a machine whose transformers
    predates DiffusionGemma), that wheel unpacked into OUT_DIR/site, first on PYTHONPATH."""
    env = dict(os.environ)
    if wheel:
        site = os.path.join(out, "site")
        subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-index", "--no-deps", "--target", site,
                        wheel], check=True)
        env["PYTHONPATH"] = os.pathsep.join(p for p in (site, ROOT, env.get("PYTHONPATH")) if p)
    return env


def default_wheel():
    """A transformers wheel carried in the repository's ignored .whl/ folder, if there is one."""
    folder = os.path.join(ROOT, ".whl")
    wheels = sorted(f for f in os.listdir(folder) if f.startswith("transformers-")) if os.path.isdir(folder) else []
    return os.path.join(folder, wheels[-1]) if wheels else None


def transformers_runs(prompts, repeats, out, wheel=None):
    """benchmarks/gpu_vs_transformers.py in a fresh process per prompt length, or why it cannot run."""
    try:
        env = transformers_env(wheel, out)
    except subprocess.CalledProcessError as e:
        return {"error": f"could not install {wheel}: {e}"}
    check = subprocess.run([sys.executable, "-c", "import transformers; from transformers import "
                            "DiffusionGemmaForBlockDiffusion; print(transformers.__version__)"],
                           capture_output=True, text=True, env=env)
    if check.returncode:
        return {"error": "transformers with DiffusionGemma is not installed: " + check.stderr.strip()[-300:]}
    runs = {"transformers_version": check.stdout.strip()}
    for P in prompts:
        path = os.path.join(out, f"transformers_{P}.json")
        with open(os.path.join(out, f"transformers_{P}.log"), "w") as log:
            code = subprocess.call([sys.executable, os.path.join(HERE, "gpu_vs_transformers.py"), "--prompt", str(P),
                                    "--repeats", str(repeats), "--out", path], stdout=log, stderr=subprocess.STDOUT, env=env)
        if code or not os.path.exists(path):
            runs[str(P)] = {"error": f"exit code {code}; see transformers_{P}.log"}
        else:
            with open(path) as f:
                runs[str(P)] = json.load(f)
    return runs


def build(bench, dtype):
    """Random weights: the real configuration on the GPU, the demo one on the CPU for the dry run."""
    return random_model(os.path.join(ROOT, "weights", "demo" if bench.tiny else "real"), dtype, emulate=bench.tiny)


def measure_model(bench, dtype, prompts, repeats, bandwidth, results):
    """Every prompt length on a fresh random model of this dtype; the model is freed afterwards."""
    base = build(bench, dtype)
    results.setdefault("weights_GB", {})[dtype] = round(sum(nbytes(base.weights[n]) for n in base.weights) / 1e9, 3)
    rows = []
    for path in MODEL_PATHS[dtype]:
        model = path_model(base, path, bench.tiny)
        done = []
        for i, P in enumerate(prompts):
            try:
                row, extra = measure_prompt(bench, model, P, repeats, bandwidth, first=(i == 0), path=path)
                done.append(row)
                if "breakdown" in extra:
                    results.setdefault("breakdown", {})[f"{dtype}, {path}"] = extra["breakdown"]
            except Exception as e:  # out of memory at a long prompt, or a kernel failing: record it, go on
                done.append({"dtype": dtype, "path": path, "prompt": P, "error": f"{type(e).__name__}: {e}"[:300]})
        measured = [r for r in done if "error" not in r]
        results.setdefault("largest_prompt_estimate", {})[f"{dtype}, {path}"] = largest_prompt(
            measured, bench.device_GB(), model.text.max_position_embeddings)
        results.setdefault("generate", []).extend(
            {"dtype": dtype, **r} for r in generate_rates(bench, model, prompts[0], path))
        rows += done
    del base, model
    if not bench.tiny:
        bench.pool.free_all_blocks()
    return rows


def run(out, prompts, repeats, transformers_prompts, tiny, wheel=None, float8_prompts=(1024,)):
    """bf16 at every prompt length, float8 experts at float8_prompts, then transformers (GPU only)."""
    os.makedirs(out, exist_ok=True)
    bench = Bench(tiny)
    results = {"environment": environment(bench), "device_GB": bench.device_GB()}
    bandwidth = bench.copy_bandwidth()
    results["copy_bandwidth_GBps"] = round(bandwidth / 1e9, 1)
    results["copy_bandwidth_Bps"] = bandwidth
    results["prompts"] = measure_model(bench, "bfloat16", prompts, repeats, bandwidth, results)
    if float8_prompts:
        results["prompts"] += measure_model(bench, "float8", list(float8_prompts), repeats, bandwidth, results)
    if not tiny:
        results["transformers"] = transformers_runs(transformers_prompts, repeats, out, wheel) if transformers_prompts \
            else {"error": "not requested"}
    with open(os.path.join(out, "full_scale.json"), "w") as f:
        json.dump(results, f, indent=1)
    text = report(results)
    with open(os.path.join(out, "full_scale.md"), "w") as f:
        f.write(text)
    plot(results, os.path.join(out, "full_scale.png"))
    return results, text


# --- the report ---------------------------------------------------------------------------------------

def _fmt(v, digits=1):
    return "-" if v is None else f"{v:.{digits}f}"


def report(results):
    env = results["environment"]
    lines = ["# Full-scale benchmark", "",
             f"{env['date']}; {env['gpu']}" + (f" ({env['memory_GiB']} GiB), CUDA runtime {env['cuda_runtime']}, "
                                              f"driver {env['driver']}, CuPy {env['cupy']}" if "cupy" in env else "")
             + f", NumPy {env['numpy']}, Python {env['python']}.",
             f"Copy bandwidth {results['copy_bandwidth_GBps']} GB/s; weights (GB): "
             + ", ".join(f"{k} {v}" for k, v in results["weights_GB"].items()) + ".", "",
             "| weights | path | prompt | prefill ms | decoder forward ms (eager) | decoder forward ms (CUDA graph) | "
             "floor ms | x floor | commit ms | tok/s @12 | @16 | @48 | KV cache GB | pool GB |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in results["prompts"]:
        if "error" in r:
            lines.append(f"| {r['dtype']} | {r['path']} | {r['prompt']} | {r['error']} |" + " |" * 10)
            continue
        t = r["tok_per_s"]
        lines.append(f"| {r['dtype']} | {r['path']} | {r['prompt']} | {_fmt(r['prefill_ms'])} | "
                     f"{_fmt(r['decoder_forward_ms'])} | "
                     f"{_fmt(r.get('decoder_forward_graph_ms'))} | {_fmt(r['floor_ms'], 2)} | {_fmt(r['roofline_ratio'])} | "
                     f"{_fmt(r['commit_ms'])} | {t['12']:.0f} | {t['16']:.0f} | {t['48']:.0f} | {r['kv_cache_GB']} | "
                     f"{_fmt(r['pool_GB'])} |")
    longest = {}
    for r in results["prompts"]:
        if "error" not in r and r.get("pool_GB") is not None:
            key = (r["dtype"], r["path"])
            longest[key] = max(longest.get(key, r), r, key=lambda x: x["prompt"])
    for (dtype, path), r in longest.items():
        lines.append(f"- {dtype}, {path}: CuPy's pool held {r['pool_GB']} GB at the {r['prompt']}-token prompt, "
                     f"weights included: {'within' if r['pool_GB'] <= H100_GB else 'over'} the {H100_GB} GB "
                     "(78 GiB) an 80 GB H100 leaves usable.")
    estimates = results.get("largest_prompt_estimate", {})
    lines += ["", "Largest prompt that fits (extrapolated from the two longest prompts): "
              + (", ".join(f"{k} {v or '-'}" for k, v in estimates.items()) or "-")
              + f"; device {results.get('device_GB') or '-'} GB.", ""]
    lines += ["Paths: " + "; ".join(f"{name}: {kernels}" for name, kernels in PATHS.items()) + ".", ""]
    if results.get("generate"):
        lines += ["`tinydg.generate` end to end (two canvases after a cached prompt, a fixed number of steps, the "
                  "sampler and host work included):", "",
                  "| weights | path | prompt | steps | CUDA graph | forwards | seconds | tok/s |", "|---|---|---|---|---|---|---|---|"]
        for g in results["generate"]:
            lines.append(f"| {g['dtype']} | {g['path']} | {g['prompt']} | {g['steps']} | {g['cuda_graph']} | "
                         + (f"{g['error']} | | |" if "error" in g else
                            f"{g['forwards']} | {g['seconds']:.3f} | {g['tok_per_s']:.0f} |"))
        lines.append("")
    for label, b in results.get("breakdown", {}).items():
        dtype, path = label.split(", ")
        first = next(r["prompt"] for r in results["prompts"] if r["dtype"] == dtype and r["path"] == path)
        lines += [f"One eager decoder forward, {dtype} weights, path {path}, prompt {first}, by kind "
                  f"(exclusive ms; total {b['total_ms']:.2f} ms with the profiler's events):", "",
                  "| kind | ms | share |", "|---|---|---|"]
        lines += [f"| {k} | {v:.3f} | {100 * v / b['total_ms']:.1f} % |" for k, v in b["ms"].items()]
        lines += [f"| sampler (separately: softmax, entropy, draws, accept, renoise) | {b['sampler_ms']:.3f} | |", ""]
    tf = results.get("transformers")
    if tf:
        lines += ["Side by side with transformers (benchmarks/gpu_vs_transformers.py, same weights):", ""]
        if "error" in tf:
            lines.append(f"not run: {tf['error']}")
        else:
            lines += [f"transformers {tf['transformers_version']}", "",
                      "| prompt | setting | decoder forward ms | prefill ms | vs tinydg (same run) |", "|---|---|---|---|---|"]
            for P, run_ in tf.items():
                if P == "transformers_version":
                    continue
                if "error" in run_:
                    lines.append(f"| {P} | {run_['error']} | | | |")
                    continue
                ours = run_["tinydg"]["decoder_forward_ms"]
                lines.append(f"| {P} | tinydg | {ours:.1f} | {run_['tinydg']['prefill_ms']:.1f} | 1.00x |")
                for label, row in run_["transformers"].items():
                    if "error" in row:
                        lines.append(f"| {P} | {label} | {row['error'][:80]} | | |")
                    else:
                        lines.append(f"| {P} | transformers {label} | {row['decoder_forward_ms']:.1f} | "
                                     f"{row['prefill_ms']:.1f} | {row['decoder_forward_ms'] / ours:.2f}x slower |")
    return "\n".join(lines) + "\n"


def plot(results, path):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, (left, right) = plt.subplots(1, 2, figsize=(13, 4.5))
    for dtype, style in (("bfloat16", "-"), ("float8", ":")):
        for name, marker in zip(PATHS, "o^sD"):
            rows = [r for r in results["prompts"] if "error" not in r and r["dtype"] == dtype and r["path"] == name]
            if not rows:
                continue
            P = [r["prompt"] for r in rows]
            best = [min(r["decoder_forward_ms"], r.get("decoder_forward_graph_ms", np.inf)) for r in rows]
            left.plot(P, best, marker + style, label=f"tinydg {dtype}, {name}")
        if rows:
            left.plot(P, [r["floor_ms"] for r in rows], "k" + ("--" if dtype == "bfloat16" else ":"),
                      label=f"memory floor, {dtype}")
    for key, run_ in (results.get("transformers") or {}).items():
        if isinstance(run_, dict) and "transformers" in run_:
            for label, row in run_["transformers"].items():
                if "decoder_forward_ms" in row:
                    left.plot([int(key)], [row["decoder_forward_ms"]], "x", markersize=9, label=f"transformers {label}")
    left.set_xscale("log", base=2)
    left.set_yscale("log")
    left.set_xlabel("prompt tokens")
    left.set_ylabel("ms per decoder forward (256-token canvas)")
    left.set_title(results["environment"]["gpu"][:40])
    left.legend(fontsize=8)
    b = results.get("breakdown", {}).get("bfloat16, per-row")
    if b:
        kinds = list(b["ms"])[::-1]
        right.barh(kinds, [b["ms"][k] for k in kinds])
        right.set_xlabel("ms (exclusive)")
        right.set_title(f"one eager bf16 decoder forward (per-row attention), prompt {results['prompts'][0]['prompt']}")
        right.tick_params(axis="y", labelsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("out")
    p.add_argument("--prompts", type=int, nargs="+", default=None)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--transformers-prompts", type=int, nargs="*", default=[1024])
    p.add_argument("--float8-prompts", type=int, nargs="*", default=None,
                   help="prompt lengths for the float8-experts model (default: the first of --prompts)")
    p.add_argument("--transformers-wheel", default=default_wheel(),
                   help="a transformers wheel with DiffusionGemma, for a machine whose own transformers lacks it "
                        "(default: .whl/transformers-*.whl in the repository, if present)")
    p.add_argument("--tiny", action="store_true", help="dry run on the CPU: the demo config, NumPy twins")
    args = p.parse_args()
    prompts = args.prompts or ([12, 40, 100] if args.tiny else [1024, 8192, 32768])
    float8_prompts = prompts[:1] if args.float8_prompts is None else args.float8_prompts
    _, text = run(args.out, prompts, args.repeats, args.transformers_prompts, args.tiny, args.transformers_wheel,
                  float8_prompts)
    print(text)


if __name__ == "__main__":
    main()
