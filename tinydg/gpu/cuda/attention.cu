// Attention over two key segments, flash style. Twin: tinydg.attention.attention with the masks of
// tinydg.model (encoder_masks: causal, sliding window, padding; decoder_masks: padding only).
//
// Queries q [B, H, Tq, d] at positions q_pos0 + i. Keys and values come as two segments that are
// never concatenated: the cache (k1, v1 [B, K, S1, d], positions pos1 + j) and this call's tokens
// (k2, v2 [B, K, S2, d], positions pos2 + j). Query head h reads KV head h / (H / K). A key at
// position kp is visible to a query at qp when
//     (!causal || kp <= qp) && (window <= 0 || kp > qp - window) && (valid == 0 || valid[b, kp]).
// One warp per query row; each lane holds d / 32 of the row (d <= 512). Keys stream one at a time
// with a float32 online softmax (running max m, running sum l, accumulator acc). The keys are split
// into `chunk`-sized ranges over blockIdx.y (for long prompts); attention_combine merges the
// per-range (m, l, acc) and maps a row that saw no key to zeros, as the NumPy softmax does.

#define ATT_MAX_PER_LANE 16  // head_dim <= 512

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
    const int i = (int)(row % Tq);
    const int h = (int)((row / Tq) % H);
    const long long b = row / ((long long)Tq * H);
    const int kh = h / (H / K);
    const long long qp = q_pos0 + i;

    float qv[ATT_MAX_PER_LANE], acc[ATT_MAX_PER_LANE];
#pragma unroll
    for (int t = 0; t < ATT_MAX_PER_LANE; ++t) {
        const int c = lane + 32 * t;
        qv[t] = c < d ? q[row * d + c] : 0.f;
        acc[t] = 0.f;
    }
    float m = -TINYDG_INF, l = 0.f;
    const int split = blockIdx.y;
    const int j_lo = split * chunk, j_hi = min(S1 + S2, j_lo + chunk);
    for (int j = j_lo; j < j_hi; ++j) {
        const bool cached = j < S1;
        const int jj = cached ? j : j - S1;
        const long long kp = (cached ? pos1 : pos2) + jj;
        const bool visible = (!causal || kp <= qp) && (window <= 0 || kp > qp - window) &&
                             (valid == 0 || valid[b * valid_len + kp]);
        if (!visible) continue;  // uniform across the warp
        const long long at = cached ? ((b * K + kh) * S1 + jj) * d : ((b * K + kh) * S2 + jj) * d;
        const KV* kr = (cached ? k1 : k2) + at;
        const KV* vr = (cached ? v1 : v2) + at;
        float s = 0.f;
#pragma unroll
        for (int t = 0; t < ATT_MAX_PER_LANE; ++t) {
            const int c = lane + 32 * t;
            if (c < d) s += qv[t] * to_float(kr[c]);
        }
        s = warp_sum(s) * scale;
        const float m_new = fmaxf(m, s);
        const float correction = expf(m - m_new);  // 0 for the first visible key (m = -inf)
        const float p = expf(s - m_new);
        l = l * correction + p;
#pragma unroll
        for (int t = 0; t < ATT_MAX_PER_LANE; ++t) {
            const int c = lane + 32 * t;
            if (c < d) acc[t] = acc[t] * correction + p * to_float(vr[c]);
        }
        m = m_new;
    }
    const long long out_row = split * rows + row;
#pragma unroll
    for (int t = 0; t < ATT_MAX_PER_LANE; ++t) {
        const int c = lane + 32 * t;
        if (c < d) part_acc[out_row * d + c] = acc[t];
    }
    if (lane == 0) {
        part_ml[out_row * 2] = m;
        part_ml[out_row * 2 + 1] = l;
    }
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

// The same attention with the keys staged in shared memory: the fast path beside attention_rows.
// A block takes 16 query rows that share one KV head (the G query heads of KV head kh times the
// queries, flattened g-major) and streams the keys through shared memory in tiles of KT, converted
// to float32 once per block instead of once per query row. Each of the 8 warps owns 2 of the rows
// and works exactly like attention_rows on them, so both kernels compute the same sums in the same
// order. Dynamic shared memory: 2 * KT * d floats (K and V tiles).

#define ATT_WARPS 8
#define ATT_ROWS_PER_WARP 2
#define ATT_ROWS (ATT_WARPS * ATT_ROWS_PER_WARP)

template <typename KV>
__device__ void attention_tiles(const float* __restrict__ q,
                                const KV* __restrict__ k1, const KV* __restrict__ v1, int S1, long long pos1,
                                const KV* __restrict__ k2, const KV* __restrict__ v2, int S2, long long pos2,
                                const unsigned char* __restrict__ valid, long long valid_len,
                                long long q_pos0, int causal, int window,
                                int B, int H, int K, int Tq, int d, float scale, int chunk, int KT,
                                float* __restrict__ part_acc, float* __restrict__ part_ml) {
    extern __shared__ float tile[];
    float* ks = tile;           // [KT, d]
    float* vs = tile + KT * d;  // [KT, d]
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    const int G = H / K;
    const long long per_head_group = (long long)G * Tq;  // rows that read KV head kh
    const long long tiles = (per_head_group + ATT_ROWS - 1) / ATT_ROWS;
    const long long t = blockIdx.x % tiles;
    const int kh = (int)((blockIdx.x / tiles) % K);
    const long long b = blockIdx.x / (tiles * K);
    const long long rows = (long long)B * H * Tq;

    float qv[ATT_ROWS_PER_WARP][ATT_MAX_PER_LANE], acc[ATT_ROWS_PER_WARP][ATT_MAX_PER_LANE];
    float m[ATT_ROWS_PER_WARP], l[ATT_ROWS_PER_WARP];
    long long row_of[ATT_ROWS_PER_WARP], qp[ATT_ROWS_PER_WARP];
    bool live[ATT_ROWS_PER_WARP];
#pragma unroll
    for (int r = 0; r < ATT_ROWS_PER_WARP; ++r) {
        const long long local = t * ATT_ROWS + warp * ATT_ROWS_PER_WARP + r;
        live[r] = local < per_head_group;
        const int g = live[r] ? (int)(local / Tq) : 0, i = live[r] ? (int)(local % Tq) : 0;
        row_of[r] = (b * H + (long long)kh * G + g) * Tq + i;
        qp[r] = q_pos0 + i;
        m[r] = -TINYDG_INF;
        l[r] = 0.f;
#pragma unroll
        for (int u = 0; u < ATT_MAX_PER_LANE; ++u) {
            const int c = lane + 32 * u;
            qv[r][u] = (live[r] && c < d) ? q[row_of[r] * d + c] : 0.f;
            acc[r][u] = 0.f;
        }
    }
    const int split = blockIdx.y;
    const int j_lo = split * chunk, j_hi = min(S1 + S2, j_lo + chunk);
    for (int base = j_lo; base < j_hi; base += KT) {
        const int n = min(KT, j_hi - base);
        for (int e = threadIdx.x; e < n * d; e += blockDim.x) {  // stage KT keys and values as float32
            const int jj = e / d, c = e % d, j = base + jj;
            const bool cached = j < S1;
            const long long at = cached ? ((b * K + kh) * S1 + j) * d + c : ((b * K + kh) * S2 + (j - S1)) * d + c;
            ks[jj * d + c] = to_float((cached ? k1 : k2)[at]);
            vs[jj * d + c] = to_float((cached ? v1 : v2)[at]);
        }
        __syncthreads();
        for (int jj = 0; jj < n; ++jj) {
            const int j = base + jj;
            const long long kp = j < S1 ? pos1 + j : pos2 + (j - S1);
            const bool key_valid = valid == 0 || valid[b * valid_len + kp];
#pragma unroll
            for (int r = 0; r < ATT_ROWS_PER_WARP; ++r) {
                const bool visible = live[r] && key_valid && (!causal || kp <= qp[r]) &&
                                     (window <= 0 || kp > qp[r] - window);
                if (!visible) continue;  // uniform across the warp: one row per warp at a time
                float s = 0.f;
#pragma unroll
                for (int u = 0; u < ATT_MAX_PER_LANE; ++u) {
                    const int c = lane + 32 * u;
                    if (c < d) s += qv[r][u] * ks[jj * d + c];
                }
                s = warp_sum(s) * scale;
                const float m_new = fmaxf(m[r], s);
                const float correction = expf(m[r] - m_new);
                const float p = expf(s - m_new);
                l[r] = l[r] * correction + p;
#pragma unroll
                for (int u = 0; u < ATT_MAX_PER_LANE; ++u) {
                    const int c = lane + 32 * u;
                    if (c < d) acc[r][u] = acc[r][u] * correction + p * vs[jj * d + c];
                }
                m[r] = m_new;
            }
        }
        __syncthreads();  // the tile is rewritten next
    }
#pragma unroll
    for (int r = 0; r < ATT_ROWS_PER_WARP; ++r) {
        if (!live[r]) continue;
        const long long out_row = split * rows + row_of[r];
#pragma unroll
        for (int u = 0; u < ATT_MAX_PER_LANE; ++u) {
            const int c = lane + 32 * u;
            if (c < d) part_acc[out_row * d + c] = acc[r][u];
        }
        if (lane == 0) {
            part_ml[out_row * 2] = m[r];
            part_ml[out_row * 2 + 1] = l[r];
        }
    }
}

#define ATTENTION_TILED(NAME, KV)                                                                             \
    extern "C" __global__ void NAME(const float* q, const KV* k1, const KV* v1, int S1, long long pos1,        \
                                    const KV* k2, const KV* v2, int S2, long long pos2,                        \
                                    const unsigned char* valid, long long valid_len, long long q_pos0,        \
                                    int causal, int window, int B, int H, int K, int Tq, int d, float scale,  \
                                    int chunk, int KT, float* part_acc, float* part_ml) {                     \
        attention_tiles<KV>(q, k1, v1, S1, pos1, k2, v2, S2, pos2, valid, valid_len, q_pos0, causal, window,  \
                            B, H, K, Tq, d, scale, chunk, KT, part_acc, part_ml);                             \
    }
ATTENTION_TILED(attention_tiled_f32, float)
ATTENTION_TILED(attention_tiled_bf16, bf16_t)

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
