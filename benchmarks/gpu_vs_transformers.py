"""tinydg and transformers side by side on the same weights, at the real size, on one GPU.

    python benchmarks/gpu_vs_transformers.py [--prompt 1024] [--repeats 5] [--out FILE]
    python benchmarks/gpu_vs_transformers.py --tiny --device cpu     (a dry run: tiny config, CPU, NumPy)

transformers (`DiffusionGemmaForBlockDiffusion`, 5.23) builds the real configuration
(weights/real/config.json) in bf16 with its own random initialization, directly on the device.
tinydg then runs on the very same tensors: each matrix is shared zero-copy through DLPack as bf16
bits (a bf16 torch tensor viewed as int16 becomes a CuPy uint16 array), so both fit on one card;
only the 1-D norm weights and scales are copied to float32. Both sides get the same prompt and
canvas. Timed with the wall clock around synchronized calls, after a warm-up (medians): prefill (encoder over the prompt plus
the first decoder pass for transformers; `encode` for tinydg), and one decoder forward over the
256-token canvas with self-conditioning. transformers runs in its default settings, then the same
model is switched (`set_attn_implementation`, `set_experts_implementation`) to every other pair
in SETTINGS that this install supports, so there is one copy of the weights throughout. Both sides' logits are compared too.

On the CPU (`--device cpu`, with `--tiny`) tinydg runs its NumPy path on float32 copies of the
same weights: that checks the weight sharing and the comparison without a GPU (a test does this).
The GPU image may carry an older transformers; bring 5.23 as a wheel (see the device notes).
"""

import argparse
import json
import os
import sys
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

SETTINGS = (("default", None, None), ("sdpa + grouped_mm", "sdpa", "grouped_mm"), ("eager + eager", "eager", "eager"))


def transformers_model(folder, device, tiny):
    import torch
    from transformers import DiffusionGemmaConfig, DiffusionGemmaForBlockDiffusion
    if tiny:
        from tinydg.tools import reference
        config = DiffusionGemmaConfig(**reference.tiny_config(canvas_length=8))
    else:
        config = DiffusionGemmaConfig.from_pretrained(folder)
    torch.manual_seed(0)
    dtype = torch.float32 if device == "cpu" else torch.bfloat16
    with torch.device(device):
        model = DiffusionGemmaForBlockDiffusion._from_config(config, dtype=dtype)
    return model.eval()


def shared_tinydg(model, device):
    """A tinydg Model on the same tensors: zero-copy bf16 bits on the GPU, float32 copies on the CPU."""
    import tinydg
    from tinydg.config import parse_config, parse_generation_config
    from tinydg.gpu.ops import gpu_ops
    from tinydg.weights import Weights, resolve
    config = parse_config(model.config.to_dict())
    generation_config = parse_generation_config({})
    stored = dict(model.state_dict())
    canonical = resolve(stored, config.text_config)
    weights = Weights(canonical)
    if device == "cpu":
        for name, t in canonical.items():
            weights._arrays[name] = t.detach().float().numpy()
        return tinydg.Model(config, generation_config, weights, None)
    import cupy
    import torch
    for name, t in canonical.items():
        t = t.detach()
        if t.ndim >= 2 and t.dtype == torch.bfloat16:
            weights._arrays[name] = cupy.from_dlpack(t.contiguous().view(torch.int16)).view(cupy.uint16)
        else:
            weights._arrays[name] = cupy.from_dlpack(t.float().contiguous())
    return tinydg.Model(config, generation_config, weights, None, gpu_ops("bfloat16", text=config.text_config))


class Timer:
    """Median milliseconds of fn(), the device synchronized around each call."""

    def __init__(self, device):
        self.device = device

    def __call__(self, fn, repeats):
        import torch
        for _ in range(2):
            fn()
        times = []
        for _ in range(repeats):
            if self.device == "cpu":
                start = time.perf_counter()
                fn()
                times.append((time.perf_counter() - start) * 1e3)
            else:
                torch.cuda.synchronize()
                import cupy
                cupy.cuda.Device().synchronize()
                start = time.perf_counter()
                fn()
                torch.cuda.synchronize()
                cupy.cuda.Device().synchronize()
                times.append((time.perf_counter() - start) * 1e3)
        return float(np.median(times))


def run(prompt=1024, repeats=5, device="cuda", tiny=False, folder=os.path.join(ROOT, "weights", "real")):
    import torch

    import tinydg
    timer = Timer(device)
    results = {"device": device, "prompt": prompt, "transformers": {}}
    base = transformers_model(folder, device, tiny)
    V = base.config.text_config.vocab_size
    C = base.config.canvas_length
    rng = np.random.default_rng(0)
    ids = rng.integers(0, V, size=(1, prompt))
    canvas = rng.integers(0, V, size=(1, C))
    t_ids, t_canvas = (torch.as_tensor(a, device=device) for a in (ids, canvas))

    ours = shared_tinydg(base, device)
    _, cache = tinydg.encode(ours, ids)
    sc = tinydg.denoise(ours, canvas, cache)
    logits = tinydg.denoise(ours, canvas, cache, sc)
    results["tinydg"] = {
        "prefill_ms": timer(lambda: tinydg.encode(ours, ids), max(2, repeats // 2)),
        "decoder_forward_ms": timer(lambda: tinydg.denoise(ours, canvas, cache, sc), repeats),
    }
    ours_logits = logits.get() if hasattr(logits, "get") else logits

    for label, attn, experts in SETTINGS:  # one model, one copy of the weights: switch implementations in place
        try:
            if attn:
                base.set_attn_implementation(attn)
            if experts:
                base.set_experts_implementation(experts)
            with torch.no_grad():
                first = base(input_ids=t_ids, decoder_input_ids=t_canvas)
                their_cache, their_sc = first.past_key_values, first.logits
                theirs = base(decoder_input_ids=t_canvas, past_key_values=their_cache,
                              self_conditioning_logits=their_sc).logits
                results["transformers"][label] = {
                    "prefill_ms": timer(lambda: base(input_ids=t_ids, decoder_input_ids=t_canvas), max(2, repeats // 2)),
                    "decoder_forward_ms": timer(lambda: base(decoder_input_ids=t_canvas, past_key_values=their_cache,
                                                             self_conditioning_logits=their_sc), repeats),
                    "max_abs_logit_diff_vs_tinydg": float(np.abs(theirs.float().cpu().numpy() - ours_logits).max()),
                }
        except Exception as e:  # an implementation this install lacks
            results["transformers"][label] = {"error": f"{type(e).__name__}: {e}"[:300]}
    if device != "cpu":
        results["peak_torch_GB"] = round(torch.cuda.max_memory_allocated() / 1e9, 1)
    return results


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--prompt", type=int, default=1024)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--device", default="cuda")
    p.add_argument("--tiny", action="store_true", help="the tiny reference config instead of the real one")
    p.add_argument("--out")
    args = p.parse_args()
    results = run(args.prompt, args.repeats, args.device, args.tiny)
    text = json.dumps(results, indent=1)
    print(text)
    if args.out:
        with open(args.out, "w") as f:
            f.write(text + "\n")


if __name__ == "__main__":
    main()
