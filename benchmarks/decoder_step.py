"""CPU benchmark: one decoder step (`denoise`), tinydg against transformers, in interleaved pairs.

Both sides run float32 on the same checkpoint (the `medium` configuration of cpu_forward.py, made
and saved by the reference), in one process, with the same thread count for NumPy's BLAS and for
torch. Each repeat times tinydg's step and then transformers' step on the same cache and canvas, so
a busy moment of the machine slows both sides of a pair; the ratio is the median of the per-pair
ratios. Also reported: the share of tinydg's step spent in the experts (`model.ops.experts`).

    python benchmarks/decoder_step.py [--threads N] [--repeats R] [--checkpoint FOLDER]

Needs the `reference` extra. Threads are set before NumPy is imported (OMP/OPENBLAS/MKL variables).
"""

import argparse
import os
import sys


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--repeats", type=int, default=15)
    ap.add_argument("--config", default="medium")
    ap.add_argument("--checkpoint", help="reuse a folder made by an earlier run (made and kept if absent)")
    args = ap.parse_args()
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[var] = str(args.threads)

    import dataclasses
    import platform
    import statistics
    import tempfile
    import time

    import numpy as np
    import torch
    import transformers

    here = os.path.dirname(os.path.abspath(__file__))
    sys.path.insert(0, os.path.join(here, ".."))
    sys.path.insert(0, here)
    import tinydg
    from cpu_forward import CONFIGS
    from tinydg.tools import reference as ref

    torch.set_num_threads(args.threads)
    spec = CONFIGS[args.config]
    P, C = spec["prompt"], spec["canvas"]
    config = ref.tiny_config(canvas_length=C, **spec["text"])
    folder = args.checkpoint or tempfile.mkdtemp()
    if not os.path.exists(os.path.join(folder, "config.json")):
        torch.manual_seed(0)
        made = transformers.DiffusionGemmaForBlockDiffusion._from_config(
            transformers.DiffusionGemmaConfig(**config), dtype=torch.float32)
        with torch.no_grad():  # decisive routing, as in cpu_forward.py
            for name, p in made.named_parameters():
                if name.endswith("router.proj.weight"):
                    p.normal_(0.0, 1.0)
        made.save_pretrained(folder)
        del made

    rng = np.random.default_rng(0)
    V = config["text_config"]["vocab_size"]
    ids, canvas = rng.integers(0, V, (1, P)), rng.integers(0, V, (1, C))

    expert_seconds = []

    def timed_experts(*a):
        t = time.perf_counter()
        out = experts(*a)
        expert_seconds.append(time.perf_counter() - t)
        return out

    ours = tinydg.load(folder)
    experts = ours.ops.experts
    ours = tinydg.move(ours, ops=dataclasses.replace(ours.ops, experts=timed_experts))
    _, cache = tinydg.encode(ours, ids)

    theirs = transformers.DiffusionGemmaForBlockDiffusion.from_pretrained(folder, dtype=torch.float32).eval()
    tids, tcanvas = torch.from_numpy(ids), torch.from_numpy(canvas)
    tpos = torch.arange(P, P + C)[None]
    with torch.no_grad():
        their_cache = transformers.DynamicCache(config=theirs.config.get_text_config(decoder=True))
        theirs.model.encoder(input_ids=tids, past_key_values=their_cache)

    def their_step():
        with torch.no_grad():
            return theirs(decoder_input_ids=tcanvas, past_key_values=their_cache, decoder_position_ids=tpos).logits

    def our_step():
        return tinydg.denoise(ours, canvas, cache)

    diff = float(np.abs(our_step() - their_step().numpy()).max())  # also the warm-up of both
    pairs, shares = [], []
    for _ in range(args.repeats):
        expert_seconds.clear()
        t0 = time.perf_counter()
        our_step()
        t1 = time.perf_counter()
        their_step()
        t2 = time.perf_counter()
        pairs.append((t1 - t0, t2 - t1))
        shares.append(sum(expert_seconds) / (t1 - t0))
    ours_ms = 1000 * statistics.median(p[0] for p in pairs)
    theirs_ms = 1000 * statistics.median(p[1] for p in pairs)
    ratio = statistics.median(p[0] / p[1] for p in pairs)
    print(f"# {platform.processor() or platform.machine()}, {os.cpu_count()} cores, python {platform.python_version()}, "
          f"numpy {np.__version__}, torch {torch.__version__}, transformers {transformers.__version__}")
    print("| config | threads | tinydg ms | transformers ms | tinydg / transformers (median of pairs) | experts share | max logit diff |")
    print("|---|---|---|---|---|---|---|")
    print(f"| {args.config} | {args.threads} | {ours_ms:.1f} | {theirs_ms:.1f} | {ratio:.2f} | "
          f"{100 * statistics.median(shares):.0f} % | {diff:.1e} |")


if __name__ == "__main__":
    main()
