// Shared by every tinydg kernel (prepended to each source before compiling; no CUDA headers needed).
// bfloat16 values are kept as their raw 16-bit patterns (bf16_t); all arithmetic is float32.
typedef unsigned short bf16_t;
typedef unsigned char fp8_t;  // float8 e4m3fn (tinydg.fp8): 1 sign, 4 exponent (bias 7), 3 mantissa bits

#define TINYDG_INF __int_as_float(0x7f800000)
#define FULL_MASK 0xffffffffu

// The visibility rule, the CUDA form of tinydg.attention.visible: may the query at position qp see the
// key at position kp? causal: kp <= qp; window > 0: kp > qp - window; valid (0: all valid): the key's
// row of the [B, valid_len] mask, already offset to batch row b, says it is a real token.
__device__ __forceinline__ bool key_visible(long long qp, long long kp, int causal, int window,
                                            const unsigned char* __restrict__ valid_row) {
    return (!causal || kp <= qp) && (window <= 0 || kp > qp - window) && (valid_row == 0 || valid_row[kp]);
}

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

// float32 -> float8 e4m3fn code: round to nearest even, |x| saturating at 448. Twin: tinydg.fp8.encode
__device__ __forceinline__ fp8_t float_to_e4m3(float x) {
    const unsigned sign = (__float_as_uint(x) >> 24) & 0x80u;
    const float a = fminf(fabsf(x), 448.f);
    if (a < 0.015625f) return (fp8_t)(sign | (unsigned)__float2int_rn(a * 512.f));  // subnormal: steps of 2^-9
    unsigned u = __float_as_uint(a);
    u += 0x7ffffu + ((u >> 20) & 1u);  // drop 20 of 23 mantissa bits, ties to even
    return (fp8_t)(sign | ((((u >> 23) - 127u + 7u) & 15u) << 3) | ((u >> 20) & 7u));
}

// one e4m3 code (low 8 bits of b) -> bf16 bits, exactly. Twin: tinydg.fp8.decode
__device__ __forceinline__ unsigned e4m3_to_bf16(unsigned b) {
    const unsigned sign = (b & 0x80u) << 8, magnitude = b & 0x7fu;
    if (magnitude >= 0x08u) return sign | ((magnitude << 4) + (120u << 7));  // normal: exponent e - 7 + 127
    return sign | (__float_as_uint((float)magnitude * 0.001953125f) >> 16);  // subnormal: m * 2^-9
}

// two codes (bytes 0 and 1 of v) -> two bf16 packed low / high, as they sit in memory
__device__ __forceinline__ unsigned e4m3x2_to_bf16x2(unsigned v) {
    return e4m3_to_bf16(v & 0xffu) | (e4m3_to_bf16((v >> 8) & 0xffu) << 16);
}
