"""The experts on cuBLAS: every expert's tokens gathered into M rows, two GEMMs batched over experts.

The same mixture as tinydg.moe.experts (and tinydg.gpu.kernels.experts, whose grouped GEMMs are written out as
RawKernels), built from cuBLAS's strided-batched GEMM on the tensor cores:

    order, offsets = expert_groups(idx)               the (token, slot) pairs sorted by expert
    M  = the largest group, rounded up to 16          one number read back to the host
    xs[e, r]  = bf16(x[token of the r-th pair of e])   zero rows past the end of e's group   [E, M, D]
    h[e]      = xs[e] @ gate_up[e].T                   one GEMM, batched over the E experts    [E, M, 2I]
    hid[e]    = bf16(gelu(h[e, :, :I]) * h[e, :, I:])                                          [E, M, I]
    y[e]      = hid[e] @ down[e].T                     one GEMM, batched                       [E, M, D]
    out[t]    = sum over slots a of w[t, a] * y[idx[t, a], rank of (t, a) in its group]

Each expert's weights are read once, whatever its number of tokens, which is what a decoder step
needs: 256 tokens x top-8 touch every expert. The padding to the largest group costs FLOPs, not
bytes. Reading M back to the host is a synchronization, so this path cannot be captured in a CUDA
graph. Rounding as in kernels.experts: activations and the gated hidden in bf16, sums in float32.
`lib` is the launcher namespace: tinydg.gpu.launchers (cuBLAS and CUDA), or tinydg.gpu.twins, which
runs the same code on NumPy with cuBLAS emulated, which is how it is tested without a GPU.
"""

from ...mlp import gelu_mul

ROW_MULTIPLE = 16


def experts(x, idx, weights, gate_up_proj, down_proj, lib):
    """x [N, D] float32; idx, weights [N, A]; gate_up_proj [E, 2I, D], down_proj [E, D, I] as bf16 bits
    -> [N, D] float32. lib: tinydg.gpu.launchers, or tinydg.gpu.twins to run on NumPy.
    Twin: tinydg.gpu.twins.experts."""
    xp = lib.array_module()
    N, D = x.shape
    A = idx.shape[1]
    E, two_I, _ = gate_up_proj.shape
    I = two_I // 2
    if N == 0:
        return xp.zeros((0, D), dtype=xp.float32)
    order, offsets = lib.expert_groups(idx, E)
    largest = int((offsets[1:] - offsets[:-1]).max())  # the host learns the largest group here
    M = -(-largest // ROW_MULTIPLE) * ROW_MULTIPLE
    xs = lib.expert_gather_rows(x, order, offsets, A, M)  # [E, M, D] bf16
    h = xp.empty((E, M, two_I), dtype=xp.float32)
    # h[e] = xs[e] @ gate_up[e].T: cuBLAS column-major, as blas.linear: m = 2I outputs, n = M rows, k = D
    lib.gemm_strided(True, False, two_I, M, D, 1.0, gate_up_proj, 0, D, two_I * D, xs, 0, D, M * D,
                     0.0, h, 0, two_I, M * two_I, E)
    hidden = lib.to_bf16(gelu_mul(h[..., :I], h[..., I:]))  # [E, M, I] bf16
    y = xp.empty((E, M, D), dtype=xp.float32)
    lib.gemm_strided(True, False, D, M, I, 1.0, down_proj, 0, I, D * I, hidden, 0, I, M * I,
                     0.0, y, 0, D, M * D, E)
    return lib.expert_combine_rows(y, order, offsets, idx, weights)
