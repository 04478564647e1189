// Helpers shared by every rio_rt kernel: element conversion, warp and block reductions.
//
// Kernels are `extern "C"` so the host finds them by plain name; templated bodies are instantiated
// once per dtype under a suffixed name (`_bf16`, `_f16`, `_f32`).
#pragma once
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <stdint.h>

namespace rio {

constexpr unsigned FULL_MASK = 0xffffffffu;

__device__ __forceinline__ float to_f32(float v) { return v; }
__device__ __forceinline__ float to_f32(__nv_bfloat16 v) { return __bfloat162float(v); }
__device__ __forceinline__ float to_f32(__half v) { return __half2float(v); }

template <typename T> __device__ __forceinline__ T from_f32(float v);
template <> __device__ __forceinline__ float from_f32<float>(float v) { return v; }
template <> __device__ __forceinline__ __nv_bfloat16 from_f32<__nv_bfloat16>(float v) { return __float2bfloat16_rn(v); }
template <> __device__ __forceinline__ __half from_f32<__half>(float v) { return __float2half_rn(v); }

// Rounds through the storage type: what a value looks like after being written as T and read back.
template <typename T> __device__ __forceinline__ float round_to(float v) { return to_f32(from_f32<T>(v)); }

__device__ __forceinline__ float warp_sum(float v) {
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(FULL_MASK, v, o);
    return v;
}

__device__ __forceinline__ float warp_max(float v) {
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(FULL_MASK, v, o));
    return v;
}

// Sum over the block; every thread gets the result. `scratch` holds 32 floats; blockDim.x is a
// multiple of 32. Ends with a barrier so `scratch` can be reused right away.
__device__ __forceinline__ float block_sum(float v, float *scratch) {
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, warps = blockDim.x >> 5;
    v = warp_sum(v);
    if (lane == 0) scratch[warp] = v;
    __syncthreads();
    v = lane < warps ? scratch[lane] : 0.f;
    v = warp_sum(v);
    __syncthreads();
    return v;
}

__device__ __forceinline__ float block_max(float v, float *scratch) {
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, warps = blockDim.x >> 5;
    v = warp_max(v);
    if (lane == 0) scratch[warp] = v;
    __syncthreads();
    v = lane < warps ? scratch[lane] : -INFINITY;
    v = warp_max(v);
    __syncthreads();
    return v;
}

// (value, index) argmax where ties go to the lower index, as the CPU backend's top-k.
struct ArgMax {
    float value;
    int index;
};

// b ranks before a: larger value, or equal value and lower index.
__device__ __forceinline__ bool beats(ArgMax b, ArgMax a) { return b.value > a.value || (b.value == a.value && b.index < a.index); }

__device__ __forceinline__ ArgMax better(ArgMax a, ArgMax b) {
    if (b.value > a.value || (b.value == a.value && b.index < a.index)) return b;
    return a;
}

__device__ __forceinline__ ArgMax warp_argmax(ArgMax v) {
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) {
        ArgMax other{__shfl_xor_sync(FULL_MASK, v.value, o), __shfl_xor_sync(FULL_MASK, v.index, o)};
        v = better(v, other);
    }
    return v;
}

// Block argmax; `scratch` holds 32 ArgMax. Every thread gets the result.
__device__ __forceinline__ ArgMax block_argmax(ArgMax v, ArgMax *scratch) {
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, warps = blockDim.x >> 5;
    v = warp_argmax(v);
    if (lane == 0) scratch[warp] = v;
    __syncthreads();
    v = lane < warps ? scratch[lane] : ArgMax{-INFINITY, 0x7fffffff};
    v = warp_argmax(v);
    __syncthreads();
    return v;
}

__device__ __forceinline__ float silu(float v) { return v / (1.f + __expf(-v)); }
__device__ __forceinline__ float sigmoid(float v) { return 1.f / (1.f + __expf(-v)); }

// Dot product of a row of T (length n, 16-byte aligned when `vectorised`) with an fp32 row, over
// the lanes of one warp; the result is in every lane.
template <typename T> __device__ __forceinline__ float warp_dot(const T *__restrict__ a, const float *__restrict__ b, int n) {
    const int lane = threadIdx.x & 31;
    float acc = 0.f;
    for (int i = lane; i < n; i += 32) acc += to_f32(a[i]) * b[i];
    return warp_sum(acc);
}

}  // namespace rio
