// The experts, grouped by expert. Twin: tinydg.moe.experts.
//
// After expert_counts / expert_order, expert e owns the sorted pairs order[offsets[e] : offsets[e+1]];
// pair p belongs to token p / top_k. Three launches, none needing the counts on the host:
//   expert_gate_up  hidden[r] = gelu_tanh(x[token] . gate_e) * (x[token] . up_e)   for each sorted pair r
//   expert_down     ys[p]     = (hidden[r] . down_e) * w[p]                          back in pair order
//   expert_combine  out[t]    = ys[t*A + 0] + ys[t*A + 1] + ... + ys[t*A + A-1]     fixed order
// The grouped GEMMs are tiled: a block computes TM sorted rows x TN output columns of one expert,
// staging TK-wide slices of both operands in shared memory, accumulating in float32. The grid covers
// the largest possible group (every token: a token picks distinct experts); blocks past the end of
// their expert's group return at once. Weights are float32 or bfloat16 (raw bits): W below.

#define TM 16
#define TN 32
#define TK 32
#define GEMM_THREADS 256  // (TM rows) x (TN / 2 column pairs)

template <typename W>
__device__ void gate_up_tile(const float* __restrict__ x, const int* __restrict__ order, const int* __restrict__ offsets,
                             const W* __restrict__ gate_up, float* __restrict__ hidden, int A, int D, int I) {
    __shared__ float xs[TM][TK + 1];
    __shared__ float gs[TN][TK + 1];
    __shared__ float us[TN][TK + 1];
    const int e = blockIdx.z;
    const int lo = offsets[e] + blockIdx.y * TM, hi = offsets[e + 1];
    if (lo >= hi) return;  // uniform across the block
    const int j0 = blockIdx.x * TN;
    const int tid = threadIdx.x, r = tid / (TN / 2), c = (tid % (TN / 2)) * 2;
    const W* gate = gate_up + (size_t)e * 2 * I * D;  // [I, D]: rows 0..I-1 of gate_up_proj[e]
    const W* up = gate + (size_t)I * D;               // [I, D]: rows I..2I-1
    float g0 = 0.f, g1 = 0.f, u0 = 0.f, u1 = 0.f;
    for (int k0 = 0; k0 < D; k0 += TK) {
        for (int t = tid; t < TM * TK; t += GEMM_THREADS) {
            const int rr = t / TK, kk = t % TK, row = lo + rr, k = k0 + kk;
            xs[rr][kk] = (row < hi && k < D) ? x[(size_t)(order[row] / A) * D + k] : 0.f;
        }
        for (int t = tid; t < TN * TK; t += GEMM_THREADS) {
            const int jj = t / TK, kk = t % TK, j = j0 + jj, k = k0 + kk;
            const bool inside = j < I && k < D;
            gs[jj][kk] = inside ? to_float(gate[(size_t)j * D + k]) : 0.f;
            us[jj][kk] = inside ? to_float(up[(size_t)j * D + k]) : 0.f;
        }
        __syncthreads();
        for (int kk = 0; kk < TK; ++kk) {
            const float xv = xs[r][kk];
            g0 += xv * gs[c][kk];
            g1 += xv * gs[c + 1][kk];
            u0 += xv * us[c][kk];
            u1 += xv * us[c + 1][kk];
        }
        __syncthreads();
    }
    const int row = lo + r;
    if (row < hi) {
        if (j0 + c < I) hidden[(size_t)row * I + j0 + c] = gelu_tanh(g0) * u0;
        if (j0 + c + 1 < I) hidden[(size_t)row * I + j0 + c + 1] = gelu_tanh(g1) * u1;
    }
}

template <typename W>
__device__ void down_tile(const float* __restrict__ hidden, const int* __restrict__ order, const int* __restrict__ offsets,
                          const W* __restrict__ down, const float* __restrict__ route_w, float* __restrict__ ys,
                          int D, int I) {
    __shared__ float hs[TM][TK + 1];
    __shared__ float ws[TN][TK + 1];
    const int e = blockIdx.z;
    const int lo = offsets[e] + blockIdx.y * TM, hi = offsets[e + 1];
    if (lo >= hi) return;
    const int j0 = blockIdx.x * TN;
    const int tid = threadIdx.x, r = tid / (TN / 2), c = (tid % (TN / 2)) * 2;
    const W* w = down + (size_t)e * D * I;  // [D, I]
    float a0 = 0.f, a1 = 0.f;
    for (int k0 = 0; k0 < I; k0 += TK) {
        for (int t = tid; t < TM * TK; t += GEMM_THREADS) {
            const int rr = t / TK, kk = t % TK, row = lo + rr, k = k0 + kk;
            hs[rr][kk] = (row < hi && k < I) ? hidden[(size_t)row * I + k] : 0.f;
        }
        for (int t = tid; t < TN * TK; t += GEMM_THREADS) {
            const int jj = t / TK, kk = t % TK, j = j0 + jj, k = k0 + kk;
            ws[jj][kk] = (j < D && k < I) ? to_float(w[(size_t)j * I + k]) : 0.f;
        }
        __syncthreads();
        for (int kk = 0; kk < TK; ++kk) {
            const float hv = hs[r][kk];
            a0 += hv * ws[c][kk];
            a1 += hv * ws[c + 1][kk];
        }
        __syncthreads();
    }
    const int row = lo + r;
    if (row < hi) {
        const int p = order[row];
        const float rw = route_w[p];
        if (j0 + c < D) ys[(size_t)p * D + j0 + c] = a0 * rw;
        if (j0 + c + 1 < D) ys[(size_t)p * D + j0 + c + 1] = a1 * rw;
    }
}

#define GATE_UP(NAME, W)                                                                                     \
    extern "C" __global__ void NAME(const float* x, const int* order, const int* offsets, const W* gate_up,   \
                                    float* hidden, int A, int D, int I) {                                    \
        gate_up_tile<W>(x, order, offsets, gate_up, hidden, A, D, I);                                        \
    }
#define DOWN(NAME, W)                                                                                        \
    extern "C" __global__ void NAME(const float* hidden, const int* order, const int* offsets, const W* down, \
                                    const float* route_w, float* ys, int D, int I) {                         \
        down_tile<W>(hidden, order, offsets, down, route_w, ys, D, I);                                       \
    }
GATE_UP(expert_gate_up_f32, float)
GATE_UP(expert_gate_up_bf16, bf16_t)
DOWN(expert_down_f32, float)
DOWN(expert_down_bf16, bf16_t)

extern "C" __global__ void expert_combine(const float* __restrict__ ys, float* __restrict__ out, int N, int A, int D) {
    const long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= (long long)N * D) return;
    const long long t = i / D, c = i % D;
    float s = 0.f;
    for (int a = 0; a < A; ++a) s += ys[(t * A + a) * D + c];
    out[i] = s;
}
