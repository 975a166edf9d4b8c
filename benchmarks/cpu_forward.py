"""CPU benchmark: tinydg's encode and denoise against transformers on the same checkpoint.

Both run float32 on the same weights (a random model made and saved by the reference), with the
same thread count, on a prompt of P tokens and a canvas of C tokens. Reported: median wall time
of `encode` (prefill of the prompt) and of one `denoise` step (the decoder forward that
generation repeats every step), and for each the largest logit error against the reference run
in float64 (deep random stacks amplify float32 rounding, so the two float32 results are compared
with the same truth rather than with each other).

    python benchmarks/cpu_forward.py [--threads N] [--repeats R] [--configs tiny medium]

Needs the `reference` extra. Thread counts: torch.set_num_threads(N) and, for NumPy's BLAS,
the OMP/OPENBLAS/MKL thread variables set before NumPy is imported.
"""

import argparse
import os
import sys

CONFIGS = {
    "tiny": dict(text=dict(), prompt=12, canvas=8),
    "medium": dict(text=dict(vocab_size=32_000, hidden_size=1024, intermediate_size=1024, num_hidden_layers=8,
                             num_attention_heads=8, num_key_value_heads=4, head_dim=128, global_head_dim=256,
                             num_global_key_value_heads=2, num_experts=32, top_k_experts=4, moe_intermediate_size=512,
                             sliding_window=256, max_position_embeddings=4096,
                             layer_types=["sliding_attention"] * 3 + ["full_attention"] + ["sliding_attention"] * 3
                             + ["full_attention"]),
                   prompt=512, canvas=64),
}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--repeats", type=int, default=10)
    ap.add_argument("--configs", nargs="+", default=list(CONFIGS))
    args = ap.parse_args()
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[var] = str(args.threads)

    import platform
    import statistics
    import tempfile
    import time

    import numpy as np
    import torch
    import transformers

    sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
    import tinydg
    from tinydg.tools import reference as ref

    torch.set_num_threads(args.threads)

    def median_ms(fn, repeats):
        fn()  # warm-up
        times = []
        for _ in range(repeats):
            t = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t)
        return 1000 * statistics.median(times)

    print(f"# {platform.processor() or platform.machine()}, {os.cpu_count()} cores, threads={args.threads}, "
          f"python {platform.python_version()}, numpy {np.__version__}, torch {torch.__version__}, "
          f"transformers {transformers.__version__}")
    print("| config | P | C | encode tinydg ms | encode transformers ms | denoise tinydg ms | "
          "denoise transformers ms | denoise speed-up | logit error tinydg | logit error transformers | logit error transformers eager |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for name in args.configs:
        spec = CONFIGS[name]
        P, C = spec["prompt"], spec["canvas"]
        config = ref.tiny_config(canvas_length=C, **spec["text"])
        V = config["text_config"]["vocab_size"]
        rng = np.random.default_rng(0)
        ids, canvas = rng.integers(0, V, (1, P)), rng.integers(0, V, (1, C))
        with tempfile.TemporaryDirectory() as folder:
            # The reference's own initialization (std 0.02, unit norms) keeps float32 rounding from growing through
            # the stack, but leaves the router near-uniform, where a rounding-level difference flips a top-k choice:
            # router weights get std 1 so that routing is decisive and the logit difference means something.
            torch.manual_seed(0)
            model = transformers.DiffusionGemmaForBlockDiffusion._from_config(
                transformers.DiffusionGemmaConfig(**config), dtype=torch.float32)
            with torch.no_grad():
                for pname, p in model.named_parameters():
                    if pname.endswith("router.proj.weight"):
                        p.normal_(0.0, 1.0)
            model.save_pretrained(folder)
            theirs = transformers.DiffusionGemmaForBlockDiffusion.from_pretrained(folder, dtype=torch.float32).eval()
            ours = tinydg.load(folder)

            def ours_encode():
                return tinydg.encode(ours, ids)

            _, cache = ours_encode()

            def ours_denoise():
                return tinydg.denoise(ours, canvas, cache)

            tids, tcanvas = torch.from_numpy(ids), torch.from_numpy(canvas)
            tpos = torch.arange(P, P + C)[None]

            def their_encode():
                with torch.no_grad():
                    c = transformers.DynamicCache(config=theirs.config.get_text_config(decoder=True))
                    theirs.model.encoder(input_ids=tids, past_key_values=c)
                    return c

            their_cache = their_encode()

            def their_denoise():
                with torch.no_grad():
                    return theirs(decoder_input_ids=tcanvas, past_key_values=their_cache,
                                  decoder_position_ids=tpos).logits

            # accuracy: both float32 results against the reference run in float64
            truth = reference_logits(folder, tids, tcanvas, tpos, torch.float64)
            err_ours = float(np.abs(ours_denoise() - truth).max())
            err_theirs = float(np.abs(their_denoise().numpy() - truth).max())
            err_eager = float(np.abs(reference_logits(folder, tids, tcanvas, tpos, torch.float32) - truth).max())
            row = [median_ms(f, args.repeats) for f in (ours_encode, their_encode, ours_denoise, their_denoise)]
        print(f"| {name} | {P} | {C} | {row[0]:.1f} | {row[1]:.1f} | {row[2]:.1f} | {row[3]:.1f} | "
              f"{row[3] / row[2]:.2f}x | {err_ours:.1e} | {err_theirs:.1e} | {err_eager:.1e} |", flush=True)


def reference_logits(folder, ids, canvas, positions, dtype):
    """Decoder logits from transformers' eager path (attention and experts) in `dtype`."""
    import torch
    import transformers
    m = transformers.DiffusionGemmaForBlockDiffusion.from_pretrained(
        folder, dtype=dtype, attn_implementation="eager", experts_implementation="eager").eval()
    with torch.no_grad():
        c = transformers.DynamicCache(config=m.config.get_text_config(decoder=True))
        m.model.encoder(input_ids=ids, past_key_values=c)
        return m(decoder_input_ids=canvas, past_key_values=c, decoder_position_ids=positions).logits.double().numpy()

if __name__ == "__main__":
    main()
