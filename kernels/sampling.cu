// Sampling from logits on the GPU (spec: swireasoning.md 1.6 item 16: greedy is the argmax):
//   argmax_rows:        greedy token per row (ties to the lower id; NaN never wins).
//   topk_chunks:        first half of every top-k (topk.cuh): each chunk's best k of logit / T.
//   sample_topk_finish: top-k, then top-p, then one draw with the caller's uniform number per
//                       row (so runs are reproducible and the RNG stays on the host side).
// Reference twins: torch.argmax / torch.topk + the same inverse-CDF draw in the tests.
#include "topk.cuh"

using namespace rio;

template <typename L> __device__ void argmax_row(const L *__restrict__ logits, long long ld, int vocab, int *__restrict__ out) {
    __shared__ ArgMax scratch[32];
    const L *row = logits + blockIdx.x * ld;
    ArgMax best{-INFINITY, 0x7fffffff};
    for (int v = threadIdx.x; v < vocab; v += blockDim.x) {
        const float z = to_f32(row[v]);
        if (!isnan(z)) best = better(best, ArgMax{z, v});
    }
    best = block_argmax(best, scratch);
    if (threadIdx.x == 0) out[blockIdx.x] = best.index < vocab ? best.index : 0;
}

#define RIO_ARGMAX(NAME, L)                                                                                                 \
    extern "C" __global__ void __launch_bounds__(1024) NAME(const L *logits, long long ld, int vocab, int *out) { \
        argmax_row<L>(logits, ld, vocab, out);                                                                             \
    }
RIO_ARGMAX(argmax_rows_f32, float)
RIO_ARGMAX(argmax_rows_bf16, __nv_bfloat16)
RIO_ARGMAX(argmax_rows_f16, __half)

// grid (ceil(vocab / TOPK_CHUNK), rows), 256 threads: k <= TOPK_MAX candidates per chunk at
// cand[(row * chunks + chunk) * k].
#define RIO_TOPK_CHUNKS(NAME, L)                                                                                             \
    extern "C" __global__ void __launch_bounds__(256) NAME(const L *logits, long long ld, int vocab, float inv_temperature, int k, \
                                                           float *cand_value, int *cand_index) {                                \
        const long long at = ((long long)blockIdx.y * gridDim.x + blockIdx.x) * k;                                               \
        topk_chunk<L>(logits + blockIdx.y * ld, vocab, inv_temperature, k, cand_value + at, cand_index + at);                   \
    }
RIO_TOPK_CHUNKS(topk_chunks_f32, float)
RIO_TOPK_CHUNKS(topk_chunks_bf16, __nv_bfloat16)
RIO_TOPK_CHUNKS(topk_chunks_f16, __half)

// One block per row, 256 threads; dynamic shared memory: `candidates` floats. top_k in
// 1..=TOPK_MAX, top_p in (0, 1], uniform[b] in [0, 1).
extern "C" __global__ void __launch_bounds__(256) sample_topk_finish(const float *cand_value, const int *cand_index, int candidates, int top_k,
                                                                     float top_p, const float *uniform, int *out) {
    extern __shared__ float work[];
    __shared__ float value[TOPK_MAX];
    __shared__ int index[TOPK_MAX];
    const int b = blockIdx.x;
    block_topk_merge(cand_value + (long long)b * candidates, cand_index + (long long)b * candidates, candidates, top_k, work, value, index);
    __shared__ float p[TOPK_MAX];
    if (threadIdx.x == 0) {
        int n = 0;
        float total = 0.f;
        for (int j = 0; j < top_k; ++j) {
            p[j] = index[j] >= 0 ? __expf(value[j] - value[0]) : 0.f;
            if (index[j] >= 0) n = j + 1;
            total += p[j];
        }
        float before = 0.f;
        int np = 0;
        while (np < n && before < top_p * total) before += p[np++];
        const float target = uniform[b] * before;
        float cum = 0.f;
        int pick = 0;
        for (int j = 0; j < np; ++j) {
            cum += p[j];
            pick = j;
            if (cum > target) break;
        }
        out[b] = np > 0 ? index[pick] : 0;
    }
}
