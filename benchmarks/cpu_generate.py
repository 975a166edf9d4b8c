"""CPU benchmark: `tinydg.generate` against transformers' `generate` on the same checkpoint.

Both sample the same way from the same seed, float32, same thread count, with a fixed number of
denoising steps (the confidence threshold is set so low that adaptive stopping never fires, so
both do exactly canvases x steps decoder forwards). Reported: median wall time, tokens per second
(canvas tokens produced / time), and peak resident memory of each side, each measured in a fresh
process so that neither inherits the other's memory.

    python benchmarks/cpu_generate.py [--threads N] [--repeats R] [--config medium]

Needs the `reference` extra.
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "benchmarks"))

SETTINGS = dict(max_denoising_steps=8, entropy_bound=0.1, t_min=0.4, t_max=0.8, stability_threshold=1,
                confidence_threshold=1e-30)

WORKER = r"""
import json, os, resource, statistics, sys, time
import numpy as np
args = json.loads(sys.argv[1])
sys.path.insert(0, args["root"])
ids = np.random.default_rng(0).integers(0, args["vocab"], (1, args["prompt"]))
if args["side"] == "tinydg":
    import tinydg
    from tinydg.generation import generate
    model = tinydg.load(args["folder"])
    run = lambda: generate(model, ids, args["new"], seed=0, **args["settings"]).sequences
else:
    import torch
    torch.set_num_threads(args["threads"])
    from tinydg.tools import reference as ref
    from tinydg.tools.reference_generate import generate_kwargs
    model = ref.load_float32(args["folder"], attn_implementation="sdpa")
    kwargs = generate_kwargs(max_new_tokens=args["new"], **args["settings"])
    def run():
        torch.manual_seed(0)
        with torch.no_grad():
            return model.generate(torch.as_tensor(ids), **kwargs).sequences.numpy()
out = run()  # warm-up
times = []
for _ in range(args["repeats"]):
    t = time.perf_counter(); out = run(); times.append(time.perf_counter() - t)
print(json.dumps({"seconds": statistics.median(times), "tokens": int(out.shape[1] - ids.shape[1]),
                  "peak_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                  "sequences": np.asarray(out).tolist()}))
"""


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--config", default="medium")
    ap.add_argument("--prompt", type=int, default=128)
    ap.add_argument("--new", type=int, default=128)
    args = ap.parse_args()
    env = dict(os.environ, OMP_NUM_THREADS=str(args.threads), OPENBLAS_NUM_THREADS=str(args.threads),
               MKL_NUM_THREADS=str(args.threads))

    import platform

    import numpy as np
    import torch
    import transformers

    from cpu_forward import CONFIGS
    sys.path.insert(0, ROOT)
    from tinydg.tools import reference as ref

    spec = CONFIGS[args.config]
    config = ref.tiny_config(canvas_length=spec["canvas"], **spec["text"])
    with tempfile.TemporaryDirectory() as folder:
        ref.save(ref.build_model(config, seed=0), folder)
        results = {}
        for side in ("tinydg", "transformers"):
            job = dict(side=side, root=ROOT, folder=folder, vocab=config["text_config"]["vocab_size"],
                       prompt=args.prompt, new=args.new, settings=SETTINGS, threads=args.threads,
                       repeats=args.repeats)
            done = subprocess.run([sys.executable, "-c", WORKER, json.dumps(job)], env=env, capture_output=True,
                                  text=True, check=True)
            results[side] = json.loads(done.stdout.strip().splitlines()[-1])
    same = results["tinydg"]["sequences"] == results["transformers"]["sequences"]
    print(f"# {platform.processor() or platform.machine()}, {os.cpu_count()} cores, threads={args.threads}, "
          f"python {platform.python_version()}, numpy {np.__version__}, torch {torch.__version__}, "
          f"transformers {transformers.__version__}")
    print(f"# config {args.config}, prompt {args.prompt}, max_new_tokens {args.new}, canvas {spec['canvas']}, "
          f"{SETTINGS['max_denoising_steps']} steps per canvas, median of {args.repeats}; same tokens: {same}")
    print("| side | seconds | tok/s | peak RSS MiB |")
    print("|---|---|---|---|")
    for side, r in results.items():
        print(f"| {side} | {r['seconds']:.2f} | {r['tokens'] / r['seconds']:.1f} | {r['peak_mib']:.0f} |")


if __name__ == "__main__":
    main()
