// Attention over two key segments, flash style. Twin: tinydg.gpu.twins.attention (tinydg.attention.attention
// masked by tinydg.attention.visible); the launch arguments come from a tinydg.attention.Visibility.
//
// Queries q [B, H, Tq, d] at positions q_pos0 + i. Keys and values come as two segments that are
// never concatenated: the cache (k1, v1 [B, K, S1, d], positions pos1 + j) and this call's tokens
// (k2, v2 [B, K, S2, d], positions pos2 + j). Query head h reads KV head h / (H / K). A key at
// position kp is visible to a query at qp when key_visible (common.cuh) says so:
//     (!causal || kp <= qp) && (window <= 0 || kp > qp - window) && valid[b, kp].
// One warp per query row; each lane holds d / 32 of the row (d <= 512). Keys stream one at a time
// with a float32 online softmax (running max m, running sum l, accumulator acc). The keys are split
// into `chunk`-sized ranges over blockIdx.y (for long prompts); attention_combine merges the
// per-range (m, l, acc) and maps a row that saw no key to zeros, as the NumPy softmax does.

#define ATT_MAX_PER_LANE 16  // head_dim <= 512

// The query row a warp owns, row = (b, h, i): its KV head's batch row bk = b * K + h / (H / K), its
// position, and its batch row of the validity mask (null: every key valid).
struct QueryRow {
    long long bk, qp;
    const unsigned char* valid_row;
};

__device__ __forceinline__ QueryRow query_row(long long row, int H, int K, int Tq, long long q_pos0,
                                              const unsigned char* valid, long long valid_len) {
    const int i = (int)(row % Tq);
    const int h = (int)((row / Tq) % H);
    const long long b = row / ((long long)Tq * H);
    return {b * K + h / (H / K), q_pos0 + i, valid == 0 ? 0 : valid + b * valid_len};
}

// Key j of the two segments (the S1 cached keys, then the S2 new ones), if the query may see it:
// points kr, vr at its rows of the [B, K, S, d] keys and values of its segment. A split, blockIdx.y,
// owns the keys j in [split * chunk, min(S1 + S2, (split + 1) * chunk)).
template <typename KV>
__device__ __forceinline__ bool visible_key(int j, const QueryRow& r, int causal, int window, int d,
                                            const KV* k1, const KV* v1, int S1, long long pos1,
                                            const KV* k2, const KV* v2, int S2, long long pos2,
                                            const KV** kr, const KV** vr) {
    const bool cached = j < S1;
    const int jj = cached ? j : j - S1;
    if (!key_visible(r.qp, (cached ? pos1 : pos2) + jj, causal, window, r.valid_row)) return false;
    const long long at = (r.bk * (cached ? S1 : S2) + jj) * (long long)d;
    *kr = (cached ? k1 : k2) + at;
    *vr = (cached ? v1 : v2) + at;
    return true;
}

// The running max m and sum l of a float32 online softmax over one row's visible keys.
struct OnlineSoftmax {
    float m = -TINYDG_INF, l = 0.f;

    // Fold in score s: the accumulator is to be rescaled by `correction` and gets the new value with weight p.
    __device__ __forceinline__ void add(float s, float* correction, float* p) {
        const float m_new = fmaxf(m, s);
        *correction = expf(m - m_new);  // 0 for the first visible key (m = -inf)
        *p = expf(s - m_new);
        l = l * *correction + *p;
        m = m_new;
    }

    // (m, l) of this row and split, for attention_combine.
    __device__ __forceinline__ void store(float* __restrict__ part_ml, long long out_row, int lane) const {
        if (lane == 0) {
            part_ml[out_row * 2] = m;
            part_ml[out_row * 2 + 1] = l;
        }
    }
};

template <typename KV>
__device__ void attention_rows(const float* __restrict__ q,
                               const KV* __restrict__ k1, const KV* __restrict__ v1, int S1, long long pos1,
                               const KV* __restrict__ k2, const KV* __restrict__ v2, int S2, long long pos2,
                               const unsigned char* __restrict__ valid, long long valid_len,
                               long long q_pos0, int causal, int window,
                               int B, int H, int K, int Tq, int d, float scale, int chunk,
                               float* __restrict__ part_acc, float* __restrict__ part_ml) {
    const int lane = threadIdx.x & 31;
    const long long rows = (long long)B * H * Tq;
    const long long row = ((long long)blockIdx.x * blockDim.x + threadIdx.x) >> 5;
    if (row >= rows) return;  // the whole warp leaves together
    const QueryRow r = query_row(row, H, K, Tq, q_pos0, valid, valid_len);

    float qv[ATT_MAX_PER_LANE], acc[ATT_MAX_PER_LANE];
#pragma unroll
    for (int t = 0; t < ATT_MAX_PER_LANE; ++t) {
        const int c = lane + 32 * t;
        qv[t] = c < d ? q[row * d + c] : 0.f;
        acc[t] = 0.f;
    }
    OnlineSoftmax softmax;
    const int split = blockIdx.y;
    const int j_lo = split * chunk, j_hi = min(S1 + S2, j_lo + chunk);
    for (int j = j_lo; j < j_hi; ++j) {
        const KV *kr, *vr;
        // a key is visible to the whole warp or to none of it: the warp skips or takes it together
        if (!visible_key(j, r, causal, window, d, k1, v1, S1, pos1, k2, v2, S2, pos2, &kr, &vr)) continue;
        float s = 0.f;
#pragma unroll
        for (int t = 0; t < ATT_MAX_PER_LANE; ++t) {
            const int c = lane + 32 * t;
            if (c < d) s += qv[t] * to_float(kr[c]);
        }
        float correction, p;
        softmax.add(warp_sum(s) * scale, &correction, &p);
#pragma unroll
        for (int t = 0; t < ATT_MAX_PER_LANE; ++t) {
            const int c = lane + 32 * t;
            if (c < d) acc[t] = acc[t] * correction + p * to_float(vr[c]);
        }
    }
    const long long out_row = split * rows + row;
#pragma unroll
    for (int t = 0; t < ATT_MAX_PER_LANE; ++t) {
        const int c = lane + 32 * t;
        if (c < d) part_acc[out_row * d + c] = acc[t];
    }
    softmax.store(part_ml, out_row, lane);
}

#define ATTENTION(NAME, KV)                                                                                   \
    extern "C" __global__ void NAME(const float* q, const KV* k1, const KV* v1, int S1, long long pos1,        \
                                    const KV* k2, const KV* v2, int S2, long long pos2,                        \
                                    const unsigned char* valid, long long valid_len, long long q_pos0,        \
                                    int causal, int window, int B, int H, int K, int Tq, int d, float scale,  \
                                    int chunk, float* part_acc, float* part_ml) {                             \
        attention_rows<KV>(q, k1, v1, S1, pos1, k2, v2, S2, pos2, valid, valid_len, q_pos0, causal, window,   \
                           B, H, K, Tq, d, scale, chunk, part_acc, part_ml);                                  \
    }
ATTENTION(attention_partial_f32, float)
ATTENTION(attention_partial_bf16, bf16_t)

// The bf16 fast path of attention_rows: the same warp per query row, but lane l owns the 8
// consecutive dims 8l .. 8l+7 (and 256 + 8l .. for d = 512), so a key's row arrives in one or two
// 16-byte loads per lane instead of 8 or 16 two-byte ones. Needs d % 8 == 0 (rows 16-byte aligned).

#define ATT_VEC 8                                    // bf16 per 16-byte load
#define ATT_MAX_CHUNKS (ATTENTION_MAX_D / (32 * ATT_VEC))
#define ATTENTION_MAX_D 512

__device__ __forceinline__ void unpack8(uint4 raw, float* out) {
    const unsigned w[4] = {raw.x, raw.y, raw.z, raw.w};
#pragma unroll
    for (int i = 0; i < 4; ++i) {
        out[2 * i] = __uint_as_float(w[i] << 16);           // the lower half holds the lower index
        out[2 * i + 1] = __uint_as_float(w[i] & 0xffff0000u);
    }
}

extern "C" __global__ void attention_partial_bf16x8(const float* __restrict__ q,
        const bf16_t* __restrict__ k1, const bf16_t* __restrict__ v1, int S1, long long pos1,
        const bf16_t* __restrict__ k2, const bf16_t* __restrict__ v2, int S2, long long pos2,
        const unsigned char* __restrict__ valid, long long valid_len, long long q_pos0, int causal, int window,
        int B, int H, int K, int Tq, int d, float scale, int chunk,
        float* __restrict__ part_acc, float* __restrict__ part_ml) {
    const int lane = threadIdx.x & 31;
    const long long rows = (long long)B * H * Tq;
    const long long row = ((long long)blockIdx.x * blockDim.x + threadIdx.x) >> 5;
    if (row >= rows) return;
    const QueryRow r = query_row(row, H, K, Tq, q_pos0, valid, valid_len);

    float qv[ATT_MAX_CHUNKS][ATT_VEC], acc[ATT_MAX_CHUNKS][ATT_VEC];
#pragma unroll
    for (int u = 0; u < ATT_MAX_CHUNKS; ++u) {
        const int base = (u * 32 + lane) * ATT_VEC;
#pragma unroll
        for (int e = 0; e < ATT_VEC; ++e) {
            qv[u][e] = base < d ? q[row * d + base + e] : 0.f;
            acc[u][e] = 0.f;
        }
    }
    OnlineSoftmax softmax;
    const int split = blockIdx.y;
    const int j_lo = split * chunk, j_hi = min(S1 + S2, j_lo + chunk);
    for (int j = j_lo; j < j_hi; ++j) {
        const bf16_t *kr, *vr;
        // a key is visible to the whole warp or to none of it: the warp skips or takes it together
        if (!visible_key(j, r, causal, window, d, k1, v1, S1, pos1, k2, v2, S2, pos2, &kr, &vr)) continue;
        float s = 0.f;
        float kv[ATT_VEC];
#pragma unroll
        for (int u = 0; u < ATT_MAX_CHUNKS; ++u) {
            const int base = (u * 32 + lane) * ATT_VEC;
            if (base < d) {
                unpack8(__ldg((const uint4*)(kr + base)), kv);
#pragma unroll
                for (int e = 0; e < ATT_VEC; ++e) s += qv[u][e] * kv[e];
            }
        }
        float correction, p;
        softmax.add(warp_sum(s) * scale, &correction, &p);
#pragma unroll
        for (int u = 0; u < ATT_MAX_CHUNKS; ++u) {
            const int base = (u * 32 + lane) * ATT_VEC;
            if (base < d) {
                unpack8(__ldg((const uint4*)(vr + base)), kv);
#pragma unroll
                for (int e = 0; e < ATT_VEC; ++e) acc[u][e] = acc[u][e] * correction + p * kv[e];
            }
        }
    }
    const long long out_row = split * rows + row;
#pragma unroll
    for (int u = 0; u < ATT_MAX_CHUNKS; ++u) {
        const int base = (u * 32 + lane) * ATT_VEC;
        if (base < d)
#pragma unroll
            for (int e = 0; e < ATT_VEC; ++e) part_acc[out_row * d + base + e] = acc[u][e];
    }
    softmax.store(part_ml, out_row, lane);
}

// out [rows, d] = sum_s acc_s e^(m_s - M) / sum_s l_s e^(m_s - M), M = max_s m_s; zeros where no key was visible
extern "C" __global__ void attention_combine(const float* __restrict__ part_acc, const float* __restrict__ part_ml,
                                             float* __restrict__ out, long long rows, int d, int splits) {
    const long long idx = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (idx >= rows * d) return;
    const long long row = idx / d, c = idx % d;
    float M = -TINYDG_INF;
    for (int s = 0; s < splits; ++s) M = fmaxf(M, part_ml[(s * rows + row) * 2]);
    if (M == -TINYDG_INF) { out[idx] = 0.f; return; }
    float l = 0.f, a = 0.f;
    for (int s = 0; s < splits; ++s) {
        const float ms = part_ml[(s * rows + row) * 2];
        if (ms == -TINYDG_INF) continue;
        const float f = expf(ms - M);
        l += part_ml[(s * rows + row) * 2 + 1] * f;
        a += part_acc[(s * rows + row) * d + c] * f;
    }
    out[idx] = a / l;
}
