//! The few-token (decode) MoE block (spec section 5) in one parallel region.
//!
//! At a few tokens the block is a stream of weights, the router's, the shared expert's and the
//! k active experts', each read once; separate parallel steps (router, gate/up, down) would wake
//! the pool and wait at a barrier three times per layer, a third of a 1-token call. Here the
//! work is one list of pieces of about [`PIECE_BYTES`] of weights each, which the pool's
//! threads claim in order from an atomic counter: the router's row blocks and the shared
//! expert's gate/up and down blocks (they need no routing); then, per active expert, its gate/up
//! blocks followed by the down blocks of the expert before it (whose activation is complete by
//! then). The thread that finishes the last router block computes the top-k and the dispatch
//! and publishes them; a thread that claims a piece past the pre-routing ones waits for that
//! (the one wait of the block). A down piece claimed before its gate/up pieces have finished
//! (their thread was descheduled, say) is put aside and run once they have, while the thread
//! claims on. A thread only ever waits for pieces another thread has claimed, and claimed pieces
//! always finish, so a pool thread that never shows up costs time, never a deadlock. Down pieces
//! write their rows' outputs to a buffer; the caller adds them to the tokens afterwards in the
//! order the grouped path does, so the result is the same bit for bit, whichever thread ran what.
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::OnceLock;

use rio_core::moe::{MoeWeights, RouterConfig};
use rio_core::{bf16, DType, Element, Result, TensorRef};

use super::combine::{self, RowTargets};
use super::rows::{self, RowElement};
use super::{check_top_k, compute_dtype, dispatch, router};
use crate::features::{self, Isa};
use crate::gemm::{self, MatRef, SyncPtr};
use crate::scratch::{Plain, Scratch};

/// Most tokens the fused path takes: decode and small batches, where the fixed costs it saves
/// (three parallel steps, their barriers) are a sizeable part of the call. Past it, experts
/// start to get enough rows for the grouped tile path, which packs each expert's rows once
/// where the pieces here would pack them per piece.
pub(crate) const MAX_TOKENS: usize = 16;

/// Weight bytes per piece: about 70 µs of one core's stream. Measured on the 35B shape, 1 MiB
/// pieces beat 256 KiB ones at 1 and 8 tokens (each kernel call starts its row streams cold,
/// and each claim moves a shared counter between the cores), more than the longer wait for the
/// last piece costs.
const PIECE_BYTES: usize = 1 << 20;

/// A unit of work. Its group is expert `e < E`, or `E`, the shared expert.
#[derive(Clone, Copy, Debug)]
enum Piece {
    /// Router logits of experts `n0..n0 + len`.
    Router { n0: usize, len: usize },
    /// Activation features `f0..f0 + len` of a group.
    GateUp { group: usize, f0: usize, len: usize },
    /// Output features `h0..h0 + len` of a group's rows.
    Down { group: usize, h0: usize, len: usize },
}

/// What the thread finishing the router publishes.
struct Plan<T: Plain> {
    /// Rows of expert e: `offsets[e]..offsets[e + 1]` of `xs` (dispatch order).
    offsets: Vec<u32>,
    targets: RowTargets,
    xs: Scratch<T>,
    /// The pieces after the pre-routing ones.
    pieces: Vec<Piece>,
}

/// `acc [T, H] += MoE(x)`: router, dispatch, routed and shared experts, combine, for
/// `1..=MAX_TOKENS` tokens, with activations in `A` (the compute dtype of the weights).
pub(crate) fn forward<A: RowElement + Element + Plain + Send + Sync>(
    x: &TensorRef<'_>,
    weights: &MoeWeights<'_>,
    config: RouterConfig,
    acc: &mut [f32],
) -> Result<()> {
    forward_with::<A>(features::active_isa(), PIECE_BYTES, x, weights, config, acc)
}

/// [`forward`] with the kernels of `isa` (capped at what the machine has) and pieces of about
/// `piece_bytes` (at least 16 weight rows).
pub(crate) fn forward_with<A: RowElement + Element + Plain + Send + Sync>(
    isa: Isa,
    piece_bytes: usize,
    x: &TensorRef<'_>,
    weights: &MoeWeights<'_>,
    config: RouterConfig,
    acc: &mut [f32],
) -> Result<()> {
    let isa = isa.min(features::detected().best_isa());
    let (e, h, t) = (weights.num_experts(), weights.hidden(), x.shape()[0]);
    check_top_k(config.top_k, e)?;
    assert!(acc.len() == t * h, "acc holds [T, H]");
    let (mut router_bf16, mut router_f32) = (Scratch::stale(0), Scratch::stale(0));
    let x_router = match compute_dtype(weights.router.dtype()) {
        DType::BF16 => rows::in_dtype::<bf16>(x, &mut router_bf16)?,
        _ => rows::in_dtype::<f32>(x, &mut router_f32)?,
    };
    let mut xe_buf = Scratch::<A>::stale(0);
    let xe = rows::in_dtype::<A>(x, &mut xe_buf)?;
    let shared_gate = match weights.shared.as_ref().and_then(|s| s.gate_weight.as_ref()) {
        Some(g) => Some(combine::sigmoid_gate_rows(xe, g)?),
        None => None,
    };
    let mat = MatRef::from_tensor;
    let router_w = mat(&weights.router, "router_weight")?;
    let shared = match &weights.shared {
        Some(s) => {
            Some([mat(&s.mats.gate, "shared_gate_proj")?, mat(&s.mats.up, "shared_up_proj")?, mat(&s.mats.down, "shared_down_proj")?])
        }
        None => None,
    };

    let block = |row_bytes: usize| (piece_bytes / row_bytes.max(1)).next_multiple_of(16).max(16);
    let wsize = weights.dtype().size();
    let router_block = block(h * weights.router.dtype().size());
    let mut pre: Vec<Piece> = (0..e).step_by(router_block).map(|n0| Piece::Router { n0, len: router_block.min(e - n0) }).collect();
    let router_pieces = pre.len();
    let inter = weights.intermediate();
    let shared_inter = shared.map_or(0, |s| s[0].rows);
    let sizes =
        Sizes { gate_up: block(2 * h * wsize), down_routed: block(inter * wsize), down_shared: block(shared_inter * wsize), experts: e };
    if shared.is_some() {
        sizes.gate_up_pieces(e, shared_inter, &mut pre);
        sizes.down_pieces(e, h, &mut pre);
    }

    let pool = crate::threads::pool();
    let threads = pool.current_num_threads();
    let mut logits = Scratch::<f32>::stale(t * e);
    // Every activation element is written by its gate/up piece before a down piece reads it.
    let mut act = Scratch::<A>::stale(t * config.top_k * inter);
    let mut shared_act = Scratch::<A>::stale(t * shared_inter);
    // Down outputs of every routed row (dispatch order) and of the shared expert's rows, combined
    // after the region in a fixed order: the same sums, bit for bit, whichever thread ran what.
    let mut ys = Scratch::<f32>::stale(t * config.top_k * h);
    let mut shared_ys = Scratch::<f32>::stale(if shared.is_some() { t * h } else { 0 });
    let ctx = Ctx {
        isa,
        config,
        tokens: t,
        hidden: h,
        inter,
        shared_inter,
        x_dtype: x.dtype(),
        x_router,
        xe,
        router_w,
        weights,
        shared,
        shared_gate,
        sizes,
        pre,
        router_pieces,
        next: Padded::default(),
        router_done: AtomicUsize::new(0),
        ready: (0..=e).map(|_| Padded::default()).collect(),
        plan: OnceLock::new(),
        logits: SyncPtr(logits.as_mut_ptr()),
        act: SyncPtr(act.as_mut_ptr()),
        shared_act: SyncPtr(shared_act.as_mut_ptr()),
        ys: SyncPtr(ys.as_mut_ptr()),
        shared_ys: SyncPtr(shared_ys.as_mut_ptr()),
    };
    // Spawned jobs rather than a broadcast: a job no other thread has taken when the caller's own
    // part ends runs on the caller (finding nothing left to claim), so a busy or descheduled
    // pool thread never holds the call up.
    pool.install(|| {
        rayon::scope(|s| {
            for _ in 1..threads {
                s.spawn(|_| ctx.participate());
            }
            ctx.participate();
        })
    });
    let plan = match ctx.plan.into_inner() {
        Some(Ok(plan)) => plan,
        Some(Err(err)) => return Err(err),
        None => unreachable!("the last router piece publishes the plan"),
    };
    // As the grouped path adds them: each token's routed rows by rising expert, then the shared expert.
    for (p, y) in ys.chunks_exact(h.max(1)).enumerate() {
        let (token, w) = (plan.targets.token[p] as usize, plan.targets.weight[p]);
        acc[token * h..][..h].iter_mut().zip(y).for_each(|(a, &v)| *a += w * v);
    }
    if ctx.shared.is_some() {
        for (token, y) in shared_ys.chunks_exact(h.max(1)).enumerate() {
            let w = ctx.shared_gate.as_ref().map_or(1.0, |g| g[token]);
            acc[token * h..][..h].iter_mut().zip(y).for_each(|(a, &v)| *a += w * v);
        }
    }
    Ok(())
}

/// A counter alone on its cache line: both threads update these once per piece, and counters
/// sharing a line would move it between the cores on every update of either.
#[derive(Default)]
#[repr(align(64))]
struct Padded(AtomicUsize);

/// Rows per piece of each kind.
struct Sizes {
    /// Features per gate/up piece (gate and up rows each).
    gate_up: usize,
    /// Output features per down piece of a routed expert and of the shared expert.
    down_routed: usize,
    down_shared: usize,
    /// E: the group number of the shared expert.
    experts: usize,
}

impl Sizes {
    fn gate_up_pieces(&self, group: usize, features: usize, out: &mut Vec<Piece>) {
        out.extend((0..features).step_by(self.gate_up).map(|f0| Piece::GateUp { group, f0, len: self.gate_up.min(features - f0) }));
    }

    fn gate_up_count(&self, features: usize) -> usize {
        features.div_ceil(self.gate_up)
    }

    fn down_pieces(&self, group: usize, hidden: usize, out: &mut Vec<Piece>) {
        let block = if group == self.experts { self.down_shared } else { self.down_routed };
        out.extend((0..hidden).step_by(block).map(|h0| Piece::Down { group, h0, len: block.min(hidden - h0) }));
    }
}

/// Everything the threads of one call share.
struct Ctx<'a, A: Plain> {
    isa: Isa,
    config: RouterConfig,
    tokens: usize,
    hidden: usize,
    inter: usize,
    shared_inter: usize,
    /// Router logits are rounded to the dtype of x (transformers computes the router in it).
    x_dtype: DType,
    /// x in the router's compute dtype, and in the experts'.
    x_router: MatRef<'a>,
    xe: MatRef<'a>,
    router_w: MatRef<'a>,
    weights: &'a MoeWeights<'a>,
    /// gate, up, down of the shared expert.
    shared: Option<[MatRef<'a>; 3]>,
    shared_gate: Option<Vec<f32>>,
    sizes: Sizes,
    /// The pieces that need no routing: the router's first.
    pre: Vec<Piece>,
    router_pieces: usize,
    /// The next piece to claim (indices past `pre` continue into the plan's pieces).
    next: Padded,
    router_done: AtomicUsize,
    /// Finished gate/up pieces per group.
    ready: Vec<Padded>,
    plan: OnceLock<Result<Plan<A>>>,
    /// logits [T, E]; act [T·k, I] and ys [T·k, H] in dispatch order; shared_act [T, I_s] and
    /// shared_ys [T, H].
    logits: SyncPtr<f32>,
    act: SyncPtr<A>,
    shared_act: SyncPtr<A>,
    ys: SyncPtr<f32>,
    shared_ys: SyncPtr<f32>,
}

// SAFETY: the raw pointers are written at disjoint elements (see each piece) and read only
// after the atomics that order those writes.
unsafe impl<A: Plain + Sync> Sync for Ctx<'_, A> {}

impl<A: RowElement + Element + Plain + Send + Sync> Ctx<'_, A> {
    fn participate(&self) {
        // Gate and up outputs of at most T rows (an expert gets a token once).
        let mut tmp = Scratch::<f32>::stale(self.tokens * 2 * self.sizes.gate_up);
        // Down pieces claimed before their gate/up pieces finished: run once they have, while
        // claiming on, so a thread never idles on another that the OS has descheduled.
        let mut deferred: Vec<Piece> = Vec::new();
        let mut plan = None;
        loop {
            if !deferred.is_empty() {
                deferred.retain(|&p| !self.is_ready(p) || !self.run(p, plan, &mut tmp));
            }
            let i = self.next.0.fetch_add(1, Ordering::Relaxed);
            let piece = match self.pre.get(i) {
                Some(&piece) => piece,
                None => {
                    let Ok(p) = wait_for(|| self.plan.get()) else { return };
                    plan = Some(p);
                    match p.pieces.get(i - self.pre.len()) {
                        Some(&piece) => piece,
                        None => break,
                    }
                }
            };
            if !self.is_ready(piece) {
                deferred.push(piece);
                continue;
            }
            self.run(piece, plan, &mut tmp);
            if matches!(piece, Piece::Router { .. }) && self.router_done.fetch_add(1, Ordering::AcqRel) + 1 == self.router_pieces {
                let _ = self.plan.set(self.publish());
            }
        }
        for piece in deferred {
            wait_for(|| self.is_ready(piece).then_some(()));
            self.run(piece, plan, &mut tmp);
        }
    }

    /// Whether `piece` can run: a down piece once every gate/up piece of its group has finished.
    fn is_ready(&self, piece: Piece) -> bool {
        match piece {
            Piece::Down { group, .. } => {
                let inter = if group == self.sizes.experts { self.shared_inter } else { self.inter };
                self.ready[group].0.load(Ordering::Acquire) == self.sizes.gate_up_count(inter)
            }
            _ => true,
        }
    }

    /// Top-k, dispatch and gathered rows from the finished logits, and the pieces that need them.
    fn publish(&self) -> Result<Plan<A>> {
        let (t, e, k) = (self.tokens, self.sizes.experts, self.config.top_k);
        // SAFETY: every router piece has finished (router_done, acquired), so no one writes logits.
        let logits = unsafe { std::slice::from_raw_parts_mut(self.logits.get(), t * e) };
        router::round_to(logits, self.x_dtype);
        let routing = router::select_experts(logits, e, self.config)?;
        let dispatch = dispatch::dispatch(&routing, e)?;
        let mut xs = Scratch::<A>::stale(t * k * self.hidden);
        // On this thread: a parallel gather could run another piece of this call (or this
        // thread's own claim loop) under this frame while the plan is not out, a deadlock.
        for (p, row) in xs.chunks_exact_mut(self.hidden.max(1)).enumerate() {
            rows::convert_row(self.xe, dispatch.order[p] as usize / k, row);
        }
        let active: Vec<usize> = (0..e).filter(|&x| dispatch.offsets[x + 1] > dispatch.offsets[x]).collect();
        let mut pieces = Vec::new();
        for (n, &x) in active.iter().enumerate() {
            self.sizes.gate_up_pieces(x, self.inter, &mut pieces);
            // The down pieces of the expert before, whose gate/up pieces were all claimed an
            // expert ago: by the time these are claimed, those have almost surely finished.
            if n > 0 {
                self.sizes.down_pieces(active[n - 1], self.hidden, &mut pieces);
            }
        }
        if let Some(&last) = active.last() {
            self.sizes.down_pieces(last, self.hidden, &mut pieces);
        }
        let targets = RowTargets::routed(&routing, &dispatch);
        Ok(Plan { offsets: dispatch.offsets, targets, xs, pieces })
    }

    /// Gate, up and down of a group, and its rows: (first row in `act`, count, activation row length).
    fn group(&self, group: usize, plan: Option<&Plan<A>>) -> ([MatRef<'_>; 3], usize, usize, usize) {
        if group == self.sizes.experts {
            return (self.shared.expect("the shared expert"), 0, self.tokens, self.shared_inter);
        }
        let m = &self.weights.experts[group];
        let mat = |t, arg| MatRef::from_tensor(t, arg).expect("expert weights were validated");
        let offsets = &plan.expect("routed pieces come with the plan").offsets;
        let first = offsets[group] as usize;
        ([mat(&m.gate, "gate"), mat(&m.up, "up"), mat(&m.down, "down_proj")], first, offsets[group + 1] as usize - first, self.inter)
    }

    /// Runs `piece` (which must be ready); returns true, for `retain`.
    fn run(&self, piece: Piece, plan: Option<&Plan<A>>, tmp: &mut [f32]) -> bool {
        match piece {
            Piece::Router { n0, len } => {
                let e = self.sizes.experts;
                // SAFETY: logits [T, E]; this piece alone writes columns n0..n0 + len.
                unsafe { gemm::matmul_nt_raw(self.isa, self.x_router, self.router_w.rows_range(n0, len), self.logits.get().add(n0), e) }
            }
            Piece::GateUp { group, f0, len } => {
                let ([gate, up, _], first, rows, inter) = self.group(group, plan);
                let x = match plan {
                    Some(p) if group != self.sizes.experts => {
                        MatRef::from_slice(&p.xs, p.xs.len() / self.hidden, self.hidden).rows_range(first, rows)
                    }
                    _ => self.xe,
                };
                let (g, u) = tmp[..2 * rows * len].split_at_mut(rows * len);
                // SAFETY: g and u hold rows x len.
                unsafe {
                    gemm::matmul_nt_raw(self.isa, x, gate.rows_range(f0, len), g.as_mut_ptr(), len);
                    gemm::matmul_nt_raw(self.isa, x, up.rows_range(f0, len), u.as_mut_ptr(), len);
                }
                let act = if group == self.sizes.experts { &self.shared_act } else { &self.act };
                for r in 0..rows {
                    // SAFETY: features f0..f0 + len of the group's rows belong to this piece alone.
                    let dst = unsafe { std::slice::from_raw_parts_mut(act.get().add((first + r) * inter + f0), len) };
                    for ((d, &gv), &uv) in dst.iter_mut().zip(&g[r * len..][..len]).zip(&u[r * len..][..len]) {
                        *d = A::from_f32(gv / (1.0 + (-gv).exp()) * uv);
                    }
                }
                self.ready[group].0.fetch_add(1, Ordering::Release);
            }
            Piece::Down { group, h0, len } => {
                let ([_, _, down], first, rows, inter) = self.group(group, plan);
                let act = if group == self.sizes.experts { &self.shared_act } else { &self.act };
                // SAFETY: every gate/up piece of the group has finished (`is_ready`, acquired); no
                // one writes these rows any more.
                let act = unsafe { std::slice::from_raw_parts(act.get().add(first * inter) as *const A, rows * inter) };
                let ys = if group == self.sizes.experts { &self.shared_ys } else { &self.ys };
                // SAFETY: columns h0..h0 + len of the group's rows of ys [rows, H] belong to this
                // piece alone.
                unsafe {
                    let y = ys.get().add(first * self.hidden + h0);
                    gemm::matmul_nt_raw(self.isa, MatRef::from_slice(act, rows, inter), down.rows_range(h0, len), y, self.hidden)
                };
            }
        }
        true
    }
}

/// Spins until `ready` gives a value: the waits here are for pieces other threads are running,
/// microseconds, so a sleep would cost more than it saves; past a while, yields the core (the
/// machine may be busy and the other thread descheduled).
fn wait_for<R>(ready: impl Fn() -> Option<R>) -> R {
    let mut spins = 0u32;
    loop {
        if let Some(v) = ready() {
            return v;
        }
        spins += 1;
        if spins < 1 << 8 {
            std::hint::spin_loop();
        } else {
            std::thread::yield_now();
        }
    }
}
