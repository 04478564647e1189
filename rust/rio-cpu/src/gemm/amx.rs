//! AMX-BF16 kernel.
//!
//! The weights `[N, K]` bf16 are the "A" tiles (16 rows x 32 columns); the activation rows are
//! packed once per call into the VNNI "B" layout (per block of 16 rows: K/2 lines of 16 rows x
//! 2 bf16), so each C tile holds outᵀ for 16 weight rows x 16 activation rows. A 2x2 block of C
//! tiles (two weight row groups x two activation blocks) uses each loaded tile twice.
//!
//! The weights stay where they are (mmap'd checkpoints); each group of 32 rows is staged into a
//! small tile-ordered buffer (see [`Stage`]), copied a few lines per step while the tiles run
//! on the previous group; with only one or two blocks of activation rows, where no A tile is
//! used twice (and whole column steps), the tiles load straight from the weights instead (see
//! [`tiles_direct`]). Tails: activation rows and the last partial column step are zero-padded
//! (in the packing and the stage); weight rows past the last group of 16 go to the `vdpbf16ps`
//! kernel.
use std::arch::asm;

use super::{avx512_bf16, MatRef};
use crate::scratch::Scratch;

const TILE_K: usize = 32;
const TILE_ROWS: usize = 16;
/// Bytes of packed activations kept per chunk, so a chunk stays in L2 next to a weight panel.
const PACKED_CHUNK_BYTES: usize = 1 << 20;

/// One 64-byte tile row.
#[derive(Clone, Copy)]
#[repr(C, align(64))]
pub struct Line([u32; 16]);

const ZERO_LINE: Line = Line([0; 16]);

// SAFETY: plain numbers, 64-byte aligned.
unsafe impl crate::scratch::Plain for Line {}

#[repr(C, align(64))]
struct TileConfig {
    palette: u8,
    start_row: u8,
    reserved: [u8; 14],
    colsb: [u16; 16],
    rows: [u8; 16],
}

/// Eight 16 x 64-byte tiles: tmm0..3 accumulate C, tmm4/5 hold A, tmm6/7 hold B. Tiles 8..15
/// stay zero (non-zero entries for them fault).
static CONFIG: TileConfig = TileConfig {
    palette: 1,
    start_row: 0,
    reserved: [0; 14],
    colsb: [64, 64, 64, 64, 64, 64, 64, 64, 0, 0, 0, 0, 0, 0, 0, 0],
    rows: [16, 16, 16, 16, 16, 16, 16, 16, 0, 0, 0, 0, 0, 0, 0, 0],
};

/// Tile state belongs to the thread: configured on creation, released on drop. Never nest two.
pub struct Tiles(());

impl Tiles {
    /// # Safety
    /// AMX must be available and permitted (`Isa::Amx`).
    pub unsafe fn configure() -> Tiles {
        asm!("ldtilecfg [{0}]", in(reg) &CONFIG, options(nostack, readonly));
        Tiles(())
    }
}

impl Drop for Tiles {
    fn drop(&mut self) {
        // SAFETY: tiles were configured by `configure`.
        unsafe { asm!("tilerelease", options(nostack, nomem)) }
    }
}

/// Activation rows in the VNNI "B" layout, 16 rows per block.
pub struct Packed {
    lines: Scratch<Line>,
    rows: usize,
    ksteps: usize,
}

impl Packed {
    pub fn new() -> Packed {
        Packed { lines: Scratch::stale(0), rows: 0, ksteps: 0 }
    }

    /// Packs every row of `x` (bf16), into a buffer from the scratch pool.
    pub fn pack(&mut self, x: MatRef<'_>) {
        self.pack_rows(x, x.rows, |p| p)
    }

    /// Packs rows `row_of(0..count)` of `x` (bf16) in that order, straight from `x` (so rows in
    /// dispatch order need no gathered copy first).
    pub fn pack_rows(&mut self, x: MatRef<'_>, count: usize, row_of: impl Fn(usize) -> usize) {
        assert_eq!(x.dtype, rio_core::DType::BF16);
        self.rows = count;
        self.ksteps = x.cols.div_ceil(TILE_K);
        let lines_per_block = self.ksteps * TILE_ROWS;
        self.lines = Scratch::stale(0); // back to the pool first, so it may be the one taken
        self.lines = Scratch::stale(self.blocks() * lines_per_block);
        let pairs = x.cols / 2;
        for (b, block) in self.lines.chunks_exact_mut(lines_per_block).enumerate() {
            let valid = TILE_ROWS.min(count - b * TILE_ROWS);
            let rows: [usize; TILE_ROWS] = std::array::from_fn(|t| if t < valid { row_of(b * TILE_ROWS + t) } else { 0 });
            assert!(rows[..valid].iter().all(|&r| r < x.rows), "packed rows lie inside x");
            let offsets = rows.map(|r| (r * x.row_stride * 2) as i64);
            // SAFETY: `block` has a line for every pair; the gathers read pairs of valid rows only.
            unsafe { gather_pairs(x.as_ptr(), &offsets, valid, &mut block[..pairs]) };
            // The buffer is stale: zero the padding past the pairs (the odd column, the last step).
            block[pairs..].fill(ZERO_LINE);
            if x.cols % 2 == 1 {
                for (t, &r) in rows[..valid].iter().enumerate() {
                    block[pairs].0[t] = x.row::<rio_core::bf16>(r)[x.cols - 1].to_bits() as u32;
                }
            }
        }
    }

    pub fn blocks(&self) -> usize {
        self.rows.div_ceil(TILE_ROWS)
    }

    /// The blocks in runs (an even number each) of at most [`PACKED_CHUNK_BYTES`], so the run
    /// the tiles sweep for each staged weight group stays in L2 however many rows there are.
    pub fn chunks(&self) -> impl Iterator<Item = std::ops::Range<usize>> {
        let block_bytes = (self.ksteps * TILE_ROWS * 64).max(1);
        let per_chunk = (PACKED_CHUNK_BYTES / block_bytes / 2 * 2).max(2);
        let blocks = self.blocks();
        (0..blocks).step_by(per_chunk).map(move |b| b..(b + per_chunk).min(blocks))
    }

    fn block(&self, b: usize) -> *const Line {
        self.lines[b * self.ksteps * TILE_ROWS..].as_ptr()
    }
}

impl Default for Packed {
    fn default() -> Self {
        Packed::new()
    }
}

/// `lines[p]` = column pair p (two bf16 as one u32) of the first `valid` rows (at most 16), row
/// t starting `offsets[t]` bytes after `base`: two 8-lane gathers per line; other lanes zero.
///
/// # Safety
/// `lines.len()` pairs must lie inside each valid row; needs AVX-512F.
#[target_feature(enable = "avx512f")]
unsafe fn gather_pairs(base: *const u8, offsets: &[i64; 16], valid: usize, lines: &mut [Line]) {
    use std::arch::x86_64::*;
    let (low, high) = (_mm512_loadu_si512(offsets.as_ptr() as *const _), _mm512_loadu_si512(offsets[8..].as_ptr() as *const _));
    let valid = (1u32 << valid) - 1;
    let (valid_low, valid_high) = (valid as __mmask8, (valid >> 8) as __mmask8);
    for (p, line) in lines.iter_mut().enumerate() {
        let at = base.add(4 * p) as *const i32;
        let lo = _mm512_mask_i64gather_epi32::<1>(_mm256_setzero_si256(), valid_low, low, at);
        let hi = _mm512_mask_i64gather_epi32::<1>(_mm256_setzero_si256(), valid_high, high, at);
        let dst = line.0.as_mut_ptr() as *mut __m256i;
        _mm256_store_si256(dst, lo);
        _mm256_store_si256(dst.add(1), hi);
    }
}

/// `out = x · wᵀ` for bf16 `x` and `w`, on the calling thread.
///
/// # Safety
/// See [`super::matmul_nt_raw`]; needs AMX-BF16 and AVX-512-BF16.
pub(crate) unsafe fn matmul_nt(x: MatRef<'_>, w: MatRef<'_>, out: *mut f32, ldo: usize) {
    let chunk = (PACKED_CHUNK_BYTES / (2 * x.cols.max(1))).max(2 * TILE_ROWS) / (2 * TILE_ROWS) * (2 * TILE_ROWS);
    let mut packed = Packed::new();
    for m0 in (0..x.rows).step_by(chunk) {
        let xm = x.rows_range(m0, chunk.min(x.rows - m0));
        packed.pack(xm);
        matmul_nt_packed(xm, &packed, w, out.add(m0 * ldo), ldo);
    }
}

/// `out = x · wᵀ` where `packed` holds `x` packed.
///
/// # Safety
/// As [`matmul_nt`].
pub(crate) unsafe fn matmul_nt_packed(x: MatRef<'_>, packed: &Packed, w: MatRef<'_>, out: *mut f32, ldo: usize) {
    let groups = w.rows / TILE_ROWS * TILE_ROWS;
    if takes_direct(packed, x.cols) {
        matmul_nt_direct(x, packed, w, out, ldo);
    } else {
        matmul_nt_staged(x, packed, w, out, ldo);
    }
    if groups < w.rows {
        avx512_bf16::matmul_nt(x, w.rows_range(groups, w.rows - groups), out.add(groups), ldo);
    }
}

/// Whether [`tiles_direct`] takes `packed` rows of `cols` columns: one or two blocks (a few
/// tokens; an expert's rows in a short prefill) and whole column steps.
pub(crate) fn takes_direct(packed: &Packed, cols: usize) -> bool {
    packed.blocks() <= 2 && cols.is_multiple_of(TILE_K)
}

/// [`matmul_nt_packed`] through [`tiles_direct`].
unsafe fn matmul_nt_direct(x: MatRef<'_>, packed: &Packed, w: MatRef<'_>, out: *mut f32, ldo: usize) {
    let groups = w.rows / TILE_ROWS * TILE_ROWS;
    let _tiles = Tiles::configure();
    let group = |n0: usize| (n0 + TILE_ROWS <= groups).then(|| w.rows_range(n0, TILE_ROWS));
    let mut n0 = 0;
    while n0 < groups {
        let two = n0 + 2 * TILE_ROWS <= groups;
        let step = if two { 2 * TILE_ROWS } else { TILE_ROWS };
        let next = [group(n0 + step), group(n0 + step + TILE_ROWS)];
        tiles_direct(w.rows_range(n0, TILE_ROWS), two.then(|| w.rows_range(n0 + TILE_ROWS, TILE_ROWS)), packed, next, |b, c0, c1| {
            let dst = out.add(b * TILE_ROWS * ldo + n0);
            let rows = TILE_ROWS.min(x.rows - b * TILE_ROWS);
            store_transposed(c0, dst, ldo, rows);
            if two {
                store_transposed(c1, dst.add(TILE_ROWS), ldo, rows);
            }
        });
        n0 += step;
    }
}

/// For `packed` rows that [`takes_direct`]: calls `sink(block, c0, c1)` with the C tiles of the
/// 16 weight rows `a0` and, when given, the 16 rows `a1` (`c1` meaningless without). Each A tile
/// is used once here, so it is loaded straight from the weights (rows a stride apart) rather
/// than staged in tile order ([`Stage`]), which would only add a copy of every weight. As in the
/// `vdpbf16ps` kernel, each step prefetches (into L2) the same columns of the groups in `next`
/// (what the caller runs next): rows 4 KiB apart are separate streams the hardware would not fetch.
/// Tiles must be configured on this thread.
///
/// # Safety
/// AMX available; `a0`, `a1` and `next` bf16 with `packed`'s columns and a common row stride.
pub(crate) unsafe fn tiles_direct(
    a0: MatRef<'_>,
    a1: Option<MatRef<'_>>,
    packed: &Packed,
    next: [Option<MatRef<'_>>; 2],
    mut sink: impl FnMut(usize, &[f32; 256], &[f32; 256]),
) {
    debug_assert!(takes_direct(packed, a0.cols) && a1.is_none_or(|m| m.row_stride == a0.row_stride));
    let lda = a0.row_stride * 2;
    let two_b = packed.blocks() == 2;
    let (b0, b1) = (packed.block(0), packed.block(if two_b { 1 } else { 0 }));
    let prefetch = next.map(|g| g.map_or(std::ptr::null(), |m| m.as_ptr()));
    let (p0, p1) = (a0.as_ptr(), a1.map_or(a0.as_ptr(), |m| m.as_ptr()));
    let ksteps = packed.ksteps;
    match (a1.is_some(), two_b) {
        (true, true) => kloop_direct::<true, true>(p0, p1, lda, ksteps, b0, b1, prefetch),
        (true, false) => kloop_direct::<true, false>(p0, p1, lda, ksteps, b0, b1, prefetch),
        (false, true) => kloop_direct::<false, true>(p0, p1, lda, ksteps, b0, b1, prefetch),
        (false, false) => kloop_direct::<false, false>(p0, p1, lda, ksteps, b0, b1, prefetch),
    }
    let mut c = CTiles([[0f32; 256]; 4]);
    let cp = c.0.as_mut_ptr();
    asm!(
        "tilestored [{c0} + {s}*1], tmm0",
        "tilestored [{c1} + {s}*1], tmm1",
        "tilestored [{c2} + {s}*1], tmm2",
        "tilestored [{c3} + {s}*1], tmm3",
        c0 = in(reg) cp, c1 = in(reg) cp.add(1), c2 = in(reg) cp.add(2), c3 = in(reg) cp.add(3),
        s = in(reg) 64usize, options(nostack)
    );
    for b in 0..packed.blocks() {
        sink(b, &c.0[b], &c.0[2 + b]);
    }
}

/// C = A · B over every column step, A's lines `lda` bytes apart from `a0` (and `a1`),
/// prefetching the same columns of the 16 rows at each non-null `prefetch` pointer.
#[inline(always)]
unsafe fn kloop_direct<const TWO_A: bool, const TWO_B: bool>(
    a0: *const u8,
    a1: *const u8,
    lda: usize,
    ksteps: usize,
    b0: *const Line,
    b1: *const Line,
    prefetch: [*const u8; 2],
) {
    asm!("tilezero tmm0", "tilezero tmm1", "tilezero tmm2", "tilezero tmm3", options(nostack, nomem));
    for s in 0..ksteps {
        for p in prefetch.into_iter().filter(|p| !p.is_null()) {
            for r in 0..TILE_ROWS {
                asm!("prefetcht1 [{0}]", in(reg) p.add(r * lda + s * 64), options(nostack, readonly, preserves_flags));
            }
        }
        let (t0, t1) = (a0.add(s * 64) as *const Line, a1.add(s * 64) as *const Line);
        step::<TWO_A, TWO_B>(t0, t1, lda, b0.add(s * TILE_ROWS), b1.add(s * TILE_ROWS));
    }
}

/// [`matmul_nt_packed`] on the row groups of `w`, staged (see [`Stage`]).
unsafe fn matmul_nt_staged(x: MatRef<'_>, packed: &Packed, w: MatRef<'_>, out: *mut f32, ldo: usize) {
    let groups = w.rows / TILE_ROWS * TILE_ROWS;
    let tiles_on = Tiles::configure();
    // Two row groups per pass, one in the last pass when their number is odd.
    let step_at = |n0: usize| if n0 + 2 * TILE_ROWS <= groups { 2 * TILE_ROWS } else { TILE_ROWS };
    let start = |stage: &mut Stage, n0: usize| match groups.saturating_sub(n0) {
        0 => StageCopy::none(),
        _ if step_at(n0) == TILE_ROWS => stage.start(&[w.rows_range(n0, TILE_ROWS)]),
        _ => stage.start(&[w.rows_range(n0, TILE_ROWS), w.rows_range(n0 + TILE_ROWS, TILE_ROWS)]),
    };
    Stage::with(|stage| {
        for blocks in packed.chunks() {
            let first = start(stage, 0);
            // SAFETY (flip): each flip takes the copy started just before it.
            let mut a = stage.flip(first);
            let mut n0 = 0;
            while n0 < groups {
                let store = |b: usize, c: &[f32; 256], n: usize| {
                    store_transposed(c, out.add(b * TILE_ROWS * ldo + n), ldo, TILE_ROWS.min(x.rows - b * TILE_ROWS))
                };
                let after = n0 + step_at(n0);
                let mut next = start(stage, after);
                if step_at(n0) == 2 * TILE_ROWS {
                    tiles::<true>(a, packed, blocks.clone(), &mut next, |b, c0, c1| {
                        store(b, c0, n0);
                        store(b, c1, n0 + TILE_ROWS);
                    });
                } else {
                    tiles::<false>(a, packed, blocks.clone(), &mut next, |b, c0, _| store(b, c0, n0));
                }
                a = stage.flip(next);
                n0 = after;
            }
        }
    });
    drop(tiles_on);
}

/// Weight row groups copied into a tile-ordered buffer: tile (column step s, group g) is 16
/// lines of 64 bytes at line `(s * groups + g) * 16`. Tile loads then read 1 KiB contiguous
/// blocks: rows of a 2048-wide bf16 matrix lie 4 KiB apart, all in one L1 set, so loading tiles
/// straight from the weights thrashes L1; and the copy reads the weights in address order. The
/// last partial column step is zero-padded.
///
/// Two buffers: while the tiles run on the front one, the next row groups are copied into the
/// back one a few lines per column step ([`StageCopy`]), so reading the weights from memory
/// overlaps the arithmetic instead of stalling between passes.
pub(crate) struct Stage {
    buffers: [Vec<Line>; 2],
    front: usize,
}

thread_local! {
    static STAGE: std::cell::RefCell<Stage> = const { std::cell::RefCell::new(Stage::new()) };
}

impl Stage {
    const fn new() -> Stage {
        Stage { buffers: [Vec::new(), Vec::new()], front: 0 }
    }

    /// Runs `f` with this thread's stage, kept between calls: fresh 128 KiB buffers per task
    /// would be fresh mappings, paid for in page faults.
    pub fn with<R>(f: impl FnOnce(&mut Stage) -> R) -> R {
        STAGE.with(|cell| match cell.try_borrow_mut() {
            Ok(mut stage) => f(&mut stage),
            Err(_) => f(&mut Stage::new()),
        })
    }

    /// Starts copying `groups` (one or two groups of 16 bf16 rows, same columns) into the back
    /// buffer; the front buffer stays as it is.
    pub fn start<'a>(&mut self, groups: &[MatRef<'a>]) -> StageCopy<'a> {
        assert!(!groups.is_empty() && groups.len() <= 2);
        let cols = groups[0].cols;
        let ksteps = cols.div_ceil(TILE_K);
        let back = &mut self.buffers[1 - self.front];
        back.resize(ksteps * groups.len() * TILE_ROWS, ZERO_LINE);
        let full = cols / TILE_K;
        for (g, m) in groups.iter().enumerate() {
            assert!(m.dtype == rio_core::DType::BF16 && m.rows == TILE_ROWS && m.cols == cols);
            if full < ksteps {
                for r in 0..TILE_ROWS {
                    let tail = &m.row::<rio_core::bf16>(r)[full * TILE_K..];
                    let dst = &mut back[(full * groups.len() + g) * TILE_ROWS + r];
                    *dst = ZERO_LINE;
                    // SAFETY: the tail is shorter than a line; bf16 and u16 share a layout.
                    unsafe { std::ptr::copy_nonoverlapping(tail.as_ptr() as *const u16, dst.0.as_mut_ptr() as *mut u16, tail.len()) };
                }
            }
        }
        let mut list = [groups[0]; 2];
        list[..groups.len()].copy_from_slice(groups);
        StageCopy {
            groups: list,
            count: groups.len(),
            full,
            dst: back.as_mut_ptr(),
            g: 0,
            r: 0,
            s: 0,
            left: groups.len() * TILE_ROWS * full,
        }
    }

    /// Finishes `copy` and makes the back buffer the front one.
    ///
    /// # Safety
    /// `copy` must come from the last [`Stage::start`] on this stage (or be
    /// [`StageCopy::none`]): an earlier one may point into a buffer since reallocated.
    pub unsafe fn flip(&mut self, mut copy: StageCopy<'_>) -> *const Line {
        copy.advance(usize::MAX);
        if copy.count > 0 {
            self.front = 1 - self.front;
        }
        self.buffers[self.front].as_ptr()
    }
}

/// A copy of weight rows into the back buffer of a [`Stage`], done in parts: line (g, r, s) is
/// columns `[32 s, 32 s + 32)` of row r of group g, copied in address order.
pub(crate) struct StageCopy<'a> {
    groups: [MatRef<'a>; 2],
    count: usize,
    full: usize,
    dst: *mut Line,
    g: usize,
    r: usize,
    s: usize,
    left: usize,
}

impl StageCopy<'_> {
    /// Nothing to copy (the last pass).
    pub fn none() -> StageCopy<'static> {
        let empty = MatRef::from_slice::<rio_core::bf16>(&[], 0, 0);
        StageCopy { groups: [empty; 2], count: 0, full: 0, dst: std::ptr::null_mut(), g: 0, r: 0, s: 0, left: 0 }
    }

    /// Copies the next `lines` lines (or what is left).
    ///
    /// # Safety
    /// The back buffer this copy was started on must still be allocated and unread.
    #[inline(always)]
    unsafe fn advance(&mut self, lines: usize) {
        for _ in 0..lines.min(self.left) {
            let m = &self.groups[self.g];
            let row = m.as_ptr().add(self.r * m.row_stride * 2);
            // Each row is its own stream (a 2048-wide row is one 4 KiB page, where hardware
            // prefetchers stop): fetch the row after next while copying this one.
            let ahead = row.wrapping_add(2 * m.row_stride * 2 + self.s * 64);
            asm!("prefetcht0 [{0}]", in(reg) ahead, options(nostack, readonly, preserves_flags));
            let line = (row.add(self.s * 64) as *const Line).read_unaligned();
            self.dst.add((self.s * self.count + self.g) * TILE_ROWS + self.r).write(line);
            self.left -= 1;
            self.s += 1;
            if self.s == self.full {
                self.s = 0;
                self.r += 1;
                if self.r == TILE_ROWS {
                    self.r = 0;
                    self.g += 1;
                }
            }
        }
    }
}

/// `c[n * 16 + t]` (a C tile: weight row n, activation row t) into `out[t * ldo + n]`.
unsafe fn store_transposed(c: &[f32; 256], out: *mut f32, ldo: usize, rows: usize) {
    for t in 0..rows {
        let dst = out.add(t * ldo);
        for n in 0..TILE_ROWS {
            *dst.add(n) = c[n * TILE_ROWS + t];
        }
    }
}

#[repr(C, align(64))]
struct CTiles([[f32; 256]; 4]);

/// For the staged row groups `a` (one, or two when `TWO_A`; see [`Stage`]) and the blocks
/// `blocks` of `packed` (an even start): calls `sink(block, c0, c1)` with the C tiles of the two row groups (`c1`
/// meaningless unless `TWO_A`). Tiles must be configured on this thread. Meanwhile `next` (the
/// weights the caller stages next) is copied a few lines per column step, spread over the call.
///
/// # Safety
/// `a` must come from the last `Stage::flip`, with as many column steps as `packed`; `next`
/// from the `Stage::start` after it.
pub(crate) unsafe fn tiles<const TWO_A: bool>(
    a: *const Line,
    packed: &Packed,
    blocks: std::ops::Range<usize>,
    next: &mut StageCopy<'_>,
    mut sink: impl FnMut(usize, &[f32; 256], &[f32; 256]),
) {
    let mut c = CTiles([[0f32; 256]; 4]);
    let ksteps = packed.ksteps;
    let per_step = next.left.div_ceil((blocks.len().div_ceil(2) * ksteps).max(1));
    let (first, blocks) = (blocks.start, blocks.end);
    for b in (first..blocks).step_by(2) {
        let b0 = packed.block(b);
        if b + 1 < blocks {
            kloop::<TWO_A, true>(a, ksteps, b0, packed.block(b + 1), next, per_step);
        } else {
            kloop::<TWO_A, false>(a, ksteps, b0, b0, next, per_step);
        }
        let cp = c.0.as_mut_ptr();
        asm!(
            "tilestored [{c0} + {s}*1], tmm0",
            "tilestored [{c1} + {s}*1], tmm1",
            "tilestored [{c2} + {s}*1], tmm2",
            "tilestored [{c3} + {s}*1], tmm3",
            c0 = in(reg) cp, c1 = in(reg) cp.add(1), c2 = in(reg) cp.add(2), c3 = in(reg) cp.add(3),
            s = in(reg) 64usize, options(nostack)
        );
        sink(b, &c.0[0], &c.0[2]);
        if b + 1 < blocks {
            sink(b + 1, &c.0[1], &c.0[3]);
        }
    }
}

/// C = A · B over every column step, copying `per_step` lines of `next` per step.
#[inline(always)]
unsafe fn kloop<const TWO_A: bool, const TWO_B: bool>(
    a: *const Line,
    ksteps: usize,
    b0: *const Line,
    b1: *const Line,
    next: &mut StageCopy<'_>,
    per_step: usize,
) {
    asm!("tilezero tmm0", "tilezero tmm1", "tilezero tmm2", "tilezero tmm3", options(nostack, nomem));
    let groups = if TWO_A { 2 } else { 1 };
    for s in 0..ksteps {
        next.advance(per_step);
        let a0 = a.add(s * groups * TILE_ROWS);
        step::<TWO_A, TWO_B>(a0, a0.add(TILE_ROWS), 64, b0.add(s * TILE_ROWS), b1.add(s * TILE_ROWS));
    }
}

/// One 32-column step: C[g][b] += A[g] · B[b], the lines of A tiles `lda` bytes apart.
#[inline(always)]
unsafe fn step<const TWO_A: bool, const TWO_B: bool>(a0: *const Line, a1: *const Line, lda: usize, b0: *const Line, b1: *const Line) {
    match (TWO_A, TWO_B) {
        (true, true) => asm!(
            "tileloadd tmm4, [{a0} + {lda}*1]",
            "tileloadd tmm6, [{b0} + {ldb}*1]",
            "tdpbf16ps tmm0, tmm4, tmm6",
            "tileloadd tmm7, [{b1} + {ldb}*1]",
            "tdpbf16ps tmm1, tmm4, tmm7",
            "tileloadd tmm5, [{a1} + {lda}*1]",
            "tdpbf16ps tmm2, tmm5, tmm6",
            "tdpbf16ps tmm3, tmm5, tmm7",
            a0 = in(reg) a0, a1 = in(reg) a1, b0 = in(reg) b0, b1 = in(reg) b1, lda = in(reg) lda, ldb = in(reg) 64usize,
            options(nostack, readonly)
        ),
        (true, false) => asm!(
            "tileloadd tmm4, [{a0} + {lda}*1]",
            "tileloadd tmm6, [{b0} + {ldb}*1]",
            "tileloadd tmm5, [{a1} + {lda}*1]",
            "tdpbf16ps tmm0, tmm4, tmm6",
            "tdpbf16ps tmm2, tmm5, tmm6",
            a0 = in(reg) a0, a1 = in(reg) a1, b0 = in(reg) b0, lda = in(reg) lda, ldb = in(reg) 64usize,
            options(nostack, readonly)
        ),
        (false, true) => asm!(
            "tileloadd tmm4, [{a0} + {lda}*1]",
            "tileloadd tmm6, [{b0} + {ldb}*1]",
            "tileloadd tmm7, [{b1} + {ldb}*1]",
            "tdpbf16ps tmm0, tmm4, tmm6",
            "tdpbf16ps tmm1, tmm4, tmm7",
            a0 = in(reg) a0, b0 = in(reg) b0, b1 = in(reg) b1, lda = in(reg) lda, ldb = in(reg) 64usize,
            options(nostack, readonly)
        ),
        (false, false) => asm!(
            "tileloadd tmm4, [{a0} + {lda}*1]",
            "tileloadd tmm6, [{b0} + {ldb}*1]",
            "tdpbf16ps tmm0, tmm4, tmm6",
            a0 = in(reg) a0, b0 = in(reg) b0, lda = in(reg) lda, ldb = in(reg) 64usize,
            options(nostack, readonly)
        ),
    }
    let _ = a1;
}
