// Grouped GEMM of the MoE experts (spec section 5): for every expert e, the rows p of its group
// (sorted positions offsets[e]..offsets[e+1]) get
//     plain:  C[p, n] = Σ_k A[row(p), k] · W0[e][n, k]                                  (n < N)
//     SwiGLU: C[p, j] = silu(Σ_k A[row(p), k] · W0[e][j, k]) · (Σ_k A[row(p), k] · W1[e][j, k])   (j < N)
// with fp32 accumulation. row(p) = a_rows[p] / a_div when a_rows is given (the token of a dispatched
// slot: a_rows = dispatch order, a_div = k, so x is read in place, no gathered copy), else p.
// W0/W1 are device arrays of per-expert matrix pointers with a shared row stride `ldw`, so the
// fused gate_up [E, 2I, H] and per-expert layouts both work without copying weights.
//
// Two paths, picked by the host:
//   - prefill (moe_gemm_tc_*): tensor cores (mma.sync m16n8k16, ldmatrix, 3-stage cp.async
//     pipeline), 128x128x32 tiles, 8 warps; row tiles come from dispatch's tile_offsets so a tile
//     never mixes experts. sm_80 instructions only, so the same code runs on Ampere and Hopper.
//   - decode (moe_gemm_rows_*): for a few rows per expert (1-64 tokens): each warp streams whole
//     weight rows once with 16-byte loads and applies them to up to 8 rows of A per pass, so each
//     active expert's weights are read from HBM once. Also the fp32 path.
// Reference twins: rio_cpu::moe::experts::grouped_gemm and torch matmuls in float64 in the tests.
#include "common.cuh"

using namespace rio;

namespace {

constexpr int BM = 128, BN = 128, BK = 32, STAGES = 3, THREADS = 256;
constexpr int TILE_ELEMS = BM * BK;  // A and B tiles have the same shape (BN == BM)

// Element (row, chunk of 8) of a [128][32] tile of 16-bit values, XOR-swizzled at 16-byte chunk
// granularity so ldmatrix (8 rows, same chunk) and cp.async hit 8 distinct bank groups.
__device__ __forceinline__ int swizzle(int row, int chunk) { return row * BK + ((chunk ^ ((row >> 1) & 3)) << 3); }

__device__ __forceinline__ void cp_async16(void *smem, const void *gmem, bool valid) {
    const unsigned dst = (unsigned)__cvta_generic_to_shared(smem);
    const int bytes = valid ? 16 : 0;  // 0: zero-fill, gmem is not read
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(dst), "l"(gmem), "r"(bytes));
}
__device__ __forceinline__ void cp_async_commit() { asm volatile("cp.async.commit_group;\n" ::); }
template <int N> __device__ __forceinline__ void cp_async_wait() { asm volatile("cp.async.wait_group %0;\n" ::"n"(N)); }

__device__ __forceinline__ void ldmatrix_x4(unsigned (&r)[4], const void *smem) {
    const unsigned a = (unsigned)__cvta_generic_to_shared(smem);
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];\n"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                 : "r"(a));
}

template <typename T> __device__ __forceinline__ void mma16816(float (&d)[4], const unsigned (&a)[4], unsigned b0, unsigned b1);
template <> __device__ __forceinline__ void mma16816<__nv_bfloat16>(float (&d)[4], const unsigned (&a)[4], unsigned b0, unsigned b1) {
    asm volatile("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};\n"
                 : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
                 : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}
template <> __device__ __forceinline__ void mma16816<__half>(float (&d)[4], const unsigned (&a)[4], unsigned b0, unsigned b1) {
    asm volatile("mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};\n"
                 : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
                 : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

template <typename OutT> __device__ __forceinline__ void store2(OutT *dst, float a, float b, bool both) {
    dst[0] = from_f32<OutT>(a);
    if (both) dst[1] = from_f32<OutT>(b);
}

struct GemmArgs {
    const void *a;
    long long lda;
    const uint32_t *a_rows;
    int a_div;
    const void *const *w0;
    const void *const *w1;
    long long ldw;
    int n;  // output columns
    int k;
    const uint32_t *offsets;       // [E + 1]
    const uint32_t *tile_offsets;  // [E + 1], row tiles of BM (prefill path only)
    int num_experts;
    void *c;
    long long ldc;
};

// B-tile row r of a SwiGLU block: groups of 16 rows alternate 8 gate rows and the 8 up rows of the
// same output columns, so each thread's accumulators for n-fragments 2q and 2q+1 hold gate and up
// of the same (row, column): the SwiGLU epilogue runs in registers.
__device__ __forceinline__ void swiglu_b_row(int r, int col0, int &out_col, bool &is_up) {
    out_col = col0 + (r >> 4) * 8 + (r & 7);
    is_up = (r & 8) != 0;
}

template <typename T, typename OutT, bool SWIGLU> __device__ void gemm_tc(const GemmArgs &g) {
    extern __shared__ __align__(128) unsigned char smem_raw[];
    T *smem = reinterpret_cast<T *>(smem_raw);  // STAGES x (A tile, B tile)

    // Which expert and which of its row tiles this block computes.
    const uint32_t tile = blockIdx.y;
    if (tile >= g.tile_offsets[g.num_experts]) return;
    int lo = 0, hi = g.num_experts;  // largest e with tile_offsets[e] <= tile
    while (hi - lo > 1) {
        const int mid = (lo + hi) >> 1;
        if (g.tile_offsets[mid] <= tile) lo = mid; else hi = mid;
    }
    const int e = lo;
    const uint32_t row0 = g.offsets[e] + (tile - g.tile_offsets[e]) * BM;
    const uint32_t row_end = g.offsets[e + 1];
    const int cols_per_block = SWIGLU ? BN / 2 : BN;
    const int col0 = blockIdx.x * cols_per_block;

    const T *a = static_cast<const T *>(g.a);
    const T *w0 = static_cast<const T *>(g.w0[e]);
    const T *w1 = SWIGLU ? static_cast<const T *>(g.w1[e]) : w0;

    // Each thread copies 2 chunks of 16 bytes of A and of B per k-tile: rows tid/4 and tid/4 + 64.
    const int tid = threadIdx.x;
    const int ld_chunk = tid & 3;
    const T *a_src[2];
    const T *b_src[2];
    bool a_ok[2], b_ok[2];
#pragma unroll
    for (int i = 0; i < 2; ++i) {
        const int r = (tid >> 2) + i * 64;
        const uint32_t p = row0 + r;
        a_ok[i] = p < row_end;
        const uint32_t arow = a_ok[i] ? (g.a_rows ? g.a_rows[p] / (uint32_t)g.a_div : p) : 0u;
        a_src[i] = a + (long long)arow * g.lda;
        int n;
        bool up = false;
        if (SWIGLU) swiglu_b_row(r, col0, n, up); else n = col0 + r;
        b_ok[i] = n < g.n;
        b_src[i] = (up ? w1 : w0) + (long long)(b_ok[i] ? n : 0) * g.ldw;
    }
    const int k_tiles = (g.k + BK - 1) / BK;
    auto load = [&](int kt, int stage) {
        T *sa = smem + stage * 2 * TILE_ELEMS;
        T *sb = sa + TILE_ELEMS;
        const int kk = kt * BK + ld_chunk * 8;
        const bool k_ok = kk < g.k;  // the host guarantees k % 8 == 0
#pragma unroll
        for (int i = 0; i < 2; ++i) {
            const int r = (tid >> 2) + i * 64;
            cp_async16(sa + swizzle(r, ld_chunk), a_src[i] + (k_ok ? kk : 0), a_ok[i] && k_ok);
            cp_async16(sb + swizzle(r, ld_chunk), b_src[i] + (k_ok ? kk : 0), b_ok[i] && k_ok);
        }
    };

    const int lane = tid & 31, warp = tid >> 5;
    const int wm = warp >> 2, wn = warp & 3;  // 2 x 4 warps, warp tile 64 x 32
    float acc[4][4][4] = {};

#pragma unroll
    for (int s = 0; s < STAGES - 1; ++s) {
        if (s < k_tiles) load(s, s);
        cp_async_commit();
    }
    for (int kt = 0; kt < k_tiles; ++kt) {
        cp_async_wait<STAGES - 2>();
        __syncthreads();
        if (kt + STAGES - 1 < k_tiles) load(kt + STAGES - 1, (kt + STAGES - 1) % STAGES);
        cp_async_commit();
        const T *sa = smem + (kt % STAGES) * 2 * TILE_ELEMS;
        const T *sb = sa + TILE_ELEMS;
#pragma unroll
        for (int ks = 0; ks < BK / 16; ++ks) {
            unsigned af[4][4], bf[2][4];
#pragma unroll
            for (int mi = 0; mi < 4; ++mi) {
                const int r = wm * 64 + mi * 16 + (lane & 15);
                ldmatrix_x4(af[mi], sa + swizzle(r, ks * 2 + (lane >> 4)));
            }
#pragma unroll
            for (int nj = 0; nj < 2; ++nj) {
                const int r = wn * 32 + nj * 16 + (lane & 7) + ((lane >> 4) << 3);
                ldmatrix_x4(bf[nj], sb + swizzle(r, ks * 2 + ((lane >> 3) & 1)));
            }
#pragma unroll
            for (int mi = 0; mi < 4; ++mi)
#pragma unroll
                for (int ni = 0; ni < 4; ++ni) mma16816<T>(acc[mi][ni], af[mi], bf[ni >> 1][(ni & 1) * 2], bf[ni >> 1][(ni & 1) * 2 + 1]);
        }
    }
    cp_async_wait<0>();

    // Epilogue straight from the mma accumulators: c0,c1 at (lane/4, 2*(lane%4) + {0,1}), c2,c3 eight rows down.
    OutT *c = static_cast<OutT *>(g.c);
    const bool pairs = (g.n & 1) == 0 && (g.ldc & 1) == 0;
#pragma unroll
    for (int mi = 0; mi < 4; ++mi) {
#pragma unroll
        for (int half = 0; half < 2; ++half) {
            const uint32_t p = row0 + wm * 64 + mi * 16 + (lane >> 2) + half * 8;
            if (p >= row_end) continue;
            OutT *crow = c + (long long)p * g.ldc;
            if (SWIGLU) {
#pragma unroll
                for (int q = 0; q < 2; ++q) {
                    const int col = col0 + (wn * 2 + q) * 8 + (lane & 3) * 2;
                    const float *gate = &acc[mi][2 * q][half * 2];
                    const float *up = &acc[mi][2 * q + 1][half * 2];
                    // The activation is rounded to the weight dtype before the down projection, as
                    // transformers and the CPU backend do.
                    const float h0 = silu(round_to<T>(gate[0])) * round_to<T>(up[0]);
                    const float h1 = silu(round_to<T>(gate[1])) * round_to<T>(up[1]);
                    if (col < g.n) {
                        if (pairs) store2(crow + col, h0, h1, true);
                        else store2(crow + col, h0, h1, col + 1 < g.n);
                    }
                }
            } else {
#pragma unroll
                for (int ni = 0; ni < 4; ++ni) {
                    const int col = col0 + wn * 32 + ni * 8 + (lane & 3) * 2;
                    if (col < g.n) store2(crow + col, acc[mi][ni][half * 2], acc[mi][ni][half * 2 + 1], col + 1 < g.n);
                }
            }
        }
    }
}

// Decode path: block = 8 warps; blockIdx.y = expert; each warp owns one output column (SwiGLU: the
// gate and up rows j) or two (plain: rows n, n+1) and applies them to MR rows of A per pass.
constexpr int MR = 8;

template <typename T> struct Vec {
    static constexpr int N = 16 / sizeof(T);
};

template <typename T> __device__ __forceinline__ void load_vec(float (&out)[Vec<T>::N], const T *src) {
    const uint4 raw = __ldg(reinterpret_cast<const uint4 *>(src));
    const T *v = reinterpret_cast<const T *>(&raw);
#pragma unroll
    for (int i = 0; i < Vec<T>::N; ++i) out[i] = to_f32(v[i]);
}

// Streamed once: weights bypass L1 (they are not reused by this block).
template <typename T> __device__ __forceinline__ void load_vec_stream(float (&out)[Vec<T>::N], const T *src) {
    uint4 raw;
    asm volatile("ld.global.nc.L1::no_allocate.v4.u32 {%0,%1,%2,%3}, [%4];\n"
                 : "=r"(raw.x), "=r"(raw.y), "=r"(raw.z), "=r"(raw.w)
                 : "l"(src));
    const T *v = reinterpret_cast<const T *>(&raw);
#pragma unroll
    for (int i = 0; i < Vec<T>::N; ++i) out[i] = to_f32(v[i]);
}

template <typename T, typename OutT, bool SWIGLU> __device__ void gemm_rows(const GemmArgs &g, int vectorised) {
    const int e = blockIdx.y;
    const uint32_t begin = g.offsets[e], end = g.offsets[e + 1];
    if (begin == end) return;
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    constexpr int R = 2;  // weight rows per warp
    const int cols_per_warp = SWIGLU ? 1 : R;
    const int col = (blockIdx.x * (blockDim.x >> 5) + warp) * cols_per_warp;
    if (col >= g.n) return;
    const T *a = static_cast<const T *>(g.a);
    const T *wrow[R];
    bool wok[R];
    if (SWIGLU) {
        wrow[0] = static_cast<const T *>(g.w0[e]) + (long long)col * g.ldw;
        wrow[1] = static_cast<const T *>(g.w1[e]) + (long long)col * g.ldw;
        wok[0] = wok[1] = true;
    } else {
#pragma unroll
        for (int r = 0; r < R; ++r) {
            wok[r] = col + r < g.n;
            wrow[r] = static_cast<const T *>(g.w0[e]) + (long long)(wok[r] ? col + r : col) * g.ldw;
        }
    }
    OutT *c = static_cast<OutT *>(g.c);
    constexpr int V = Vec<T>::N;
    for (uint32_t p0 = begin; p0 < end; p0 += MR) {
        const int m = min((uint32_t)MR, end - p0);
        const T *arow[MR];
#pragma unroll
        for (int i = 0; i < MR; ++i) {
            const uint32_t p = p0 + min(i, m - 1);
            const uint32_t r = g.a_rows ? g.a_rows[p] / (uint32_t)g.a_div : p;
            arow[i] = a + (long long)r * g.lda;
        }
        float acc[R][MR] = {};
        if (vectorised) {
            for (int kk = lane * V; kk < g.k; kk += 32 * V) {
                float w[R][V];
#pragma unroll
                for (int r = 0; r < R; ++r) load_vec_stream<T>(w[r], wrow[r] + kk);
#pragma unroll
                for (int i = 0; i < MR; ++i) {
                    if (i < m) {
                        float x[V];
                        load_vec<T>(x, arow[i] + kk);
#pragma unroll
                        for (int r = 0; r < R; ++r)
#pragma unroll
                            for (int v = 0; v < V; ++v) acc[r][i] = fmaf(w[r][v], x[v], acc[r][i]);
                    }
                }
            }
        } else {
            for (int kk = lane; kk < g.k; kk += 32) {
#pragma unroll
                for (int i = 0; i < MR; ++i) {
                    if (i < m) {
                        const float x = to_f32(arow[i][kk]);
#pragma unroll
                        for (int r = 0; r < R; ++r) acc[r][i] = fmaf(to_f32(wrow[r][kk]), x, acc[r][i]);
                    }
                }
            }
        }
#pragma unroll
        for (int i = 0; i < MR; ++i) {
#pragma unroll
            for (int r = 0; r < R; ++r) acc[r][i] = warp_sum(acc[r][i]);
        }
        if (lane == 0) {
            for (int i = 0; i < m; ++i) {
                OutT *crow = c + (long long)(p0 + i) * g.ldc;
                if (SWIGLU) {
                    crow[col] = from_f32<OutT>(silu(round_to<T>(acc[0][i])) * round_to<T>(acc[1][i]));
                } else {
#pragma unroll
                    for (int r = 0; r < R; ++r)
                        if (wok[r]) crow[col + r] = from_f32<OutT>(acc[r][i]);
                }
            }
        }
    }
}

}  // namespace

#define RIO_GEMM_TC(NAME, T, OUT, SWIGLU) \
    extern "C" __global__ void __launch_bounds__(THREADS) NAME(GemmArgs g) { gemm_tc<T, OUT, SWIGLU>(g); }
#define RIO_GEMM_ROWS(NAME, T, OUT, SWIGLU) \
    extern "C" __global__ void __launch_bounds__(256) NAME(GemmArgs g, int vectorised) { gemm_rows<T, OUT, SWIGLU>(g, vectorised); }

// Name: moe_gemm_{tc,rows}_{weight dtype}_{plain output dtype | swiglu}. SwiGLU outputs the
// weight dtype (the activation feeds the down projection).
RIO_GEMM_TC(moe_gemm_tc_bf16_f32, __nv_bfloat16, float, false)
RIO_GEMM_TC(moe_gemm_tc_bf16_bf16, __nv_bfloat16, __nv_bfloat16, false)
RIO_GEMM_TC(moe_gemm_tc_bf16_swiglu, __nv_bfloat16, __nv_bfloat16, true)
RIO_GEMM_TC(moe_gemm_tc_f16_f32, __half, float, false)
RIO_GEMM_TC(moe_gemm_tc_f16_f16, __half, __half, false)
RIO_GEMM_TC(moe_gemm_tc_f16_swiglu, __half, __half, true)

RIO_GEMM_ROWS(moe_gemm_rows_bf16_f32, __nv_bfloat16, float, false)
RIO_GEMM_ROWS(moe_gemm_rows_bf16_bf16, __nv_bfloat16, __nv_bfloat16, false)
RIO_GEMM_ROWS(moe_gemm_rows_bf16_swiglu, __nv_bfloat16, __nv_bfloat16, true)
RIO_GEMM_ROWS(moe_gemm_rows_f16_f32, __half, float, false)
RIO_GEMM_ROWS(moe_gemm_rows_f16_f16, __half, __half, false)
RIO_GEMM_ROWS(moe_gemm_rows_f16_swiglu, __half, __half, true)
RIO_GEMM_ROWS(moe_gemm_rows_f32_f32, float, float, false)
RIO_GEMM_ROWS(moe_gemm_rows_f32_swiglu, float, float, true)
