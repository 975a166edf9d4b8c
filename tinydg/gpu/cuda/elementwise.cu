// Fused elementwise kernels: one launch where CuPy's elementwise expressions take several.
// Twins: tinydg.norms.rms_norm, tinydg.rope.apply_rope, tinydg.mlp.gelu_tanh(gate) * up.

// y[r] = x[r] / sqrt(mean(x[r]^2) + eps) * weight, over rows of length D. One warp per row:
// the sum of squares in float32 (lane partials, then a warp sum), then the row scaled in one pass.
extern "C" __global__ void rms_norm_rows(const float* __restrict__ x, const float* __restrict__ weight,
                                         float* __restrict__ y, long long rows, int D, float eps) {
    const int lane = threadIdx.x & 31;
    const long long row = ((long long)blockIdx.x * blockDim.x + threadIdx.x) >> 5;
    if (row >= rows) return;  // the whole warp leaves together
    const float* xr = x + row * D;
    float ss = 0.f;
    for (int c = lane; c < D; c += 32) ss += xr[c] * xr[c];
    const float inv = 1.f / sqrtf(warp_sum(ss) / (float)D + eps);
    float* yr = y + row * D;
    for (int c = lane; c < D; c += 32) yr[c] = weight ? xr[c] * inv * weight[c] : xr[c] * inv;
}

// x [B, T, heads, d], cos / sin [T, d] -> x * cos + rotate_half(x) * sin, rotate_half(x) = (-x2, x1)
extern "C" __global__ void rope_rows(const float* __restrict__ x, const float* __restrict__ cos_t,
                                     const float* __restrict__ sin_t, float* __restrict__ y, long long n,
                                     int T, int heads, int d) {
    const int half = d / 2;
    for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (long long)gridDim.x * blockDim.x) {
        const int c = (int)(i % d);
        const long long t = (i / ((long long)d * heads)) % T;
        const float rotated = c < half ? -x[i + half] : x[i - half];
        y[i] = x[i] * cos_t[t * d + c] + rotated * sin_t[t * d + c];
    }
}

// gelu_tanh(gate) * up, elementwise
extern "C" __global__ void gelu_mul(const float* __restrict__ gate, const float* __restrict__ up,
                                    float* __restrict__ y, long long n) {
    for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (long long)gridDim.x * blockDim.x)
        y[i] = gelu_tanh(gate[i]) * up[i];
}
