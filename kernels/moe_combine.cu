// MoE combine (spec section 5): the weighted scatter-add of the experts' outputs back to token
// order, plus the shared expert with its scalar sigmoid gate, in one fused step:
//     out[t] = Σ_j weights[t, j] · y[position[t·k + j]]  +  sigmoid(x[t] · gate_w) · ys[t]
// Deterministic (a gather per token, no atomics). Reference twin: rio_cpu::moe::combine, and the
// torch expert loop of transformers in the tests.
#include "common.cuh"

using namespace rio;

// One block per token. `ys` may be null (no shared expert); `gate_w` may be null (ungated shared
// expert). `y` and `ys` are fp32 rows of `hidden` values.
template <typename T>
__device__ void combine(const float *__restrict__ y, const uint32_t *__restrict__ position, const float *__restrict__ weights, int k,
                        int hidden, const float *__restrict__ ys, const T *__restrict__ x, long long ldx, const T *__restrict__ gate_w,
                        T *__restrict__ out, long long ldo) {
    __shared__ float scratch[32];
    const int t = blockIdx.x;
    float gate = 1.f;
    if (ys != nullptr && gate_w != nullptr) {
        float dot = 0.f;
        for (int h = threadIdx.x; h < hidden; h += blockDim.x) dot += to_f32(x[t * ldx + h]) * to_f32(gate_w[h]);
        gate = sigmoid(block_sum(dot, scratch));
    }
    for (int h = threadIdx.x; h < hidden; h += blockDim.x) {
        float acc = 0.f;
        for (int j = 0; j < k; ++j) {
            const int slot = t * k + j;
            acc = fmaf(weights[slot], y[(long long)position[slot] * hidden + h], acc);
        }
        if (ys != nullptr) acc = fmaf(gate, ys[(long long)t * hidden + h], acc);
        out[t * ldo + h] = from_f32<T>(acc);
    }
}

#define RIO_COMBINE(NAME, T)                                                                                                           \
    extern "C" __global__ void __launch_bounds__(256)                                                                                  \
        NAME(const float *y, const uint32_t *position, const float *weights, int k, int hidden, const float *ys, const T *x, long long ldx, \
             const T *gate_w, T *out, long long ldo) {                                                                                 \
        combine<T>(y, position, weights, k, hidden, ys, x, ldx, gate_w, out, ldo);                                                     \
    }

RIO_COMBINE(moe_combine_bf16, __nv_bfloat16)
RIO_COMBINE(moe_combine_f16, __half)
RIO_COMBINE(moe_combine_f32, float)
