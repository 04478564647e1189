// RMSNorm with the (1 + w) weight of Qwen3.5 (spec qwen35moe.md section 4: `x * rsqrt(mean(x²) +
// eps) * (1 + w)`, computed in fp32) and partial rotary embedding (section 3: the first
// `rot_dim` = head_dim * partial_rotary_factor dimensions of each head, rotate-half pairs
// (i, i + rot_dim / 2), inv_freq_i = theta^(-2i / rot_dim); for text tokens the three mRoPE
// position components are equal, which makes mRoPE this 1-D rotation). cos / sin are rounded to
// the activation dtype, as transformers does. Reference twins: float64 torch in the tests.
#include "common.cuh"

using namespace rio;

// One block per row of x [rows, hidden]; w [hidden]; out may alias x.
template <typename T>
__device__ void rmsnorm(const T *__restrict__ x, long long ldx, const T *__restrict__ w, float eps, int hidden, T *out, long long ldo) {
    __shared__ float scratch[32];
    const T *row = x + blockIdx.x * ldx;
    float ss = 0.f;
    for (int h = threadIdx.x; h < hidden; h += blockDim.x) {
        const float v = to_f32(row[h]);
        ss += v * v;
    }
    const float scale = rsqrtf(block_sum(ss, scratch) / hidden + eps);
    for (int h = threadIdx.x; h < hidden; h += blockDim.x) out[blockIdx.x * ldo + h] = from_f32<T>(to_f32(row[h]) * scale * (1.f + to_f32(w[h])));
}

#define RIO_RMSNORM(NAME, T)                                                                                                   \
    extern "C" __global__ void __launch_bounds__(256) NAME(const T *x, long long ldx, const T *w, float eps, int hidden, T *out, \
                                                           long long ldo) {                                                    \
        rmsnorm<T>(x, ldx, w, eps, hidden, out, ldo);                                                                          \
    }
RIO_RMSNORM(rmsnorm_one_plus_w_bf16, __nv_bfloat16)
RIO_RMSNORM(rmsnorm_one_plus_w_f16, __half)
RIO_RMSNORM(rmsnorm_one_plus_w_f32, float)

// In place on x [tokens, heads, head_dim] (row stride ld_token, head stride ld_head); grid
// (tokens), block: threads over (head, pair). positions [tokens] int32.
template <typename T>
__device__ void rope(T *x, long long ld_token, long long ld_head, int heads, int rot_dim, const int *__restrict__ positions, float theta) {
    const int t = blockIdx.x;
    const int half = rot_dim / 2;
    const float pos = (float)positions[t];
    for (int i = threadIdx.x; i < heads * half; i += blockDim.x) {
        const int head = i / half, j = i % half;
        // transformers: inv_freq in fp32, freqs = pos * inv_freq in fp32, cos/sin cast to the dtype.
        const float inv_freq = 1.f / powf(theta, (float)(2 * j) / (float)rot_dim);
        // The fp32 angle transformers feeds to cos/sin, reduced to [-pi, pi] in double so the
        // fast intrinsics stay accurate (and no slow-path local memory is needed).
        const double angle = (double)(pos * inv_freq);
        const float r = (float)(angle - 6.283185307179586 * rint(angle / 6.283185307179586));
        float s, c;
        __sincosf(r, &s, &c);
        c = round_to<T>(c);
        s = round_to<T>(s);
        T *p = x + t * ld_token + head * ld_head;
        const float x1 = to_f32(p[j]), x2 = to_f32(p[j + half]);
        p[j] = from_f32<T>(x1 * c - x2 * s);
        p[j + half] = from_f32<T>(x2 * c + x1 * s);
    }
}

#define RIO_ROPE(NAME, T)                                                                                                     \
    extern "C" __global__ void __launch_bounds__(256) NAME(T *x, long long ld_token, long long ld_head, int heads, int rot_dim, \
                                                           const int *positions, float theta) {                              \
        rope<T>(x, ld_token, ld_head, heads, rot_dim, positions, theta);                                                      \
    }
RIO_ROPE(rope_partial_bf16, __nv_bfloat16)
RIO_ROPE(rope_partial_f16, __half)
RIO_ROPE(rope_partial_f32, float)
