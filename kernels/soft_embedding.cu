// Soft-embedding decoding (spec: swireasoning.md 1.1 and 2.2), from logits, on the GPU, so a
// latent step never copies logits to the host:
//   soft_row_stats:   one pass per row: max, Σ exp and entropy of softmax(logits / T)
//                     (online merge of (max, sum, Σ e·z) triples); the entropy is the signal
//                     SwiReasoning switches on (T = 1) and Soft Thinking reports (after T).
//   soft_mix_full:    Σ_v p_v · E[v]: the full-vocabulary, unfiltered mix (SwiReasoning's
//                     `p_t @ E`), each embedding row read once, fp32 accumulation.
//   soft_topk_finish: after topk_chunks (sampling.cu): Soft Thinking's concept token: top-k renorm,
//                     top-p renorm, relative min-p, the best `max_topk` renormalised, and the mix
//                     Σ_j w_j E[idx_j].
// Reference twins: tests/cuda_reference.py (float64 torch).
#include "topk.cuh"

using namespace rio;

namespace {

// (max, sum of e^(z-max), Σ e^(z-max)·(z-max)) of a set of z, mergeable in any order.
struct Stats {
    float m, s, a;
};

__device__ __forceinline__ Stats merge(Stats x, Stats y) {
    if (x.s == 0.f) return y;
    if (y.s == 0.f) return x;
    const float m = fmaxf(x.m, y.m);
    const float ex = __expf(x.m - m), ey = __expf(y.m - m);
    return Stats{m, x.s * ex + y.s * ey, ex * (x.a + (x.m - m) * x.s) + ey * (y.a + (y.m - m) * y.s)};
}

__device__ __forceinline__ Stats add(Stats x, float z) {
    if (z == -INFINITY) return x;  // masked vocabulary entries carry no probability
    return merge(x, Stats{z, 1.f, 0.f});
}

__device__ Stats warp_merge(Stats v) {
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) {
        Stats other{__shfl_xor_sync(FULL_MASK, v.m, o), __shfl_xor_sync(FULL_MASK, v.s, o), __shfl_xor_sync(FULL_MASK, v.a, o)};
        v = merge(v, other);
    }
    return v;
}

template <typename T>
__device__ void row_stats(const T *__restrict__ logits, long long ld, int vocab, float inv_temperature, float *__restrict__ stats) {
    __shared__ Stats partial[32];
    const T *row = logits + blockIdx.x * ld;
    Stats acc{-INFINITY, 0.f, 0.f};
    for (int v = threadIdx.x; v < vocab; v += blockDim.x) acc = add(acc, to_f32(row[v]) * inv_temperature);
    acc = warp_merge(acc);
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    if (lane == 0) partial[warp] = acc;
    __syncthreads();
    if (warp == 0) {
        acc = lane < (int)(blockDim.x >> 5) ? partial[lane] : Stats{-INFINITY, 0.f, 0.f};
        acc = warp_merge(acc);
        if (lane == 0) {
            // H = -Σ p ln p with p = e^(z-m)/S: ln S - (Σ e^(z-m)(z-m)) / S.
            stats[blockIdx.x * 3 + 0] = acc.m;
            stats[blockIdx.x * 3 + 1] = acc.s;
            stats[blockIdx.x * 3 + 2] = logf(acc.s) - acc.a / acc.s;
        }
    }
}

constexpr int MIX_ROWS = 8;     // logits rows per launch of soft_mix_full
constexpr int MIX_VCHUNK = 256;  // vocabulary rows per block

template <typename T> __device__ __forceinline__ void load8(float (&out)[8], const T *src);
template <> __device__ __forceinline__ void load8<float>(float (&out)[8], const float *src) {
    const float4 a = __ldg(reinterpret_cast<const float4 *>(src)), b = __ldg(reinterpret_cast<const float4 *>(src) + 1);
    out[0] = a.x, out[1] = a.y, out[2] = a.z, out[3] = a.w, out[4] = b.x, out[5] = b.y, out[6] = b.z, out[7] = b.w;
}
template <typename T> __device__ __forceinline__ void load8(float (&out)[8], const T *src) {
    const uint4 raw = __ldg(reinterpret_cast<const uint4 *>(src));
    const T *v = reinterpret_cast<const T *>(&raw);
#pragma unroll
    for (int i = 0; i < 8; ++i) out[i] = to_f32(v[i]);
}

// mix[b, :] += Σ_{v in chunk} p[b, v] · E[v, :] for `rows` (<= 8) logits rows; p from the row
// stats. grid (ceil(H / (8 * blockDim)), ceil(V / MIX_VCHUNK)); hidden % 8 == 0, rows 16-byte aligned.
template <typename L, typename E>
__device__ void mix_full(const L *__restrict__ logits, long long ld, int rows, int vocab, float inv_temperature, const float *__restrict__ stats,
                         const E *__restrict__ embed, int hidden, float *__restrict__ mix) {
    __shared__ float p[MIX_ROWS][MIX_VCHUNK];
    const int v0 = blockIdx.y * MIX_VCHUNK;
    const int len = min(MIX_VCHUNK, vocab - v0);
    for (int i = threadIdx.x; i < MIX_ROWS * MIX_VCHUNK; i += blockDim.x) {
        const int b = i / MIX_VCHUNK, v = i % MIX_VCHUNK;
        float pv = 0.f;
        if (b < rows && v < len) {
            const float z = to_f32(logits[b * ld + v0 + v]) * inv_temperature;
            pv = z == -INFINITY ? 0.f : __expf(z - stats[b * 3]) / stats[b * 3 + 1];
        }
        p[b][v] = pv;
    }
    __syncthreads();
    const int h = (blockIdx.x * blockDim.x + threadIdx.x) * 8;
    if (h >= hidden) return;
    float acc[MIX_ROWS][8] = {};
    for (int v = 0; v < len; ++v) {
        float e[8];
        load8<E>(e, embed + (long long)(v0 + v) * hidden + h);
#pragma unroll
        for (int b = 0; b < MIX_ROWS; ++b) {
            const float pv = p[b][v];
#pragma unroll
            for (int c = 0; c < 8; ++c) acc[b][c] = fmaf(pv, e[c], acc[b][c]);
        }
    }
#pragma unroll
    for (int b = 0; b < MIX_ROWS; ++b)
        if (b < rows)
#pragma unroll
            for (int c = 0; c < 8; ++c) atomicAdd(&mix[(long long)b * hidden + h + c], acc[b][c]);
}

// One block per row. Candidates from topk_chunks (values are logit / T, best first per chunk).
// top_k: 0 = off, else <= TOPK_MAX; top_p in (0, 1]; min_p >= 0 (relative to the largest kept
// probability); max_topk <= TOPK_MAX. Writes index [max_topk] (-1 past the kept entries),
// weight [max_topk] (renormalised, 0 past the kept entries) and mix [hidden] (fp32).
template <typename E>
__device__ void topk_finish(const float *__restrict__ cand_value, const int *__restrict__ cand_index, int candidates, const float *__restrict__ stats,
                            int top_k, float top_p, float min_p, int max_topk, const E *__restrict__ embed, int hidden, int *__restrict__ out_index,
                            float *__restrict__ out_weight, float *__restrict__ mix) {
    extern __shared__ float work[];  // `candidates` floats
    __shared__ float value[TOPK_MAX];
    __shared__ int index[TOPK_MAX];
    __shared__ float weight[TOPK_MAX];
    __shared__ int kept;
    const int b = blockIdx.x;
    const int k = max(top_k > 0 ? top_k : 0, max_topk);
    block_topk_merge(cand_value + (long long)b * candidates, cand_index + (long long)b * candidates, candidates, k, work, value, index);
    __shared__ float p[TOPK_MAX];
    if (threadIdx.x == 0) {
        const float m = stats[b * 3], s = stats[b * 3 + 1];
        // Softmax probabilities of the k best, then the filters in Soft Thinking's order, each
        // followed by a renormalisation (only the kept set's ratios matter at the end).
        int n = 0;
        for (int j = 0; j < k; ++j) {
            p[j] = index[j] >= 0 ? __expf(value[j] - m) / s : 0.f;
            if (index[j] >= 0) n = j + 1;
        }
        // The top-k renormalisation's total; without top-k, the whole softmax (sums to 1).
        float total = 1.f;
        if (top_k > 0) {
            n = min(n, top_k);
            total = 0.f;
            for (int j = 0; j < n; ++j) total += p[j];
        }
        // top-p: keep entry j while the mass before it is below top_p.
        float before = 0.f;
        int np = 0;
        while (np < n && before < top_p * total) before += p[np++];
        n = np;
        // min-p, relative to the largest probability.
        int nm = 0;
        while (nm < n && p[nm] >= min_p * p[0]) ++nm;
        n = min(nm, max_topk);
        total = 0.f;
        for (int j = 0; j < n; ++j) total += p[j];
        for (int j = 0; j < max_topk; ++j) {
            weight[j] = j < n ? p[j] / total : 0.f;
            out_index[b * max_topk + j] = j < n ? index[j] : -1;
            out_weight[b * max_topk + j] = weight[j];
        }
        kept = n;
    }
    __syncthreads();
    for (int h = threadIdx.x; h < hidden; h += blockDim.x) {
        float acc = 0.f;
        for (int j = 0; j < kept; ++j) acc = fmaf(weight[j], to_f32(embed[(long long)index[j] * hidden + h]), acc);
        mix[(long long)b * hidden + h] = acc;
    }
}

}  // namespace

#define RIO_SOFT_STATS(NAME, L)                                                                                   \
    extern "C" __global__ void __launch_bounds__(1024) NAME(const L *logits, long long ld, int vocab, float inv_temperature, \
                                                            float *stats) {                                       \
        row_stats<L>(logits, ld, vocab, inv_temperature, stats);                                                  \
    }
RIO_SOFT_STATS(soft_row_stats_f32, float)
RIO_SOFT_STATS(soft_row_stats_bf16, __nv_bfloat16)
RIO_SOFT_STATS(soft_row_stats_f16, __half)

#define RIO_SOFT_MIX(NAME, L, E)                                                                                                    \
    extern "C" __global__ void __launch_bounds__(256) NAME(const L *logits, long long ld, int rows, int vocab, float inv_temperature, \
                                                           const float *stats, const E *embed, int hidden, float *mix) {            \
        mix_full<L, E>(logits, ld, rows, vocab, inv_temperature, stats, embed, hidden, mix);                                      \
    }
RIO_SOFT_MIX(soft_mix_full_f32_bf16, float, __nv_bfloat16)
RIO_SOFT_MIX(soft_mix_full_bf16_bf16, __nv_bfloat16, __nv_bfloat16)
RIO_SOFT_MIX(soft_mix_full_f32_f16, float, __half)
RIO_SOFT_MIX(soft_mix_full_f16_f16, __half, __half)
RIO_SOFT_MIX(soft_mix_full_f32_f32, float, float)

#define RIO_SOFT_TOPK(NAME, E)                                                                                                     \
    extern "C" __global__ void __launch_bounds__(256)                                                                              \
        NAME(const float *cand_value, const int *cand_index, int candidates, const float *stats, int top_k, float top_p, float min_p, \
             int max_topk, const E *embed, int hidden, int *out_index, float *out_weight, float *mix) {                             \
        topk_finish<E>(cand_value, cand_index, candidates, stats, top_k, top_p, min_p, max_topk, embed, hidden, out_index, out_weight, \
                       mix);                                                                                                       \
    }
RIO_SOFT_TOPK(soft_topk_finish_bf16, __nv_bfloat16)
RIO_SOFT_TOPK(soft_topk_finish_f16, __half)
RIO_SOFT_TOPK(soft_topk_finish_f32, float)
