// MoE dispatch: a stable counting sort of the routed (token, slot) pairs by expert. Reference twin:
// rio_cpu::moe::dispatch::dispatch (same `order` and `position`), numpy argsort(kind="stable").
//
// Three launches, no host synchronisation in between:
//   moe_count:   counts[e]  = number of slots routed to e           (counts zeroed by the host)
//   moe_offsets: offsets[e] = Σ_{e'<e} counts[e'], and tile_offsets[e] = Σ_{e'<e} ceil(counts[e'] / tile_rows):
//                the GEMM's row tiles, so one tile never mixes experts (padding to the GEMM tile)
//   moe_scatter: order[offsets[e] + r] = the r-th slot (in slot order) routed to e; position inverts order
#include "common.cuh"

using namespace rio;

extern "C" __global__ void moe_count(const uint32_t *__restrict__ experts, int num_slots, int num_experts, uint32_t *__restrict__ counts,
                                     int *__restrict__ bad) {
    for (int s = blockIdx.x * blockDim.x + threadIdx.x; s < num_slots; s += gridDim.x * blockDim.x) {
        const uint32_t e = experts[s];
        if (e < (uint32_t)num_experts) {
            atomicAdd(&counts[e], 1u);
        } else {
            atomicMin(bad, s);
        }
    }
}

// One warp: a running exclusive scan over chunks of 32 experts.
extern "C" __global__ void moe_offsets(const uint32_t *__restrict__ counts, int num_experts, int tile_rows, uint32_t *__restrict__ offsets,
                                       uint32_t *__restrict__ tile_offsets) {
    const int lane = threadIdx.x;
    uint32_t rows_before = 0, tiles_before = 0;
    for (int base = 0; base < num_experts; base += 32) {
        const int e = base + lane;
        const uint32_t c = e < num_experts ? counts[e] : 0u;
        uint32_t rows = c, tiles = (c + tile_rows - 1) / tile_rows;
#pragma unroll
        for (int o = 1; o < 32; o <<= 1) {
            const uint32_t r = __shfl_up_sync(FULL_MASK, rows, o), t = __shfl_up_sync(FULL_MASK, tiles, o);
            if (lane >= o) rows += r, tiles += t;
        }
        // rows/tiles are inclusive prefix sums within the chunk.
        if (e < num_experts) {
            offsets[e] = rows_before + rows - c;
            tile_offsets[e] = tiles_before + tiles - (c + tile_rows - 1) / tile_rows;
        }
        rows_before += __shfl_sync(FULL_MASK, rows, 31);
        tiles_before += __shfl_sync(FULL_MASK, tiles, 31);
    }
    if (lane == 0) {
        offsets[num_experts] = rows_before;
        tile_offsets[num_experts] = tiles_before;
    }
}

// One block per expert walks every slot in order; a ballot per warp and a prefix over the warps
// give each matching slot its rank, so the order within an expert is the slot order (stable).
extern "C" __global__ void __launch_bounds__(256) moe_scatter(const uint32_t *__restrict__ experts, int num_slots,
                                                              const uint32_t *__restrict__ offsets, uint32_t *__restrict__ order,
                                                              uint32_t *__restrict__ position) {
    __shared__ uint32_t warp_counts[32];
    const uint32_t e = blockIdx.x;
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, warps = blockDim.x >> 5;
    uint32_t next = offsets[e];
    if (offsets[e + 1] == next) return;
    for (int base = 0; base < num_slots; base += blockDim.x) {
        const int s = base + threadIdx.x;
        const bool mine = s < num_slots && experts[s] == e;
        const unsigned ballot = __ballot_sync(FULL_MASK, mine);
        if (lane == 0) warp_counts[warp] = __popc(ballot);
        __syncthreads();
        uint32_t before = 0, total = 0;
        for (int w = 0; w < warps; ++w) {
            before += w < warp ? warp_counts[w] : 0u;
            total += warp_counts[w];
        }
        if (mine) {
            const uint32_t p = next + before + __popc(ballot & ((1u << lane) - 1u));
            order[p] = (uint32_t)s;
            position[s] = p;
        }
        next += total;
        __syncthreads();
    }
}
