// Gated DeltaNet decode (spec qwen35moe.md section 3, linear-attention layers), fp32 state:
//   gdn_conv_update:    the causal depthwise conv1d over (conv state, new token) with SiLU, and
//                       the state shifted by one token (transformers' causal_conv1d_update).
//   gdn_recurrent_step: one token of the gated delta rule per (sequence, value head):
//       S ← S·exp(g);  delta = (v − Sᵀk)·β;  S ← S + k ⊗ delta;  o = Sᵀq
//   with q, k L2-normalised (eps 1e-6) and q scaled, as transformers'
//   torch_recurrent_gated_delta_rule; value head h reads key head h / (Hv / Hk).
// Reference twins: those transformers functions, in float64, in the tests.
#include "common.cuh"

using namespace rio;

constexpr int MAX_KEY_DIM = 256;

// grid (ceil(C / 256), B). x [B, C] (row stride ldx); state [B, C, L] (T, L >= K - 1);
// weight [C, K]; bias [C] or null; out [B, C].
template <typename T>
__device__ void conv_update(const T *__restrict__ x, long long ldx, T *__restrict__ state, int channels, int state_len, const T *__restrict__ weight,
                            int kernel, const T *__restrict__ bias, T *__restrict__ out, long long ldo) {
    const int c = blockIdx.x * blockDim.x + threadIdx.x, b = blockIdx.y;
    if (c >= channels) return;
    T *s = state + ((long long)b * channels + c) * state_len;
    const float xn = to_f32(x[b * ldx + c]);
    // Window = last `kernel` values of (state ++ x).
    float y = bias ? to_f32(bias[c]) : 0.f;
    for (int j = 0; j < kernel; ++j) {
        const int src = state_len + 1 - kernel + j;  // index into (state ++ x)
        const float v = src == state_len ? xn : to_f32(s[src]);
        y = fmaf(to_f32(weight[c * kernel + j]), v, y);
    }
    for (int i = 0; i + 1 < state_len; ++i) s[i] = s[i + 1];
    s[state_len - 1] = x[b * ldx + c];
    out[b * ldo + c] = from_f32<T>(silu(y));
}

// grid (Hv, B), Dv (<= 256) threads. q, k [B, Hk, Dk] (row stride ldqk), v [B, Hv, Dv] (row stride ldv),
// g, beta [B, Hv] fp32; state [B, Hv, Dk, Dv] fp32, updated in place; out [B, Hv, Dv].
template <typename T>
__device__ void recurrent_step(const T *__restrict__ q, const T *__restrict__ k, long long ldqk, const T *__restrict__ v, long long ldv,
                               const float *__restrict__ g, const float *__restrict__ beta, float *__restrict__ state, int k_heads, int v_heads,
                               int key_dim, int value_dim, int l2norm, float scale, T *__restrict__ out, long long ldo) {
    __shared__ float qs[MAX_KEY_DIM], ks[MAX_KEY_DIM];
    __shared__ float scratch[32];
    const int hv = blockIdx.x, b = blockIdx.y;
    const int hk = hv / (v_heads / k_heads);
    const int col = threadIdx.x;
    float qq = 0.f, kk = 0.f;
    for (int d = threadIdx.x; d < key_dim; d += blockDim.x) {
        const float a = to_f32(q[b * ldqk + hk * key_dim + d]), c = to_f32(k[b * ldqk + hk * key_dim + d]);
        qs[d] = a, ks[d] = c;
        qq += a * a, kk += c * c;
    }
    qq = block_sum(qq, scratch);
    kk = block_sum(kk, scratch);
    const float qn = (l2norm ? rsqrtf(qq + 1e-6f) : 1.f) * scale, kn = l2norm ? rsqrtf(kk + 1e-6f) : 1.f;
    for (int d = threadIdx.x; d < key_dim; d += blockDim.x) qs[d] *= qn, ks[d] *= kn;
    __syncthreads();
    if (col >= value_dim) return;
    const float decay = __expf(g[b * v_heads + hv]);
    const float bt = beta[b * v_heads + hv];
    float *s = state + ((long long)b * v_heads + hv) * key_dim * value_dim + col;
    float kv = 0.f;
    const float *sr = s;
    for (int d = 0; d < key_dim; ++d, sr += value_dim) kv = fmaf(*sr * decay, ks[d], kv);
    const float delta = (to_f32(v[b * ldv + hv * value_dim + col]) - kv) * bt;
    float o = 0.f;
    float *sw = s;
    for (int d = 0; d < key_dim; ++d, sw += value_dim) {
        const float updated = fmaf(ks[d], delta, *sw * decay);
        *sw = updated;
        o = fmaf(updated, qs[d], o);
    }
    out[b * ldo + hv * value_dim + col] = from_f32<T>(o);
}

#define RIO_GDN(T, SUFFIX)                                                                                                                \
    extern "C" __global__ void __launch_bounds__(256) gdn_conv_update_##SUFFIX(const T *x, long long ldx, T *state, int channels,        \
                                                                               int state_len, const T *weight, int kernel, const T *bias, \
                                                                               T *out, long long ldo) {                                  \
        conv_update<T>(x, ldx, state, channels, state_len, weight, kernel, bias, out, ldo);                                               \
    }                                                                                                                                     \
    extern "C" __global__ void __launch_bounds__(256) gdn_recurrent_step_##SUFFIX(                                                       \
        const T *q, const T *k, long long ldqk, const T *v, long long ldv, const float *g, const float *beta, float *state, int k_heads, \
        int v_heads, int key_dim, int value_dim, int l2norm, float scale, T *out, long long ldo) {                                      \
        recurrent_step<T>(q, k, ldqk, v, ldv, g, beta, state, k_heads, v_heads, key_dim, value_dim, l2norm, scale, out, ldo);             \
    }
RIO_GDN(__nv_bfloat16, bf16)
RIO_GDN(__half, f16)
RIO_GDN(float, f32)
