// The sampler's pass over the vocabulary, one block per canvas row. Twin: tinydg.sampler.propose
// (softmax_and_entropy, race, and the argmax draft), given the same exponential draws E.
//
// For a row x [V] (temperature-scaled logits) and draws E [V]:
//     draft    = argmax x                                   (the lowest index among equal maxima)
//     p        = exp(x - max x) / Z,   Z = sum exp(x - max x)
//     entropy  = -sum (x - (max x + log Z)) * p
//     proposal = argmax p / E                               (an exponential race: a sample from p)
// Three reads of x (max, Z, the rest) and one of E, where the readable code makes a dozen passes.

#define SAMPLER_THREADS 1024

// (value, index) with the larger value winning and, on a tie, the lower index, as NumPy's argmax
__device__ __forceinline__ void better(float& v, long long& i, float v2, long long i2) {
    if (v2 > v || (v2 == v && i2 < i)) { v = v2; i = i2; }
}

__device__ void block_argmax(float& v, long long& i, float* sv, long long* si) {
    for (int o = 16; o > 0; o >>= 1) better(v, i, __shfl_xor_sync(FULL_MASK, v, o), __shfl_xor_sync(FULL_MASK, i, o));
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    if (lane == 0) { sv[warp] = v; si[warp] = i; }
    __syncthreads();
    if (warp == 0) {
        v = lane < blockDim.x / 32 ? sv[lane] : -TINYDG_INF;
        i = lane < blockDim.x / 32 ? si[lane] : 0x7fffffffffffffffLL;
        for (int o = 16; o > 0; o >>= 1) better(v, i, __shfl_xor_sync(FULL_MASK, v, o), __shfl_xor_sync(FULL_MASK, i, o));
        if (lane == 0) { sv[0] = v; si[0] = i; }
    }
    __syncthreads();
    v = sv[0];
    i = si[0];
    __syncthreads();
}

__device__ float block_sum(float s, float* sv) {
    s = warp_sum(s);
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    if (lane == 0) sv[warp] = s;
    __syncthreads();
    if (warp == 0) {
        s = lane < blockDim.x / 32 ? sv[lane] : 0.f;
        s = warp_sum(s);
        if (lane == 0) sv[0] = s;
    }
    __syncthreads();
    s = sv[0];
    __syncthreads();
    return s;
}

extern "C" __global__ void propose_rows(const float* __restrict__ x, const float* __restrict__ E,
                                        long long* __restrict__ proposal, long long* __restrict__ draft,
                                        float* __restrict__ entropy, long long V) {
    __shared__ float sv[32];
    __shared__ long long si[32];
    const long long row = blockIdx.x;
    const float* xr = x + row * V;
    const float* er = E + row * V;
    float m = -TINYDG_INF;
    long long at = 0x7fffffffffffffffLL;
    for (long long c = threadIdx.x; c < V; c += blockDim.x) better(m, at, xr[c], c);
    block_argmax(m, at, sv, si);
    float Z = 0.f;
    for (long long c = threadIdx.x; c < V; c += blockDim.x) Z += expf(xr[c] - m);
    Z = block_sum(Z, sv);
    const float log_norm = m + logf(Z);
    float h = 0.f, best = -TINYDG_INF;
    long long pick = 0x7fffffffffffffffLL;
    for (long long c = threadIdx.x; c < V; c += blockDim.x) {
        const float p = expf(xr[c] - m) / Z;
        h += fmaxf(xr[c] - log_norm, -3.4028234663852886e38f) * p;  // log p clamped as the readable sampler does:
                                                                     // a banned (-inf) token adds 0, not NaN
        better(best, pick, p / er[c], c);
    }
    h = block_sum(h, sv);
    block_argmax(best, pick, sv, si);
    if (threadIdx.x == 0) {
        draft[row] = at;
        entropy[row] = -h;
        proposal[row] = pick;
    }
}

// logits <- cap * tanh(logits / cap), in place. Twin: the soft-capping in tinydg.model.lm_head
extern "C" __global__ void softcap(float* __restrict__ x, long long n, float cap) {
    for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (long long)gridDim.x * blockDim.x)
        x[i] = tanhf(x[i] / cap) * cap;
}
