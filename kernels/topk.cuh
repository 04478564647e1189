// Top-K over long rows (a vocabulary of ~250k logits) in two launches, shared by sampling and
// soft-embedding decoding:
//   topk_chunks: grid (chunks, rows); each block keeps a chunk of TOPK_CHUNK scaled values
//                (logit / temperature) in shared memory and emits its K best (value, index),
//                best first, by K rounds of block argmax (ties to the lower index);
//   block_topk_merge: one block per row reads the chunks' candidates and selects the final K.
// K <= TOPK_MAX. The candidates of a row are `chunks * K` (value, index) pairs.
#pragma once
#include "common.cuh"

namespace rio {

constexpr int TOPK_CHUNK = 4096;
constexpr int TOPK_MAX = 64;

template <typename T>
__device__ void topk_chunk(const T *__restrict__ row, int n, float inv_temperature, int k, float *__restrict__ cand_value,
                           int *__restrict__ cand_index) {
    __shared__ float vals[TOPK_CHUNK];
    __shared__ ArgMax scratch[32];
    const int base = blockIdx.x * TOPK_CHUNK;
    const int len = min(TOPK_CHUNK, n - base);
    for (int i = threadIdx.x; i < TOPK_CHUNK; i += blockDim.x) {
        vals[i] = i < len ? to_f32(row[base + i]) * inv_temperature : -INFINITY;
    }
    __syncthreads();
    for (int j = 0; j < k; ++j) {
        ArgMax best{-INFINITY, 0x7fffffff};
        for (int i = threadIdx.x; i < len; i += blockDim.x)
            if (vals[i] != -INFINITY) best = better(best, ArgMax{vals[i], base + i});
        best = block_argmax(best, scratch);
        if (threadIdx.x == 0) {
            // Fewer than k finite values in this chunk: the rest are "no candidate" (-1).
            const bool found = best.index < n;
            cand_value[j] = found ? best.value : -INFINITY;
            cand_index[j] = found ? best.index : -1;
            if (found) vals[best.index - base] = -INFINITY;
        }
        __syncthreads();
    }
}

// Selects the best k of `count` candidates into out_value / out_index (best first). `work`
// holds `count` floats of shared memory.
__device__ inline void block_topk_merge(const float *__restrict__ cand_value, const int *__restrict__ cand_index, int count, int k,
                                        float *work, float *out_value, int *out_index) {
    __shared__ ArgMax scratch[32];
    for (int i = threadIdx.x; i < count; i += blockDim.x) work[i] = cand_index[i] >= 0 ? cand_value[i] : -INFINITY;
    __syncthreads();
    for (int j = 0; j < k; ++j) {
        // Ties between equal values go to the lower vocabulary index, as in one pass over the row.
        ArgMax best{-INFINITY, 0x7fffffff};
        int best_slot = -1;
        for (int i = threadIdx.x; i < count; i += blockDim.x) {
            const ArgMax c{work[i], cand_index[i]};
            if (c.value == -INFINITY) continue;  // masked, already taken, or no candidate
            if (best_slot < 0 || beats(c, best)) {
                best = c;
                best_slot = i;
            }
        }
        ArgMax red = block_argmax(best, scratch);
        // The thread that held the winner masks it.
        if (best_slot >= 0 && best.index == red.index) work[best_slot] = -INFINITY;
        if (threadIdx.x == 0) {
            out_value[j] = red.value;
            out_index[j] = red.index == 0x7fffffff ? -1 : red.index;
        }
        __syncthreads();
    }
}

}  // namespace rio
