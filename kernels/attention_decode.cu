// Attention decode with a KV cache (spec qwen35moe.md section 3, full-attention layers): one new
// query per sequence against its cached keys/values, grouped-query (each KV head serves
// q_heads / kv_heads query heads), softmax in fp32 with an online (running max) rescale so the
// cache is read once. q/k norms, RoPE and the output gate run in their own kernels.
// Reference twin: torch.softmax(q·Kᵀ·scale)·V in float64 in the tests.
#include "common.cuh"

using namespace rio;

constexpr int MAX_HEAD_DIM = 256;
constexpr int WARPS = 8;

// grid (q_heads, batch), WARPS * 32 threads. q [B, Hq, D] (row stride ldq per sequence, heads
// contiguous); caches [B, Hkv, Tmax, D] with strides (ld_b, ld_h, D); lengths [B]; out like q.
template <typename T>
__device__ void attend(const T *__restrict__ q, long long ldq, const T *__restrict__ k_cache, const T *__restrict__ v_cache, long long ld_b,
                       long long ld_h, const int *__restrict__ lengths, int q_heads, int kv_heads, int head_dim, float scale, T *__restrict__ out,
                       long long ldo) {
    __shared__ float part_acc[WARPS][MAX_HEAD_DIM];
    __shared__ float part_m[WARPS], part_l[WARPS];
    const int hq = blockIdx.x, b = blockIdx.y;
    const int hk = hq / (q_heads / kv_heads);
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    const int len = lengths[b];
    constexpr int DPL = MAX_HEAD_DIM / 32;  // dims per lane: lane + 32 * j
    float qv[DPL], acc[DPL];
#pragma unroll
    for (int j = 0; j < DPL; ++j) {
        const int d = lane + 32 * j;
        qv[j] = d < head_dim ? to_f32(q[b * ldq + hq * head_dim + d]) * scale : 0.f;
        acc[j] = 0.f;
    }
    const T *kb = k_cache + b * ld_b + hk * ld_h;
    const T *vb = v_cache + b * ld_b + hk * ld_h;
    float m = -INFINITY, l = 0.f;
    for (int t = warp; t < len; t += WARPS) {
        float s = 0.f;
#pragma unroll
        for (int j = 0; j < DPL; ++j) {
            const int d = lane + 32 * j;
            if (d < head_dim) s += qv[j] * to_f32(kb[(long long)t * head_dim + d]);
        }
        s = warp_sum(s);
        const float m_new = fmaxf(m, s);
        const float old = __expf(m - m_new), p = __expf(s - m_new);
        l = l * old + p;
#pragma unroll
        for (int j = 0; j < DPL; ++j) {
            const int d = lane + 32 * j;
            if (d < head_dim) acc[j] = acc[j] * old + p * to_f32(vb[(long long)t * head_dim + d]);
        }
        m = m_new;
    }
#pragma unroll
    for (int j = 0; j < DPL; ++j) part_acc[warp][lane + 32 * j] = acc[j];
    if (lane == 0) part_m[warp] = m, part_l[warp] = l;
    __syncthreads();
    // Merge the warps' partial softmaxes.
    float gm = -INFINITY;
    for (int w = 0; w < WARPS; ++w) gm = fmaxf(gm, part_m[w]);
    float gl = 0.f;
    for (int w = 0; w < WARPS; ++w) gl += part_m[w] == -INFINITY ? 0.f : part_l[w] * __expf(part_m[w] - gm);
    for (int d = threadIdx.x; d < head_dim; d += blockDim.x) {
        float o = 0.f;
        for (int w = 0; w < WARPS; ++w)
            if (part_m[w] != -INFINITY) o += part_acc[w][d] * __expf(part_m[w] - gm);
        out[b * ldo + hq * head_dim + d] = from_f32<T>(gl > 0.f ? o / gl : 0.f);
    }
}

#define RIO_ATTEND(NAME, T)                                                                                                           \
    extern "C" __global__ void __launch_bounds__(WARPS * 32)                                                                          \
        NAME(const T *q, long long ldq, const T *k_cache, const T *v_cache, long long ld_b, long long ld_h, const int *lengths, int q_heads, \
             int kv_heads, int head_dim, float scale, T *out, long long ldo) {                                                        \
        attend<T>(q, ldq, k_cache, v_cache, ld_b, ld_h, lengths, q_heads, kv_heads, head_dim, scale, out, ldo);                      \
    }
RIO_ATTEND(attention_decode_bf16, __nv_bfloat16)
RIO_ATTEND(attention_decode_f16, __half)
RIO_ATTEND(attention_decode_f32, float)
