// Shared by every tinydg kernel (prepended to each source before compiling; no CUDA headers needed).
// bfloat16 values are kept as their raw 16-bit patterns (bf16_t); all arithmetic is float32.
typedef unsigned short bf16_t;

#define TINYDG_INF __int_as_float(0x7f800000)
#define FULL_MASK 0xffffffffu

__device__ __forceinline__ float to_float(float x) { return x; }
__device__ __forceinline__ float to_float(bf16_t x) { return __uint_as_float(((unsigned int)x) << 16); }

// float32 -> bfloat16, round to nearest even (what torch's .to(torch.bfloat16) does); NaN stays NaN
__device__ __forceinline__ bf16_t float_to_bf16(float x) {
    unsigned int u = __float_as_uint(x);
    if ((u & 0x7fffffffu) > 0x7f800000u) return (bf16_t)0x7fc0;
    u += 0x7fffu + ((u >> 16) & 1u);
    return (bf16_t)(u >> 16);
}

__device__ __forceinline__ float warp_sum(float x) {
    for (int o = 16; o > 0; o >>= 1) x += __shfl_xor_sync(FULL_MASK, x, o);
    return x;
}

__device__ __forceinline__ float warp_max(float x) {
    for (int o = 16; o > 0; o >>= 1) x = fmaxf(x, __shfl_xor_sync(FULL_MASK, x, o));
    return x;
}

// gelu with the tanh approximation, as tinydg.mlp.gelu_tanh
__device__ __forceinline__ float gelu_tanh(float x) {
    const float c = 0.7978845608028654f;  // sqrt(2 / pi)
    return 0.5f * x * (1.0f + tanhf(c * (x + 0.044715f * x * x * x)));
}
