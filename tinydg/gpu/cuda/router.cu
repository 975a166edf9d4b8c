// The MoE router after its projection. Twin: the end of tinydg.moe.router.
//
//   p = softmax(logits)                      per token, over the E experts
//   top-k of p, highest first; on exact ties the lower expert id first (NumPy's stable argsort)
//   w = p_topk / sum(p_topk) * per_expert_scale[idx]
//
// One warp per token. Lane l owns experts l, l + 32, ... (so E <= 1024); the top-k is k rounds of a
// warp-wide argmax over the experts not yet taken.

#define ROUTER_MAX_TOP_K 32

extern "C" __global__ void router_topk(const float* __restrict__ logits,          // [N, E]
                                       const float* __restrict__ per_expert_scale,  // [E]
                                       float* __restrict__ weights,                 // [N, top_k]
                                       int* __restrict__ index,                     // [N, top_k]
                                       int N, int E, int top_k) {
    const int lane = threadIdx.x & 31;
    const long long row = ((long long)blockIdx.x * blockDim.x + threadIdx.x) >> 5;
    if (row >= N) return;  // the whole warp leaves together
    const float* x = logits + row * E;

    float peak = -TINYDG_INF;
    for (int e = lane; e < E; e += 32) peak = fmaxf(peak, x[e]);
    peak = warp_max(peak);
    float total = 0.0f;
    for (int e = lane; e < E; e += 32) total += expf(x[e] - peak);
    total = warp_sum(total);

    unsigned int taken = 0u;  // bit j: this lane's expert lane + 32 j is already chosen
    float chosen_p[ROUTER_MAX_TOP_K];
    int chosen_e[ROUTER_MAX_TOP_K];
    float chosen_sum = 0.0f;
    for (int k = 0; k < top_k; ++k) {
        float best = -1.0f;
        int best_e = 0x7fffffff;
        for (int j = 0, e = lane; e < E; ++j, e += 32) {
            if (taken & (1u << j)) continue;
            const float p = expf(x[e] - peak) / total;
            if (p > best) { best = p; best_e = e; }  // e grows within a lane: ties keep the lower id
        }
        for (int o = 16; o > 0; o >>= 1) {
            const float other = __shfl_xor_sync(FULL_MASK, best, o);
            const int other_e = __shfl_xor_sync(FULL_MASK, best_e, o);
            if (other > best || (other == best && other_e < best_e)) { best = other; best_e = other_e; }
        }
        if ((best_e & 31) == lane) taken |= 1u << (best_e >> 5);
        chosen_p[k] = best;
        chosen_e[k] = best_e;
        chosen_sum += best;
    }
    if (lane == 0) {
        for (int k = 0; k < top_k; ++k) {
            weights[row * top_k + k] = chosen_p[k] / chosen_sum * per_expert_scale[chosen_e[k]];
            index[row * top_k + k] = chosen_e[k];
        }
    }
}
