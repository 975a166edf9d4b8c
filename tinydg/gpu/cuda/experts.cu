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
// their expert's group return at once. Weights are float32 or bfloat16 (raw bits): W below. With
// bf16 weights the activations are rounded to bf16 too (x, and the gated hidden before the down
// projection), as a bf16 x bf16 tensor-core product sees them: operand(W, v) below.

#define TM 16
#define TN 32
#define TK 32
#define GEMM_THREADS 256  // (TM rows) x (TN / 2 column pairs)

// an activation as the product sees it: itself beside float32 weights, rounded to bf16 beside bf16
__device__ __forceinline__ float operand(const float*, float v) { return v; }
__device__ __forceinline__ float operand(const bf16_t*, float v) { return to_float(float_to_bf16(v)); }

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
            xs[rr][kk] = (row < hi && k < D) ? operand(gate_up, x[(size_t)(order[row] / A) * D + k]) : 0.f;
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
            hs[rr][kk] = (row < hi && k < I) ? operand(down, hidden[(size_t)row * I + k]) : 0.f;
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

// --- the same two GEMMs on the tensor cores (bf16 or float8 weights; D % 32 == 0 and I % 32 == 0) --
//
// mma.sync m16n8k16: a warp multiplies a 16 x 16 bf16 tile of activations (A, row-major) by a
// 16 x 8 bf16 tile of weights (B, "col": one weight row holds one output column's k values) into a
// 16 x 8 float32 tile. Lane = 4 * group + t holds:
//   A: rows group and group + 8, at k = 2t, 2t+1 and 2t+8, 2t+9     (four 32-bit registers)
//   B: column group, at k = 2t, 2t+1 and 2t+8, 2t+9                   (two 32-bit registers)
//   C: rows group and group + 8, columns 2t, 2t+1                     (four floats)
// A dot product does not care in which order its k come, as long as A and B agree. So each 32
// consecutive k are dealt out so that lane t owns k = 8t .. 8t+7: one 16-byte load of a weight row
// (and one of each activation row) feeds two mma, which take k = 8t+0..3 and 8t+4..7 as their
// "2t, 2t+1, 2t+8, 2t+9". A block of 4 warps takes 16 sorted rows of one expert and 32 output
// columns (8 per warp); the activations are staged in shared memory as bf16, KC of k at a time;
// each warp reads its weights straight from global memory, every weight element once per 16 rows.
// Same grid and early exit as the FMA kernels, same rounding (operands in bf16, sums in float32),
// a different summation order.

#define MMA_KC 256           // k per staged chunk of activations
#define MMA_PAD 32           // bf16 padding per staged row: rows g and g + 1 start 16 banks apart
#define MMA_THREADS 128

__device__ __forceinline__ void mma_bf16(float* c, unsigned a0, unsigned a1, unsigned a2, unsigned a3,
                                         unsigned b0, unsigned b1) {
    asm volatile("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 "
                 "{%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, {%0, %1, %2, %3};\n"
                 : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
                 : "r"(a0), "r"(a1), "r"(a2), "r"(a3), "r"(b0), "r"(b1));
}

// stage rows [lo, lo + 16) of `src` (float32; sorted row r is src row order[r] / A when gathering)
// columns [k0, k0 + KC) as bf16
__device__ __forceinline__ void stage_rows(bf16_t (*xs)[MMA_KC + MMA_PAD], const float* __restrict__ src,
                                           const int* __restrict__ order, int A, int lo, int hi, int k0,
                                           int width, bool gather) {
    for (int e = threadIdx.x; e < 16 * MMA_KC; e += MMA_THREADS) {
        const int rr = e / MMA_KC, kk = e % MMA_KC, row = lo + rr, k = k0 + kk;
        float v = 0.f;
        if (row < hi && k < width) v = src[(size_t)(gather ? order[row] / A : row) * width + k];
        xs[rr][kk] = float_to_bf16(v);
    }
}

// one 32-wide slice of k: c += A[16 rows, k0 .. k0+31] . W[column, k0 .. k0+31] as two mma
__device__ __forceinline__ void mma_k32(float* c, bf16_t (*xs)[MMA_KC + MMA_PAD], int ks, uint4 w, int lane) {
    const int g = lane >> 2, t = lane & 3;
    const uint4 top = *(const uint4*)&xs[g][ks + 8 * t];       // row g,     k = 8t .. 8t+7
    const uint4 bottom = *(const uint4*)&xs[g + 8][ks + 8 * t];  // row g + 8, k = 8t .. 8t+7
    mma_bf16(c, top.x, bottom.x, top.y, bottom.y, w.x, w.y);      // k = 8t .. 8t+3
    mma_bf16(c, top.z, bottom.z, top.w, bottom.w, w.z, w.w);      // k = 8t+4 .. 8t+7
}

// Weights as the tensor-core GEMMs read them: 8 consecutive k of one weight row, as 8 bf16 in a uint4.
// bf16 weights: one 16-byte load. float8 weights (tinydg.fp8, e4m3 codes): one 8-byte load, each code
// widened to bf16 exactly (every e4m3 value is a bf16 value); the row's scale multiplies the output.
struct Bf16Rows {
    const bf16_t* __restrict__ w;
    __device__ __forceinline__ uint4 load(size_t at, bool inside) const {
        return inside ? __ldg((const uint4*)(w + at)) : make_uint4(0u, 0u, 0u, 0u);
    }
};

struct Fp8Rows {
    const fp8_t* __restrict__ w;
    __device__ __forceinline__ uint4 load(size_t at, bool inside) const {
        if (!inside) return make_uint4(0u, 0u, 0u, 0u);
        const uint2 b = __ldg((const uint2*)(w + at));
        return make_uint4(e4m3x2_to_bf16x2(b.x), e4m3x2_to_bf16x2(b.x >> 16), e4m3x2_to_bf16x2(b.y),
                          e4m3x2_to_bf16x2(b.y >> 16));
    }
};

// the scale of weight row `row` (float8), or 1 (bf16: scales == nullptr)
__device__ __forceinline__ float row_scale(const float* __restrict__ scales, size_t row) {
    return scales ? scales[row] : 1.f;
}

template <typename Rows>
__device__ void gate_up_mma(const float* __restrict__ x, const int* __restrict__ order, const int* __restrict__ offsets,
                            Rows gate_up, const float* __restrict__ scales, float* __restrict__ hidden,
                            int A, int D, int I) {
    __shared__ __align__(16) bf16_t xs[16][MMA_KC + MMA_PAD];
    const int e = blockIdx.z;
    const int lo = offsets[e] + blockIdx.y * 16, hi = offsets[e + 1];
    if (lo >= hi) return;
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, g = lane >> 2, t = lane & 3;
    const int n = blockIdx.x * 32 + warp * 8 + g;  // this lane's weight row (output column) for B
    const bool inside = n < I;
    const size_t gate_at = ((size_t)e * 2 * I + (inside ? n : 0)) * D + 8 * t;  // rows 0..I-1 of gate_up_proj[e]
    const size_t up_at = gate_at + (size_t)I * D;                              // rows I..2I-1
    float cg[4] = {0.f, 0.f, 0.f, 0.f}, cu[4] = {0.f, 0.f, 0.f, 0.f};
    for (int k0 = 0; k0 < D; k0 += MMA_KC) {
        stage_rows(xs, x, order, A, lo, hi, k0, D, true);
        __syncthreads();
        const int kc = min(MMA_KC, D - k0);
#pragma unroll 4
        for (int ks = 0; ks < kc; ks += 32) {
            const uint4 wg = gate_up.load(gate_at + k0 + ks, inside), wu = gate_up.load(up_at + k0 + ks, inside);
            mma_k32(cg, xs, ks, wg, lane);
            mma_k32(cu, xs, ks, wu, lane);
        }
        __syncthreads();
    }
    const int col = blockIdx.x * 32 + warp * 8 + 2 * t;
    for (int half = 0; half < 2; ++half) {  // rows g and g + 8
        const int row = lo + g + 8 * half;
        if (row >= hi) continue;
        for (int j = 0; j < 2; ++j) {
            if (col + j >= I) continue;
            const float gate = cg[2 * half + j] * row_scale(scales, (size_t)e * 2 * I + col + j);
            const float up = cu[2 * half + j] * row_scale(scales, (size_t)e * 2 * I + I + col + j);
            hidden[(size_t)row * I + col + j] = gelu_tanh(gate) * up;
        }
    }
}

template <typename Rows>
__device__ void down_mma(const float* __restrict__ hidden, const int* __restrict__ order, const int* __restrict__ offsets,
                         Rows down, const float* __restrict__ scales, const float* __restrict__ route_w,
                         float* __restrict__ ys, int D, int I) {
    __shared__ __align__(16) bf16_t hs[16][MMA_KC + MMA_PAD];
    const int e = blockIdx.z;
    const int lo = offsets[e] + blockIdx.y * 16, hi = offsets[e + 1];
    if (lo >= hi) return;
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, g = lane >> 2, t = lane & 3;
    const int n = blockIdx.x * 32 + warp * 8 + g;
    const bool inside = n < D;
    const size_t w_at = ((size_t)e * D + (inside ? n : 0)) * I + 8 * t;
    float c[4] = {0.f, 0.f, 0.f, 0.f};
    for (int k0 = 0; k0 < I; k0 += MMA_KC) {
        stage_rows(hs, hidden, order, 1, lo, hi, k0, I, false);
        __syncthreads();
        const int kc = min(MMA_KC, I - k0);
#pragma unroll 4
        for (int ks = 0; ks < kc; ks += 32) mma_k32(c, hs, ks, down.load(w_at + k0 + ks, inside), lane);
        __syncthreads();
    }
    const int col = blockIdx.x * 32 + warp * 8 + 2 * t;
    for (int half = 0; half < 2; ++half) {
        const int row = lo + g + 8 * half;
        if (row >= hi) continue;
        const int p = order[row];
        for (int j = 0; j < 2; ++j)
            if (col + j < D)
                ys[(size_t)p * D + col + j] = c[2 * half + j] * row_scale(scales, (size_t)e * D + col + j) * route_w[p];
    }
}

extern "C" __global__ void expert_gate_up_mma(const float* x, const int* order, const int* offsets,
                                              const bf16_t* gate_up, float* hidden, int A, int D, int I) {
    gate_up_mma(x, order, offsets, Bf16Rows{gate_up}, nullptr, hidden, A, D, I);
}

extern "C" __global__ void expert_down_mma(const float* hidden, const int* order, const int* offsets,
                                           const bf16_t* down, const float* route_w, float* ys, int D, int I) {
    down_mma(hidden, order, offsets, Bf16Rows{down}, nullptr, route_w, ys, D, I);
}

// float8 experts: codes [E, rows, k] (e4m3) and scales [E, rows]
extern "C" __global__ void expert_gate_up_fp8(const float* x, const int* order, const int* offsets,
                                              const fp8_t* gate_up, const float* scales, float* hidden,
                                              int A, int D, int I) {
    gate_up_mma(x, order, offsets, Fp8Rows{gate_up}, scales, hidden, A, D, I);
}

extern "C" __global__ void expert_down_fp8(const float* hidden, const int* order, const int* offsets,
                                           const fp8_t* down, const float* scales, const float* route_w, float* ys,
                                           int D, int I) {
    down_mma(hidden, order, offsets, Fp8Rows{down}, scales, route_w, ys, D, I);
}

extern "C" __global__ void expert_combine(const float* __restrict__ ys, float* __restrict__ out, int N, int A, int D) {
    const long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= (long long)N * D) return;
    const long long t = i / D, c = i % D;
    float s = 0.f;
    for (int a = 0; a < A; ++a) s += ys[(t * A + a) * D + c];
    out[i] = s;
}

// --- helpers of the cuBLAS experts (tinydg.gpu.experts_gemm): every group padded to M rows --------

// pos[order[s]] = s: where each pair landed in the sorted order. Twin: twins.expert_positions
extern "C" __global__ void expert_positions(const int* __restrict__ order, int* __restrict__ pos, int P) {
    const int s = blockIdx.x * blockDim.x + threadIdx.x;
    if (s < P) pos[order[s]] = s;
}

// xs [E, M, D] bf16: row r of expert e is the token of sorted pair offsets[e] + r, rounded to bf16,
// or zeros past the end of the group. Twin: twins.expert_gather_rows
extern "C" __global__ void expert_gather_rows(const float* __restrict__ x, const int* __restrict__ order,
                                              const int* __restrict__ offsets, bf16_t* __restrict__ xs,
                                              int A, int D, int M, long long n) {
    for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (long long)gridDim.x * blockDim.x) {
        const long long row = i / D;
        const int c = (int)(i % D), e = (int)(row / M), r = (int)(row % M);
        const int s = offsets[e] + r;
        xs[i] = s < offsets[e + 1] ? float_to_bf16(x[(long long)(order[s] / A) * D + c]) : (bf16_t)0;
    }
}

// out[t] = sum over slots a (in order) of w[t, a] * y[e, rank], e = idx[t, a], rank = pos[t*A + a] - offsets[e].
// Twin: twins.expert_combine_rows
extern "C" __global__ void expert_combine_rows(const float* __restrict__ y, const int* __restrict__ idx,
                                               const float* __restrict__ w, const int* __restrict__ pos,
                                               const int* __restrict__ offsets, float* __restrict__ out,
                                               int N, int A, int D, int M) {
    const long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= (long long)N * D) return;
    const long long t = i / D, c = i % D;
    float s = 0.f;
    for (int a = 0; a < A; ++a) {
        const long long p = t * A + a;
        const int e = idx[p];
        s += w[p] * y[((long long)e * M + (pos[p] - offsets[e])) * D + c];
    }
    out[i] = s;
}
