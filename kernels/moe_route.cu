// MoE router, second half (spec section 5): softmax over all experts in fp32, top-k, optional
// renormalisation. The first half, `logits = x · routerᵀ`, runs on the grouped GEMM kernels with
// one group (moe_gemm.cu). Reference twin: rio_cpu::moe::router::select_experts (same order of
// operations, ties to the lower expert index), and torch.softmax + torch.topk in the tests.
//
// No assumption on E or k beyond E * 4 bytes of dynamic shared memory (E <= 12000) and k <= E.
#include "common.cuh"

using namespace rio;

// One block per token. `round_mode`: 0 keeps the fp32 logits, 1 rounds them to bf16 and 2 to f16
// first (transformers computes the router linear in the model dtype). A non-finite logit makes
// `*bad` hold the smallest flat index (token * E + expert) of one, so the host can name it; its
// token's weights become NaN.
extern "C" __global__ void __launch_bounds__(256) moe_topk_softmax(const float *__restrict__ logits, int num_experts, int k,
                                                                   int renormalize, int round_mode, uint32_t *__restrict__ experts,
                                                                   float *__restrict__ weights, int *__restrict__ bad) {
    extern __shared__ float probs[];
    __shared__ float scratch[32];
    __shared__ ArgMax arg_scratch[32];
    __shared__ int non_finite;
    const int t = blockIdx.x;
    const float *row = logits + (size_t)t * num_experts;
    if (threadIdx.x == 0) non_finite = 0x7fffffff;
    __syncthreads();

    float local_max = -INFINITY;
    for (int e = threadIdx.x; e < num_experts; e += blockDim.x) {
        float v = row[e];
        if (round_mode == 1) v = round_to<__nv_bfloat16>(v);
        if (round_mode == 2) v = round_to<__half>(v);
        if (!isfinite(v)) atomicMin(&non_finite, e);
        probs[e] = v;
        local_max = fmaxf(local_max, v);
    }
    const float max = block_max(local_max, scratch);
    float local_sum = 0.f;
    for (int e = threadIdx.x; e < num_experts; e += blockDim.x) {
        const float p = expf(probs[e] - max);
        probs[e] = p;
        local_sum += p;
    }
    const float sum = block_sum(local_sum, scratch);
    for (int e = threadIdx.x; e < num_experts; e += blockDim.x) probs[e] = probs[e] / sum;
    __syncthreads();

    // k rounds of block argmax; the chosen expert's probability is parked in `chosen` (thread 0
    // only) and masked out of `probs`.
    float chosen_sum = 0.f;
    for (int j = 0; j < k; ++j) {
        ArgMax best{-INFINITY, 0x7fffffff};
        for (int e = threadIdx.x; e < num_experts; e += blockDim.x) best = better(best, ArgMax{probs[e], e});
        best = block_argmax(best, arg_scratch);
        if (threadIdx.x == 0) {
            // All-masked rows (NaN everywhere) still yield k distinct slots: fall back to index j.
            const int e = best.index < num_experts ? best.index : j;
            experts[(size_t)t * k + j] = (uint32_t)e;
            weights[(size_t)t * k + j] = best.value;
            chosen_sum += best.value;
            probs[e] = -INFINITY;
        }
        __syncthreads();
    }
    if (threadIdx.x == 0) {
        const float scale = renormalize ? 1.f / chosen_sum : 1.f;
        for (int j = 0; j < k; ++j) {
            float *w = weights + (size_t)t * k + j;
            *w = non_finite != 0x7fffffff ? NAN : *w * scale;
        }
        if (non_finite != 0x7fffffff) atomicMin(bad, t * num_experts + non_finite);
    }
}
