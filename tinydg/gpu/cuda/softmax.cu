// The masked softmax between the two GEMMs of tinydg.gpu.experimental.attention_gemm.
// Twin: tinydg.gpu.twins.masked_softmax.
//
// scores [BK, G, r, Lc] float32 (already scaled): row (bk, g, i) is query i of a chunk, at position
// qpos0 + i, for query head g of KV head bk % K of batch row bk / K. Its columns are keys laid out as
//     [0, n1)         the cache segment, key position kpos1 + c
//     [c2, c2 + n2)   this call's segment, key position kpos2 + (c - c2)
//     anything else   padding that aligns the second segment for the tensor cores: never visible.
// A key is visible as in attention.cu: key_visible (common.cuh). probs = softmax over the visible
// columns, 0 elsewhere, rounded to bf16; a row that sees no key is all zeros. One warp per row, three passes over its columns: max, sum, write.

__device__ __forceinline__ bool softmax_key_position(int c, int n1, long long kpos1, int c2, int n2, long long kpos2,
                                                     long long* kp) {
    if (c < n1) { *kp = kpos1 + c; return true; }
    if (c >= c2 && c < c2 + n2) { *kp = kpos2 + (c - c2); return true; }
    return false;
}

extern "C" __global__ void attention_scores_softmax(const float* __restrict__ scores, bf16_t* __restrict__ probs,
                                                    long long rows, int Lc, int n1, long long kpos1, int c2, int n2,
                                                    long long kpos2, const unsigned char* __restrict__ valid,
                                                    long long valid_len, long long qpos0, int causal, int window,
                                                    int K, int G, int r) {
    const int lane = threadIdx.x & 31;
    const long long row = ((long long)blockIdx.x * blockDim.x + threadIdx.x) >> 5;
    if (row >= rows) return;  // the whole warp leaves together
    const long long i = row % r, b = (row / ((long long)G * r)) / K;
    const long long qp = qpos0 + i;
    const float* s = scores + row * Lc;
    bf16_t* p = probs + row * Lc;
    const unsigned char* valid_row = valid + b * valid_len;
#define VISIBLE(c, kp) \
    (softmax_key_position(c, n1, kpos1, c2, n2, kpos2, &kp) && key_visible(qp, kp, causal, window, valid_row))
    float m = -TINYDG_INF;
    for (int c = lane; c < Lc; c += 32) {
        long long kp;
        if (VISIBLE(c, kp)) m = fmaxf(m, s[c]);
    }
    m = warp_max(m);
    float l = 0.f;
    if (m != -TINYDG_INF)
        for (int c = lane; c < Lc; c += 32) {
            long long kp;
            if (VISIBLE(c, kp)) l += expf(s[c] - m);
        }
    l = warp_sum(l);
    for (int c = lane; c < Lc; c += 32) {
        long long kp;
        p[c] = (m != -TINYDG_INF && VISIBLE(c, kp)) ? float_to_bf16(expf(s[c] - m) / l) : (bf16_t)0;
    }
#undef VISIBLE
}
