//! The driver: match tensors across checkpoints, stream their moments on the worker pool, fit,
//! and summarise.
use std::collections::BTreeMap;
use std::ops::Range;
use std::path::Path;
use std::time::Instant;

use rayon::prelude::*;
use rio_core::{bf16, Error, Result};
use rio_model::names::{layer_of, tensor_kind};
use rio_model::{Access, Checkpoint};

use crate::moments::Moments;
use crate::reader::Operand;
use crate::report::{decide, summarize_layers, NotCompared, Report, TensorFit, Thresholds};
use crate::solve::least_squares;

/// Elements widened per operand at a time: small enough that all operands stay in L1.
const CHUNK: usize = 1024;
/// Elements per task in full mode: big enough to amortise scheduling, small enough to balance.
const TASK: usize = 1 << 16;
/// Contiguous elements per sampled block in quick mode (whole cache lines, few pages touched).
const SAMPLE_BLOCK: usize = 256;
/// Tensors of at least this many elements read take the faster bf16 kernel with f32 runs, whose
/// rounding averages out over many runs; smaller ones take the exact one.
const BF16_RUNS_MIN_ELEMENTS: usize = 1 << 20;
/// Sampled blocks per task in quick mode.
const BLOCKS_PER_TASK: usize = 64;

#[derive(Clone, Debug, PartialEq)]
pub struct Options {
    /// Read a fixed, seeded sample of `sample` elements per tensor instead of everything.
    pub quick: bool,
    pub sample: usize,
    pub seed: u64,
    /// Also fit a constant term.
    pub intercept: bool,
    pub thresholds: Thresholds,
}

impl Default for Options {
    fn default() -> Self {
        Options { quick: false, sample: 1 << 16, seed: 0, intercept: false, thresholds: Thresholds::default() }
    }
}

/// Where a running fit is; the callback returns `false` to cancel.
#[derive(Clone, Debug)]
pub struct Progress<'a> {
    /// Tensors finished so far.
    pub done: usize,
    pub total: usize,
    /// The tensor about to be read (empty when all are done).
    pub name: &'a str,
    pub bytes_done: u64,
    pub bytes_total: u64,
}

/// Opens the checkpoints and fits the candidate against the parents.
pub fn fit(candidate: &Path, parents: &[&Path], opts: &Options, progress: &mut dyn FnMut(&Progress<'_>) -> bool) -> Result<Report> {
    if parents.is_empty() {
        return Err(Error::value("parents", "at least one parent checkpoint is needed"));
    }
    let cand = Checkpoint::open(candidate)?;
    let pars = parents.iter().map(Checkpoint::open).collect::<Result<Vec<_>>>()?;
    let par_refs: Vec<&Checkpoint> = pars.iter().collect();
    fit_checkpoints(&cand, &par_refs, opts, progress)
}

/// Fits an open candidate against open parents.
pub fn fit_checkpoints(
    candidate: &Checkpoint,
    parents: &[&Checkpoint],
    opts: &Options,
    progress: &mut dyn FnMut(&Progress<'_>) -> bool,
) -> Result<Report> {
    let start = Instant::now();
    if parents.is_empty() {
        return Err(Error::value("parents", "at least one parent checkpoint is needed"));
    }
    if opts.quick && opts.sample == 0 {
        return Err(Error::value("sample", "must be positive in quick mode"));
    }
    let access = if opts.quick { Access::Random } else { Access::Sequential };
    for ck in parents.iter().copied().chain([candidate]) {
        ck.advise(access);
    }
    let parent_names: Vec<String> = parents.iter().map(|p| p.dir().display().to_string()).collect();
    let (jobs, mut not_compared) = match_tensors(candidate, parents, &parent_names)?;

    let plans: Vec<Vec<Vec<Range<usize>>>> = jobs.iter().map(|j| plan(j.numel(), opts)).collect();
    let elements: Vec<usize> = plans.iter().map(|p| p.iter().flatten().map(|r| r.len()).sum()).collect();
    let bytes: Vec<u64> = jobs.iter().zip(&elements).map(|(j, &n)| (n * j.bytes_per_element()) as u64).collect();
    let bytes_total: u64 = bytes.iter().sum();
    let mut bytes_done = 0u64;
    let pool = rio_cpu::threads::pool();
    let mut rows = Vec::with_capacity(jobs.len());
    for (idx, (job, tasks)) in jobs.iter().zip(&plans).enumerate() {
        let report = Progress { done: idx, total: jobs.len(), name: job.name, bytes_done, bytes_total };
        if !progress(&report) {
            return Err(Error::value("progress", "fit cancelled by the progress callback"));
        }
        if opts.quick {
            job.will_need(tasks);
        }
        let runs = elements[idx] >= BF16_RUNS_MIN_ELEMENTS;
        let partials: Vec<Moments> = pool.install(|| tasks.par_iter().map(|ranges| job.moments(ranges, runs)).collect());
        let mut m = Moments::new(job.operands.len());
        for p in &partials {
            m.merge(p);
        }
        bytes_done += bytes[idx];
        if !m.is_finite() {
            not_compared.push(NotCompared { name: job.name.to_string(), reason: "holds NaN or infinite values".to_string() });
            continue;
        }
        rows.push(tensor_fit(job, &m, elements[idx], opts));
    }
    let done = Progress { done: jobs.len(), total: jobs.len(), name: "", bytes_done, bytes_total };
    if !progress(&done) {
        return Err(Error::value("progress", "fit cancelled by the progress callback"));
    }

    let t = &opts.thresholds;
    let (layers, overall) = summarize_layers(&mut rows, parents.len(), t);
    let verdict = decide(&rows, &overall, &parent_names, t);
    Ok(Report {
        candidate: candidate.dir().display().to_string(),
        parents: parent_names,
        mode: if opts.quick { "quick" } else { "full" }.to_string(),
        intercept: opts.intercept,
        thresholds: t.clone(),
        tensors: rows,
        layers,
        overall,
        not_compared,
        verdict,
        bytes_read: bytes_done,
        seconds: start.elapsed().as_secs_f64(),
    })
}

/// Pairs every candidate tensor with the parents' tensors of the same logical name. Tensors
/// missing on one side, or stored in a dtype the fit does not read, are listed, not fatal; a shape
/// mismatch is an error naming the tensor and both shapes.
fn match_tensors<'a>(
    candidate: &'a Checkpoint,
    parents: &[&'a Checkpoint],
    parent_names: &[String],
) -> Result<(Vec<Job<'a>>, Vec<NotCompared>)> {
    let mut not_compared = Vec::new();
    let mut jobs = Vec::new();
    for name in candidate.names() {
        let shape = &candidate.get(name).expect("listed").shape;
        let missing: Vec<&str> = parents.iter().zip(parent_names).filter(|(p, _)| p.get(name).is_none()).map(|(_, n)| n.as_str()).collect();
        if !missing.is_empty() {
            not_compared.push(NotCompared { name: name.to_string(), reason: format!("missing in {}", missing.join(", ")) });
            continue;
        }
        for (p, pname) in parents.iter().zip(parent_names) {
            let ps = &p.get(name).expect("checked").shape;
            if ps != shape {
                return Err(Error::checkpoint(
                    pname,
                    format!("tensor {name} has shape {ps:?} here but {shape:?} in the candidate {}", candidate.dir().display()),
                ));
            }
        }
        let operands: Result<Vec<Operand<'a>>> =
            parents.iter().copied().chain([candidate]).map(|ck| ck.parts(name).and_then(|parts| Operand::new(name, &parts))).collect();
        match operands {
            Ok(operands) => jobs.push(Job { name, shape: shape.clone(), operands }),
            Err(e) => not_compared.push(NotCompared { name: name.to_string(), reason: e.to_string() }),
        }
    }
    let mut only_in_parents: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for (p, pname) in parents.iter().zip(parent_names) {
        for name in p.names().filter(|n| candidate.get(n).is_none()) {
            only_in_parents.entry(name).or_default().push(pname);
        }
    }
    for (name, present) in only_in_parents {
        not_compared
            .push(NotCompared { name: name.to_string(), reason: format!("missing in the candidate (present in {})", present.join(", ")) });
    }
    Ok((jobs, not_compared))
}

/// One tensor to fit: the parents' operands, then the candidate's.
struct Job<'a> {
    name: &'a str,
    shape: Vec<usize>,
    operands: Vec<Operand<'a>>,
}

impl Job<'_> {
    fn numel(&self) -> usize {
        self.shape.iter().product()
    }

    fn bytes_per_element(&self) -> usize {
        self.operands.iter().map(|o| o.element_size()).sum()
    }

    /// Asks the OS to fetch every sampled range at once: on a cold 800 GB checkpoint, quick mode
    /// is bound by how many reads are in flight, not by how fast they are summed.
    fn will_need(&self, tasks: &[Vec<Range<usize>>]) {
        for range in tasks.iter().flatten() {
            for op in &self.operands {
                op.will_need(range.start, range.len());
            }
        }
    }

    /// Moments over `ranges`; `runs` picks the f32-run bf16 kernel.
    fn moments(&self, ranges: &[Range<usize>], runs: bool) -> Moments {
        let n = self.operands.len();
        let mut buf = vec![0.0f32; n * CHUNK];
        let mut in_place = Vec::with_capacity(n);
        let mut m = Moments::new(n);
        for range in ranges {
            let mut pos = range.start;
            while pos < range.end {
                // All operands bf16 here (the usual case): read in place, up to the nearest part end.
                in_place.clear();
                in_place.extend(self.operands.iter().map_while(|op| op.bf16_from(pos)));
                if in_place.len() == n {
                    let len = in_place.iter().map(|r| r.len()).min().unwrap_or(0).min(range.end - pos);
                    let views: Vec<&[bf16]> = in_place.iter().map(|r| &r[..len]).collect();
                    if runs {
                        m.accumulate_bf16_runs(&views);
                    } else {
                        m.accumulate_bf16(&views);
                    }
                    pos += len;
                    continue;
                }
                let len = (range.end - pos).min(CHUNK);
                for (op, out) in self.operands.iter().zip(buf.chunks_exact_mut(CHUNK)) {
                    op.read(pos, &mut out[..len]);
                }
                let views: Vec<&[f32]> = buf.chunks_exact(CHUNK).map(|c| &c[..len]).collect();
                m.accumulate(&views);
                pos += len;
            }
        }
        m
    }
}

/// The element ranges each task reads: everything, or a seeded, stratified sample.
fn plan(numel: usize, opts: &Options) -> Vec<Vec<Range<usize>>> {
    if !opts.quick || opts.sample >= numel {
        return (0..numel).step_by(TASK).map(|s| std::iter::once(s..(s + TASK).min(numel)).collect()).collect();
    }
    let blocks = opts.sample.div_ceil(SAMPLE_BLOCK);
    let stratum = numel / blocks;
    let len = SAMPLE_BLOCK.min(stratum);
    let ranges: Vec<Range<usize>> = (0..blocks)
        .map(|b| {
            let slack = (stratum - len + 1) as u64;
            let start = b * stratum + (splitmix64(opts.seed ^ splitmix64(b as u64 ^ (numel as u64) << 20)) % slack) as usize;
            start..start + len
        })
        .collect();
    ranges.chunks(BLOCKS_PER_TASK).map(|c| c.to_vec()).collect()
}

/// A well-mixed 64-bit hash (SplitMix64's finaliser), for reproducible sampling.
fn splitmix64(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

fn tensor_fit(job: &Job<'_>, m: &Moments, elements: usize, opts: &Options) -> TensorFit {
    let k = job.operands.len() - 1;
    let sol = least_squares(m, opts.intercept);
    let yy = m.product(k, k);
    let relative = |sq: f64| {
        if yy > 0.0 {
            (sq / yy).sqrt()
        } else if sq > 0.0 {
            f64::MAX
        } else {
            0.0
        }
    };
    let n = m.count.max(1) as f64;
    let tss = yy - m.sums[k] * m.sums[k] / n;
    let rel_residual = relative(sol.rss);
    TensorFit {
        name: job.name.to_string(),
        layer: layer_of(job.name),
        kind: tensor_kind(job.name).to_string(),
        shape: job.shape.clone(),
        params: job.numel(),
        elements,
        r2: (tss > 1e-300 * yy.max(1e-300)).then(|| 1.0 - sol.rss / tss),
        cosines: (0..k)
            .map(|i| {
                let pp = m.product(i, i);
                (pp > 0.0 && yy > 0.0).then(|| m.product(i, k) / (pp * yy).sqrt())
            })
            .collect(),
        rel_distances: m.sq_diffs.iter().map(|&d| relative(d)).collect(),
        explained: rel_residual <= opts.thresholds.explained,
        outlier: false,
        coefficients: sol.coefficients,
        intercept: sol.intercept,
        rel_residual,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn samples_are_seeded_in_range_and_disjoint() {
        let opts = Options { quick: true, sample: 5000, seed: 7, ..Options::default() };
        let a = plan(1_000_003, &opts);
        assert_eq!(a, plan(1_000_003, &opts));
        let other = plan(1_000_003, &Options { seed: 8, ..opts.clone() });
        assert_ne!(a, other);
        let mut ranges: Vec<_> = a.into_iter().flatten().collect();
        ranges.sort_by_key(|r| r.start);
        assert!(ranges.iter().map(|r| r.len()).sum::<usize>() >= 5000);
        assert!(ranges.windows(2).all(|w| w[0].end <= w[1].start));
        assert!(ranges.last().unwrap().end <= 1_000_003);
    }

    #[test]
    fn small_tensors_and_full_mode_read_everything() {
        let quick = Options { quick: true, sample: 100, ..Options::default() };
        assert_eq!(plan(50, &quick), vec![vec![0..50]]);
        let full: Vec<_> = plan(3 * TASK + 1, &Options::default()).into_iter().flatten().collect();
        assert_eq!(full.iter().map(|r| r.len()).sum::<usize>(), 3 * TASK + 1);
        // 900 of 1000 elements: four strata of 250, each fully sampled.
        let ranges: Vec<_> = plan(1000, &Options { quick: true, sample: 900, ..Options::default() }).into_iter().flatten().collect();
        assert_eq!(ranges.iter().map(|r| r.len()).sum::<usize>(), 1000);
    }
}
