// Group the (token, slot) pairs by expert: a counting sort that needs no host synchronization.
// Twin: tinydg.moe.expert_groups (a stable argsort of the flat expert ids, and the offsets).
//
// Pair p = token * top_k + slot chose expert idx[p]. expert_counts writes counts[e]; expert_order
// (launched after it) writes offsets[e] = sum of counts before e and order[offsets[e] + r] = the
// r-th pair, in pair order, that chose e. One block of 256 threads per expert; each block walks all
// pairs in chunks and ranks its matches with a warp ballot, so the order is deterministic and stable.

#define PERMUTE_THREADS 256

extern "C" __global__ void expert_counts(const int* __restrict__ idx, int P, int* __restrict__ counts) {
    __shared__ int warp_total[PERMUTE_THREADS / 32];
    const int e = blockIdx.x;
    int mine = 0;
    for (int p = threadIdx.x; p < P; p += blockDim.x) mine += idx[p] == e;
    for (int o = 16; o > 0; o >>= 1) mine += __shfl_xor_sync(FULL_MASK, mine, o);
    if ((threadIdx.x & 31) == 0) warp_total[threadIdx.x >> 5] = mine;
    __syncthreads();
    if (threadIdx.x == 0) {
        int total = 0;
        for (int w = 0; w < (int)(blockDim.x >> 5); ++w) total += warp_total[w];
        counts[e] = total;
    }
}

extern "C" __global__ void expert_order(const int* __restrict__ idx, const int* __restrict__ counts, int P, int E,
                                        int* __restrict__ order, int* __restrict__ offsets) {
    __shared__ int warp_count[PERMUTE_THREADS / 32];
    __shared__ int start;
    const int e = blockIdx.x;
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, warps = blockDim.x >> 5;
    if (threadIdx.x == 0) {
        int s = 0;
        for (int j = 0; j < e; ++j) s += counts[j];
        start = s;
        offsets[e] = s;
        if (e == E - 1) offsets[E] = s + counts[e];
    }
    __syncthreads();
    int written = 0;  // matches placed by earlier chunks
    for (int base = 0; base < P; base += blockDim.x) {  // uniform trip count across the block
        const int p = base + threadIdx.x;
        const bool match = p < P && idx[p] == e;
        const unsigned int ballot = __ballot_sync(FULL_MASK, match);
        if (lane == 0) warp_count[warp] = __popc(ballot);
        __syncthreads();
        int before = 0, chunk = 0;
        for (int w = 0; w < warps; ++w) {
            before += w < warp ? warp_count[w] : 0;
            chunk += warp_count[w];
        }
        if (match) order[start + written + before + __popc(ballot & ((1u << lane) - 1u))] = p;
        written += chunk;
        __syncthreads();  // warp_count is rewritten by the next chunk
    }
}
