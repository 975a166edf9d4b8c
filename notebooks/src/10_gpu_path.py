# %% [markdown]
# # 10. The GPU path: the same functions on CuPy
#
# The model is put together once, in `tinydg/layer.py` and `tinydg/model.py`, and every array
# operation it needs comes from `model.ops`: one immutable table of functions (`tinydg/ops.py`).
# On NumPy they are the readable functions of this course. `tinydg.load(path, backend="cupy")` puts
# the weights on a GPU and fills the same table with GPU ones (`tinydg/gpu/ops.py`): cuBLAS for the
# projections, CUDA kernels (`tinydg/gpu/cuda/*.cu`) for the router, the sort of tokens by expert,
# the grouped expert products and attention. Every kernel has a NumPy twin (`tinydg/gpu/twins.py`)
# that it must equal. Without a GPU this notebook builds the GPU ops from the twins instead
# (`emulate=True`), which is also how the tests check the GPU path on a CPU.

# %%
import inspect

import numpy as np
import matplotlib.pyplot as plt

import tinydg
from tinydg import gpu
from tinydg.chat_format import encode_prompt, parse_response
from tinydg.gpu import kernels, twins
from tinydg.gpu.ops import Kernels, gpu_ops
from tinydg.tokenizer import load_tokenizer

print("GPU available:", gpu.available())
print("kernels:", {f: list(k) for f, k in kernels.KERNELS.items()})

# %% [markdown]
# ## The NumPy ops and the GPU ops, side by side
# The same fields, different functions. `Kernels` chooses among the GPU implementations; the
# defaults are the ones that have run on a GPU, the others live in `tinydg/gpu/experimental/`.

# %%
model = tinydg.load()
numpy_ops = model.ops
gpu_side = gpu_ops("bfloat16", Kernels(), emulate=not gpu.available())
print(numpy_ops, "|", gpu_side)
for field in ("linear", "rms_norm", "attend", "route", "experts", "softcap", "propose"):
    a, b = getattr(numpy_ops, field), getattr(gpu_side, field)
    print(f"{field:9s} {a.__module__ + '.' + a.__qualname__:30s} {b.__module__}.{b.__qualname__}")

# %% [markdown]
# ## A kernel and its twin
# The launcher's docstring names the NumPy function it must equal.

# %%
print(kernels.router_topk.__doc__)
print(inspect.getsource(twins.router_topk))

# %% [markdown]
# ## Running the model
# On a GPU: `backend="cupy"`. Without one: the GPU ops with the twins in place of the kernels.

# %%
tokenizer = load_tokenizer(model.path)
ids = np.array([encode_prompt(tokenizer, [{"role": "user", "content": "sort 6 1 4 1 5 9 2"}])])
if gpu.available():
    on_gpu = tinydg.move(model, "cupy", "bfloat16")
else:
    on_gpu = tinydg.move(model, ops=gpu_side)
print(on_gpu)
out = tinydg.generate(on_gpu, ids, seed=0)
print(parse_response(tokenizer.decode(out.sequences[0, ids.shape[1]:].tolist())).answer)

# %% [markdown]
# ## Fewer bytes: float8 experts
# A decoder forward is bound by reading weights, and the experts are 90 % of them.
# `dtype="float8"` keeps each expert matrix as one byte per weight, float8 e4m3 (4 exponent bits,
# 3 mantissa bits, largest value 448), with a float32 scale per output row (`tinydg/fp8.py`).
# Each weight moves by at most 2^-4 of itself. On the GPU the kernels widen the codes to bf16
# and scale each output; on NumPy the same quantized weights run in float32.

# %%
from tinydg import fp8

w = model.weights["model.decoder.layers.0.experts.down_proj"]  # [experts, hidden, expert width]
q = fp8.quantize_rows(w)
back = fp8.dequantize(q)
print("codes", q.codes.shape, q.codes.dtype, "scales", q.scales.shape, f"bytes {w.nbytes // 2} (bf16) -> {q.nbytes}")
relative = np.abs(back - w)[np.abs(w) > 1e-3] / np.abs(w)[np.abs(w) > 1e-3]
plt.figure(figsize=(6, 2.2))
plt.hist(relative, bins=50)
plt.axvline(2 ** -4, color="k", ls="--")
plt.xlabel("|float8 - float32| / |weight|  (dashed: 2^-4)")
plt.tight_layout()
plt.show()

quantized = tinydg.load(dtype="float8")
canvas = np.random.default_rng(0).integers(0, model.text.vocab_size, (1, model.config.canvas_length))
full = tinydg.denoise(model, canvas, tinydg.encode(model, ids)[1])
small = tinydg.denoise(quantized, canvas, tinydg.encode(quantized, ids)[1])
print(f"logits: relative RMS change {np.sqrt(np.mean((small - full) ** 2) / np.mean(full ** 2)):.4f}, "
      f"argmax kept on {np.mean(small.argmax(-1) == full.argmax(-1)):.0%} of positions")

# %% [markdown]
# ## A roofline picture
# One decoder forward of the real model must read its ~50 GB of bf16 weights. Measured on an
# H200 (benchmarks/GPU.md): copy bandwidth 4.16 TB/s, so the floor is 12.1 ms; tinydg took
# 132.2 ms. The bars are those measurements.

# %%
measured = {"memory floor (50.5 GB at 4.16 TB/s)": 12.1, "tinydg decoder forward (run 7)": 132.2,
            "of which experts (30 x 1.39 ms)": 30 * 1.39}
plt.figure(figsize=(7, 2.2))
plt.barh(list(measured), list(measured.values()), color=["gray", "tab:blue", "tab:orange"])
plt.xlabel("ms per decoder forward (H200)")
plt.tight_layout()
plt.show()

# %% [markdown]
# ## Exercises
# 1. Read `tinydg/gpu/cuda/permute.cu` next to `tinydg.moe.expert_groups`. How does the kernel
#    keep the order stable without sorting?
# 2. On a GPU, time `tinydg.denoise` with `backend="cupy"` in float32 and in bfloat16
#    (`tinydg.load(path, backend="cupy", dtype="bfloat16")`). Which is faster on this tiny model, and why?
# 3. `tinydg/gpu/experimental/attention_gemm.py` computes attention as two GEMMs with a masked
#    softmax between them. Build `gpu_ops("bfloat16", Kernels(attention="gemm"), emulate=True)`,
#    run the model with it and with the default kernels: how large is the difference in the logits?
#    Which inputs does the GEMM attention round to bf16?
# 4. Quantize a weight with one scale for the whole matrix instead of one per row. How much larger
#    does the error of the smallest rows get?
