//! Grouped GEMM over the experts' row blocks: `gate_up` with a fused SwiGLU, then `down`.
//!
//! Work is split into (expert, block of output features) tasks spread over the pool, so each
//! active expert's weights are read once, in parallel, however many rows the expert has. The
//! row count picks the kernel per expert: a few rows (decode) stream the weights through
//! dot products; many rows (prefill) are packed once and run on AMX tiles over the weights in
//! place (see `gemm::amx`).
use rayon::prelude::*;
use rio_core::moe::ExpertMats;
use rio_core::{bf16, DType, Tensor};

use super::combine::RowTargets;
use crate::features::{self, Isa};
use crate::gemm::{self, MatRef, SyncPtr};
use crate::scratch::{Plain, Scratch};

/// Intermediate features per gate/up task (that many gate rows and as many up rows). A task's
/// first weight group is staged before its tiles start (the rest while they run), so tasks
/// are a few groups long; still many tasks per core at decode (8 experts x 4 blocks).
const GATE_UP_BLOCK: usize = 128;
/// Output features per down (or plain grouped GEMM) task: 8 tasks for a 2048-wide layer.
const DOWN_BLOCK: usize = 256;

/// `acc[targets.token[r]] += targets.weight[r] · down_e( silu(xs_r · gate_eᵀ) ⊙ (xs_r · up_eᵀ) )`
/// for every row r of `xs [S, H]`, where expert e owns rows `offsets[e]..offsets[e+1]`: the
/// experts and the combine in one pass. The SwiGLU activation is rounded to the dtype of `xs`
/// (bf16 for bf16 weights, as in transformers); `acc [T, H]` accumulates in f32.
pub fn swiglu_experts(xs: &Tensor, experts: &[ExpertMats<'_>], offsets: &[u32], targets: &RowTargets, acc: &mut [f32]) {
    swiglu_experts_with(features::active_isa(), xs, experts, offsets, targets, acc)
}

/// [`swiglu_experts`] with the kernels of instruction set `isa` (capped at what the machine has).
pub fn swiglu_experts_with(isa: Isa, xs: &Tensor, experts: &[ExpertMats<'_>], offsets: &[u32], targets: &RowTargets, acc: &mut [f32]) {
    let x = MatRef::from_tensor(&xs.view(), "xs").expect("owned tensors are contiguous");
    swiglu_experts_rows(isa, x, None, experts, offsets, targets, acc)
}

/// Rows of a grouped GEMM's tile-path experts, packed straight from where they lie: position p
/// is row `order[p] / per_row` of `source` (the dispatch order), so they need no gathered copy.
#[derive(Clone, Copy)]
pub(crate) struct Direct<'a> {
    pub source: MatRef<'a>,
    pub order: &'a [u32],
    pub per_row: usize,
}

/// Whether [`swiglu_experts_rows`] takes a [`Direct`] over `source`: bf16 rows on AMX, and no
/// intermediate features left over for the dot-product kernel (which reads the plain rows).
pub(crate) fn packs_direct(isa: Isa, source: MatRef<'_>, experts: &[ExpertMats<'_>]) -> bool {
    let isa = isa.min(features::detected().best_isa());
    experts.first().is_some_and(|m| uses_tiles(isa, source.dtype, m.gate.dtype(), gemm::AMX_MIN_ROWS) && m.gate.shape()[0] % 16 == 0)
}

/// [`swiglu_experts_with`] on rows `x` (bf16 or f32) in any buffer. With `direct` (see
/// [`packs_direct`]), `x` need only hold the rows of experts off the tile path ([`uses_tiles`]).
pub(crate) fn swiglu_experts_rows(
    isa: Isa,
    x: MatRef<'_>,
    direct: Option<Direct<'_>>,
    experts: &[ExpertMats<'_>],
    offsets: &[u32],
    targets: &RowTargets,
    acc: &mut [f32],
) {
    let isa = isa.min(features::detected().best_isa());
    let s = x.rows;
    let mat = |t, arg| MatRef::from_tensor(t, arg).expect("expert weights were validated");
    let gates: Vec<MatRef<'_>> = experts.iter().map(|m| mat(&m.gate, "gate")).collect();
    let ups: Vec<MatRef<'_>> = experts.iter().map(|m| mat(&m.up, "up")).collect();
    let downs: Vec<MatRef<'_>> = experts.iter().map(|m| mat(&m.down, "down_proj")).collect();
    let inter = gates.first().map_or(0, |g| g.rows);
    // gate_up writes every element of the activation.
    crate::threads::pool().install(|| match x.dtype {
        DType::BF16 => {
            let mut act = Scratch::<bf16>::stale(s * inter);
            gate_up::<bf16>(isa, x, direct, &gates, &ups, offsets, &mut act);
            down_combine(isa, MatRef::from_slice(&act, s, inter), &downs, offsets, targets, acc)
        }
        _ => {
            let mut act = Scratch::<f32>::stale(s * inter);
            gate_up::<f32>(isa, x, direct, &gates, &ups, offsets, &mut act);
            down_combine(isa, MatRef::from_slice(&act, s, inter), &downs, offsets, targets, acc)
        }
    });
}

/// The down GEMM fused with the combine. Tasks own blocks of output features across all experts,
/// so no two tasks add into the same element, and each down matrix is still read once.
fn down_combine(isa: Isa, act: MatRef<'_>, downs: &[MatRef<'_>], offsets: &[u32], targets: &RowTargets, acc: &mut [f32]) {
    let hidden = downs.first().map_or(0, |w| w.rows);
    check_groups(act, downs, offsets, hidden, act.rows * hidden);
    assert!(targets.token.len() == act.rows && targets.weight.len() == act.rows, "one target per row");
    assert!(targets.token.iter().all(|&t| (t as usize + 1) * hidden <= acc.len()), "targets inside acc");
    let packed = pack_experts(isa, act, None, downs, offsets);
    let active: Vec<usize> = (0..downs.len()).filter(|&e| offsets[e + 1] > offsets[e]).collect();
    let most_rows = active.iter().map(|&e| (offsets[e + 1] - offsets[e]) as usize).max().unwrap_or(0);
    let acc = SyncPtr(acc.as_mut_ptr());
    (0..hidden).step_by(DOWN_BLOCK).collect::<Vec<_>>().into_par_iter().for_each(|n0| {
        let len = DOWN_BLOCK.min(hidden - n0);
        // The GEMM writes every element of ys it reads back.
        let mut ys = Scratch::<f32>::stale(most_rows * len);
        for &e in &active {
            let rows = expert_rows(act, offsets, e);
            // SAFETY: ys holds rows x len; shapes checked above.
            unsafe { matmul_rows(isa, rows, packed[e].as_ref(), downs[e].rows_range(n0, len), ys.as_mut_ptr(), len) };
            for (r, y) in ys.chunks_exact(len).take(rows.rows).enumerate() {
                let row = offsets[e] as usize + r;
                let w = targets.weight[row];
                // SAFETY: columns n0..n0+len of any row belong to this task alone; rows checked above.
                let dst = unsafe { std::slice::from_raw_parts_mut(acc.get().add(targets.token[row] as usize * hidden + n0), len) };
                dst.iter_mut().zip(y).for_each(|(d, &v)| *d += w * v);
            }
        }
    });
}

/// `out[rows of e] = x[rows of e] · weights[e]ᵀ` for every expert, in parallel on the pool.
pub fn grouped_gemm(x: MatRef<'_>, weights: &[MatRef<'_>], offsets: &[u32], out: &mut [f32]) {
    grouped_gemm_with(features::active_isa(), x, weights, offsets, out)
}

/// [`grouped_gemm`] with the kernels of instruction set `isa` (capped at what the machine has).
pub fn grouped_gemm_with(isa: Isa, x: MatRef<'_>, weights: &[MatRef<'_>], offsets: &[u32], out: &mut [f32]) {
    let isa = isa.min(features::detected().best_isa());
    let n = weights.first().map_or(0, |w| w.rows);
    check_groups(x, weights, offsets, n, out.len());
    let out = SyncPtr(out.as_mut_ptr());
    crate::threads::pool().install(|| {
        let packed = pack_experts(isa, x, None, weights, offsets);
        tasks(offsets, n, DOWN_BLOCK).into_par_iter().for_each(|(e, n0)| {
            let rows = expert_rows(x, offsets, e);
            let w = weights[e].rows_range(n0, DOWN_BLOCK.min(n - n0));
            // SAFETY: tasks write disjoint (row, column) ranges of `out`, sized by check_groups.
            unsafe { matmul_rows(isa, rows, packed[e].as_ref(), w, out.get().add(offsets[e] as usize * n + n0), n) }
        });
    });
}

fn check_groups(x: MatRef<'_>, weights: &[MatRef<'_>], offsets: &[u32], n: usize, out_len: usize) {
    assert_eq!(offsets.len(), weights.len() + 1, "one offset per expert, plus the end");
    assert_eq!(*offsets.last().unwrap() as usize, x.rows, "offsets end at the rows of x");
    assert!(offsets.windows(2).all(|w| w[0] <= w[1]), "offsets rise");
    assert!(weights.iter().all(|w| w.rows == n && w.cols == x.cols && w.dtype == weights[0].dtype), "experts' matrices agree");
    assert!(out_len >= x.rows * n, "out holds [rows of x, N]");
}

/// The rows of expert `e`.
fn expert_rows<'a>(x: MatRef<'a>, offsets: &[u32], e: usize) -> MatRef<'a> {
    x.rows_range(offsets[e] as usize, (offsets[e + 1] - offsets[e]) as usize)
}

/// (expert, first output feature) for every expert with rows, `block` features each.
fn tasks(offsets: &[u32], n: usize, block: usize) -> Vec<(usize, usize)> {
    let active = offsets.windows(2).enumerate().filter(|(_, w)| w[1] > w[0]).map(|(e, _)| e);
    active.flat_map(|e| (0..n).step_by(block).map(move |n0| (e, n0))).collect()
}

#[cfg(target_arch = "x86_64")]
type PackedRows = gemm::amx::Packed;
#[cfg(not(target_arch = "x86_64"))]
type PackedRows = ();

/// Whether an expert with `rows` rows runs on AMX tiles.
pub(crate) fn uses_tiles(isa: Isa, x: DType, w: DType, rows: usize) -> bool {
    cfg!(target_arch = "x86_64") && isa == Isa::Amx && x == DType::BF16 && w == DType::BF16 && rows >= gemm::AMX_MIN_ROWS
}

/// Each tile-path expert's rows, packed once for all its tasks (from `direct` when given).
fn pack_experts(isa: Isa, x: MatRef<'_>, direct: Option<Direct<'_>>, weights: &[MatRef<'_>], offsets: &[u32]) -> Vec<Option<PackedRows>> {
    (0..weights.len())
        .into_par_iter()
        .map(|e| {
            let rows = expert_rows(x, offsets, e);
            if !uses_tiles(isa, x.dtype, weights[e].dtype, rows.rows) {
                return None;
            }
            #[cfg(target_arch = "x86_64")]
            {
                let mut p = gemm::amx::Packed::new();
                match direct {
                    Some(d) => p.pack_rows(d.source, rows.rows, |i| d.order[offsets[e] as usize + i] as usize / d.per_row),
                    None => p.pack(rows),
                }
                Some(p)
            }
            #[cfg(not(target_arch = "x86_64"))]
            None
        })
        .collect()
}

/// `out = x · wᵀ` on the calling thread, from the packed rows when there are some.
///
/// # Safety
/// As `gemm::matmul_nt_raw`.
unsafe fn matmul_rows(isa: Isa, x: MatRef<'_>, packed: Option<&PackedRows>, w: MatRef<'_>, out: *mut f32, ldo: usize) {
    match packed {
        #[cfg(target_arch = "x86_64")]
        Some(p) => gemm::amx::matmul_nt_packed(x, p, w, out, ldo),
        _ => gemm::matmul_nt_raw(isa, x, w, out, ldo),
    }
}

trait ActElement: Plain + Send + Sync {
    fn from_f32(v: f32) -> Self;

    /// `dst[t * ld + j] = silu(g[j * 16 + t]) · u[j * 16 + t]` for tokens t < `rows`, features
    /// j < 16: the activation from a gate and an up C tile (outᵀ) of the AMX path.
    ///
    /// # Safety
    /// `dst` must be valid for those writes, and AMX on (so AVX-512F) for the bf16 kernel.
    unsafe fn store_swiglu_tile(g: &[f32; 256], u: &[f32; 256], dst: *mut Self, ld: usize, rows: usize) {
        for t in 0..rows {
            for j in 0..16 {
                *dst.add(t * ld + j) = Self::from_f32(silu(g[j * 16 + t]) * u[j * 16 + t]);
            }
        }
    }
}
impl ActElement for f32 {
    fn from_f32(v: f32) -> Self {
        v
    }
}
impl ActElement for bf16 {
    fn from_f32(v: f32) -> Self {
        bf16::from_f32(v)
    }

    #[cfg(target_arch = "x86_64")]
    unsafe fn store_swiglu_tile(g: &[f32; 256], u: &[f32; 256], dst: *mut Self, ld: usize, rows: usize) {
        super::swiglu_tile::store_swiglu_bf16(g, u, dst, ld, rows)
    }
}

fn silu(v: f32) -> f32 {
    v / (1.0 + (-v).exp())
}

/// `act[rows of e] = silu(x_e · gate_eᵀ) ⊙ (x_e · up_eᵀ)`, in (expert, feature block) tasks.
fn gate_up<T: ActElement>(
    isa: Isa,
    x: MatRef<'_>,
    direct: Option<Direct<'_>>,
    gates: &[MatRef<'_>],
    ups: &[MatRef<'_>],
    offsets: &[u32],
    act: &mut [T],
) {
    let inter = gates.first().map_or(0, |g| g.rows);
    check_groups(x, gates, offsets, inter, act.len());
    check_groups(x, ups, offsets, inter, act.len());
    let packed = pack_experts(isa, x, direct, gates, offsets);
    let act = SyncPtr(act.as_mut_ptr());
    tasks(offsets, inter, GATE_UP_BLOCK).into_par_iter().for_each(|(e, n0)| {
        let rows = expert_rows(x, offsets, e);
        let len = GATE_UP_BLOCK.min(inter - n0);
        // Writes (row r of the expert, feature n) of `act`: rows and features are this task's own.
        let at = |r: usize, n: usize| unsafe { act.get().add((offsets[e] as usize + r) * inter + n) };
        let emit = |r: usize, n: usize, g: f32, u: f32| unsafe { *at(r, n) = T::from_f32(silu(g) * u) };
        let emit_tile = |r: usize, n: usize, cg: &[f32; 256], cu: &[f32; 256], count: usize| unsafe {
            T::store_swiglu_tile(cg, cu, at(r, n), inter, count)
        };
        let (gate, up) = (gates[e].rows_range(n0, len), ups[e].rows_range(n0, len));
        // SAFETY: shapes checked by check_groups; `emit` and `emit_tile` stay inside the task's block.
        unsafe { gate_up_block(isa, rows, packed[e].as_ref(), gate, up, n0, emit, emit_tile) }
    });
}

/// Calls `emit(row, n0 + j, g, u)` for every row of `x` and feature j of the `gate`/`up` rows;
/// on AMX tiles, `emit_tile(first row, n0 + j0, gate tile, up tile, rows)` instead for each pair
/// of C tiles (16 features from j0 x up to 16 rows, outᵀ).
#[allow(clippy::too_many_arguments)]
unsafe fn gate_up_block(
    isa: Isa,
    x: MatRef<'_>,
    packed: Option<&PackedRows>,
    gate: MatRef<'_>,
    up: MatRef<'_>,
    n0: usize,
    emit: impl Fn(usize, usize, f32, f32),
    emit_tile: impl Fn(usize, usize, &[f32; 256], &[f32; 256], usize),
) {
    let mut done = 0;
    #[cfg(target_arch = "x86_64")]
    if let Some(p) = packed {
        use gemm::amx;
        const G: usize = 16;
        done = gate.rows / G * G;
        let _tiles = amx::Tiles::configure();
        if amx::takes_direct(p, x.cols) && gate.row_stride == up.row_stride {
            // A few rows: the gate and up tiles straight from the weights (see `tiles_direct`).
            for j0 in (0..done).step_by(G) {
                let more = j0 + 2 * G <= done;
                let next = [more.then(|| gate.rows_range(j0 + G, G)), more.then(|| up.rows_range(j0 + G, G))];
                amx::tiles_direct(gate.rows_range(j0, G), Some(up.rows_range(j0, G)), p, next, |b, cg, cu| {
                    emit_tile(b * G, n0 + j0, cg, cu, G.min(x.rows - b * G))
                });
            }
        } else {
            amx::Stage::with(|stage| {
                let start = |stage: &mut amx::Stage, j0: usize| match j0 < done {
                    true => stage.start(&[gate.rows_range(j0, G), up.rows_range(j0, G)]),
                    false => amx::StageCopy::none(),
                };
                for blocks in p.chunks() {
                    let first = start(stage, 0);
                    // SAFETY (flip): each flip takes the copy started just before it.
                    let mut a = stage.flip(first);
                    for j0 in (0..done).step_by(G) {
                        let mut next = start(stage, j0 + G);
                        amx::tiles::<true>(a, p, blocks.clone(), &mut next, |b, cg, cu| {
                            emit_tile(b * G, n0 + j0, cg, cu, G.min(x.rows - b * G))
                        });
                        a = stage.flip(next);
                    }
                }
            });
        }
    }
    let _ = (packed, &emit_tile);
    if done < gate.rows {
        let len = gate.rows - done;
        let mut g = vec![0f32; x.rows * len];
        let mut u = vec![0f32; x.rows * len];
        gemm::matmul_nt_raw(isa, x, gate.rows_range(done, len), g.as_mut_ptr(), len);
        gemm::matmul_nt_raw(isa, x, up.rows_range(done, len), u.as_mut_ptr(), len);
        for r in 0..x.rows {
            for j in 0..len {
                emit(r, n0 + done + j, g[r * len + j], u[r * len + j]);
            }
        }
    }
}
