"""GPU paths built, compiled for sm_90 and tested on the CPU against their NumPy twins, but not yet run
on a GPU. Nothing here runs unless asked for by name; each has its GPU test waiting in
tests/test_gpu.py, and moves out of this folder once that test has passed on a GPU.

- attention_gemm.py  attention as two cuBLAS GEMMs and a masked softmax   Kernels(attention="gemm")
- experts_gemm.py    the experts as two batched cuBLAS GEMMs               Kernels(experts="cublas")
- kernels.py         fused RMSNorm, RoPE, gelu * up, soft-cap, sampler      Kernels(fused=True)
                     float8 quantization and float8 expert GEMMs            dtype="float8"
- graph.py           each denoising step replayed from a CUDA graph         generate(..., cuda_graph=True)
"""
