// float32 <-> bfloat16 (raw 16-bit patterns). Twins: tinydg.bf16.to_bits / from_bits (NumPy).
// float32 -> float8 e4m3 codes with a scale per row. Twin: tinydg.fp8.encode(x / scales[..., None]).

extern "C" __global__ void f32_to_bf16(const float* __restrict__ x, bf16_t* __restrict__ y, long long n) {
    for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (long long)gridDim.x * blockDim.x)
        y[i] = float_to_bf16(x[i]);
}

extern "C" __global__ void bf16_to_f32(const bf16_t* __restrict__ x, float* __restrict__ y, long long n) {
    for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (long long)gridDim.x * blockDim.x)
        y[i] = to_float(x[i]);
}

// x [rows, k] float32, scales [rows] -> codes [rows, k] = e4m3(x / scale of its row)
extern "C" __global__ void f32_to_e4m3_rows(const float* __restrict__ x, const float* __restrict__ scales,
                                            fp8_t* __restrict__ codes, long long n, long long k) {
    for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (long long)gridDim.x * blockDim.x)
        codes[i] = float_to_e4m3(x[i] / scales[i / k]);
}
