//! This machine's peaks, measured on the worker pool: the streaming read bandwidth from memory and
//! the dense bf16 GEMM rate of rio's own [`gemm::matmul_nt`]. Benchmarks quote their results as a
//! percentage of these, so a reader can tell how close to the hardware a kernel runs.
use std::time::{Duration, Instant};

use rayon::prelude::*;
use rio_core::{bf16, Error, Result};

use crate::features;
use crate::gemm::{self, MatRef};

/// One cache line, so the buffer is 64-byte aligned for full-width loads.
#[derive(Clone, Copy)]
#[repr(C, align(64))]
struct Line([u64; 8]);

/// Windows the read-bandwidth buffer is timed in.
const WINDOWS: usize = 8;

/// Pieces each thread's share is cut into, so work stealing evens out a slow thread.
const PIECES_PER_THREAD: usize = 8;

fn check_seconds(seconds: f64) -> Result<Duration> {
    if !seconds.is_finite() || seconds <= 0.0 || seconds > 3600.0 {
        return Err(Error::value("seconds", format!("must be in (0, 3600], got {seconds}")));
    }
    Ok(Duration::from_secs_f64(seconds))
}

/// Bytes the OS says it can still give us, where it says (Linux); `None` elsewhere.
fn available_memory() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = text.lines().find(|l| l.starts_with("MemAvailable:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// Refuses sizes that would exhaust memory: the allocation itself would succeed (overcommit) and
/// the process would be killed while touching it.
fn check_fits(bytes: u64, arg: &str) -> Result<()> {
    if let Some(avail) = available_memory() {
        if bytes > avail / 10 * 9 {
            return Err(Error::value(arg, format!("needs {bytes} bytes but only {avail} bytes of memory are available")));
        }
    }
    Ok(())
}

/// `len` copies of `value`, or an error naming `arg` when the memory cannot be had.
fn alloc_filled<T: Clone>(len: usize, value: T, arg: &str) -> Result<Vec<T>> {
    let mut v = Vec::new();
    v.try_reserve_exact(len).map_err(|e| Error::value(arg, format!("cannot allocate {len} elements: {e}")))?;
    v.resize(len, value);
    Ok(v)
}

/// Calls `pass` (which reports nothing) once to warm up, then again until `budget` has passed,
/// at least once more; returns the shortest pass.
fn best_pass(budget: Duration, mut pass: impl FnMut()) -> Duration {
    pass();
    let start = Instant::now();
    let mut best = Duration::MAX;
    loop {
        let t = Instant::now();
        pass();
        best = best.min(t.elapsed());
        if start.elapsed() >= budget {
            return best;
        }
    }
}

/// A resident buffer, sized by the caller far above the caches: reading it through measures the
/// memory's bandwidth, and evicts whatever the caches held before (so a benchmark can start each
/// timed call cold, as in a model whose other layers run in between).
pub struct StreamBuffer {
    lines: Vec<Line>,
}

impl StreamBuffer {
    /// `bytes` (rounded down to whole 64-byte lines), every page written once from the pool.
    pub fn new(bytes: u64) -> Result<Self> {
        let lines = bytes / 64;
        if lines == 0 {
            return Err(Error::value("bytes", format!("must be at least 64, got {bytes}")));
        }
        check_fits(bytes, "bytes")?;
        let lines = usize::try_from(lines).map_err(|_| Error::value("bytes", format!("{bytes} does not fit in memory")))?;
        let mut buf: Vec<Line> = Vec::new();
        buf.try_reserve_exact(lines).map_err(|e| Error::value("bytes", format!("cannot allocate {bytes} bytes: {e}")))?;
        let piece = piece_len(lines);
        // Written in parallel, so no read pass pays for page faults.
        crate::threads::pool().install(|| {
            buf.spare_capacity_mut()[..lines].par_chunks_mut(piece).enumerate().for_each(|(i, chunk)| {
                for (j, line) in chunk.iter_mut().enumerate() {
                    line.write(Line([(i * piece + j) as u64; 8]));
                }
            })
        });
        // SAFETY: the loop above initialised all `lines` elements.
        unsafe { buf.set_len(lines) };
        Ok(StreamBuffer { lines: buf })
    }

    pub fn bytes(&self) -> u64 {
        self.lines.len() as u64 * 64
    }

    /// Reads every byte once across the pool; the checksum keeps the reads from being optimised away.
    pub fn read_all(&self) -> u64 {
        let sum_lines = line_summer();
        let piece = piece_len(self.lines.len());
        crate::threads::pool().install(|| self.lines.par_chunks(piece).map(sum_lines).reduce(|| 0, u64::wrapping_add))
    }
}

fn piece_len(lines: usize) -> usize {
    lines.div_ceil(crate::threads::num_threads() * PIECES_PER_THREAD).max(1)
}

/// Streaming read bandwidth in GB/s (1e9 bytes per second): every pool thread sums its share of
/// one window (an eighth) of a `bytes`-sized [`StreamBuffer`] at a time, with the widest integer
/// loads this CPU has, sweeping the buffer for about `seconds`; the fastest window counts. Short
/// windows give many samples, so a busy machine still shows its peak; with `bytes` at least 4x the
/// last-level cache, each window was evicted by the reads since its last visit and comes from memory.
pub fn read_bandwidth(bytes: u64, seconds: f64) -> Result<f64> {
    let budget = check_seconds(seconds)?;
    let buf = StreamBuffer::new(bytes)?;
    let window = (buf.lines.len() / WINDOWS).max(1);
    let windows: Vec<&[Line]> = buf.lines.chunks_exact(window).collect();
    let sum_lines = line_summer();
    let pool = crate::threads::pool();
    let mut next = 0;
    let best = best_pass(budget, || {
        let lines = windows[next];
        next = (next + 1) % windows.len();
        let piece = piece_len(lines.len());
        std::hint::black_box(pool.install(|| lines.par_chunks(piece).map(sum_lines).reduce(|| 0, u64::wrapping_add)));
    });
    Ok((window * 64) as f64 / best.as_secs_f64() / 1e9)
}

/// The fastest summing loop this CPU runs.
fn line_summer() -> fn(&[Line]) -> u64 {
    #[cfg(target_arch = "x86_64")]
    {
        let f = features::detected();
        if f.avx512f {
            return |l| unsafe { simd::sum_avx512(l) };
        }
        if f.avx2 {
            return |l| unsafe { simd::sum_avx2(l) };
        }
    }
    sum_portable
}

fn sum_portable(lines: &[Line]) -> u64 {
    let mut acc = [0u64; 8];
    for line in lines {
        for (a, v) in acc.iter_mut().zip(&line.0) {
            *a = a.wrapping_add(*v);
        }
    }
    acc.iter().fold(0, |s, v| s.wrapping_add(*v))
}

#[cfg(target_arch = "x86_64")]
mod simd {
    use std::arch::x86_64::*;

    use super::Line;

    /// # Safety
    /// The CPU must support AVX-512F.
    #[target_feature(enable = "avx512f")]
    pub unsafe fn sum_avx512(lines: &[Line]) -> u64 {
        // Four independent accumulators keep four loads in flight per iteration.
        let mut acc = [_mm512_setzero_si512(); 4];
        let quads = lines.chunks_exact(4);
        let rest = quads.remainder();
        for quad in quads {
            for (a, line) in acc.iter_mut().zip(quad) {
                *a = _mm512_add_epi64(*a, _mm512_load_si512(line.0.as_ptr() as *const _));
            }
        }
        for line in rest {
            acc[0] = _mm512_add_epi64(acc[0], _mm512_load_si512(line.0.as_ptr() as *const _));
        }
        let total = _mm512_add_epi64(_mm512_add_epi64(acc[0], acc[1]), _mm512_add_epi64(acc[2], acc[3]));
        _mm512_reduce_add_epi64(total) as u64
    }

    /// # Safety
    /// The CPU must support AVX2.
    #[target_feature(enable = "avx2")]
    pub unsafe fn sum_avx2(lines: &[Line]) -> u64 {
        let mut acc = [_mm256_setzero_si256(); 4];
        for line in lines {
            let p = line.0.as_ptr() as *const __m256i;
            acc[0] = _mm256_add_epi64(acc[0], _mm256_load_si256(p));
            acc[1] = _mm256_add_epi64(acc[1], _mm256_load_si256(p.add(1)));
        }
        let mut out = [0u64; 4];
        let total = _mm256_add_epi64(acc[0], acc[1]);
        _mm256_storeu_si256(out.as_mut_ptr() as *mut __m256i, total);
        out.iter().fold(0, |s, v| s.wrapping_add(*v))
    }
}

/// Dense bf16 GEMM rate in GFLOP/s (2·m·n·k per product): `out [m, n] = x [m, k] · w [n, k]ᵀ` by
/// [`gemm::matmul_nt`] with the active instruction set, the n rows of `w` split in one block per
/// pool thread, repeated for about `seconds`; the best product counts.
pub fn gemm_peak(m: usize, n: usize, k: usize, seconds: f64) -> Result<f64> {
    let budget = check_seconds(seconds)?;
    for (arg, v) in [("m", m), ("n", n), ("k", k)] {
        if v == 0 {
            return Err(Error::value(arg, "must be positive, got 0"));
        }
    }
    let too_big = || Error::value("m, n, k", format!("{m}x{n}x{k} is too large"));
    let elements = m.checked_mul(k).and_then(|a| n.checked_mul(k).and_then(|b| a.checked_add(b))).ok_or_else(too_big)?;
    let out_len = m.checked_mul(n).ok_or_else(too_big)?;
    check_fits((elements as u64 * 2).saturating_add(out_len as u64 * 4), "m, n, k")?;

    let x = random_bf16(m * k, 1, "m, k")?;
    let w = random_bf16(n * k, 2, "n, k")?;
    let pool = crate::threads::pool();
    let threads = pool.current_num_threads();
    // Blocks of whole 64-row panels, so every thread runs the kernel's full-width path.
    let block = n.div_ceil(threads).div_ceil(64).max(1) * 64;
    let mut out = alloc_filled(out_len, 0f32, "m, n")?;
    let xm = MatRef::from_slice(&x, m, k);
    let wm = MatRef::from_slice(&w, n, k);
    let best = best_pass(budget, || {
        pool.install(|| {
            // Each block writes its own [m, nb] tile of `out`: a peak needs the arithmetic, not the layout.
            out.par_chunks_mut(block * m).enumerate().for_each(|(b, tile)| {
                let n0 = b * block;
                let nb = block.min(n - n0);
                gemm::matmul_nt(xm, wm.rows_range(n0, nb), tile, nb);
            })
        });
        std::hint::black_box(&out);
    });
    Ok(2.0 * m as f64 * n as f64 * k as f64 / best.as_secs_f64() / 1e9)
}

/// Values in about [-1, 1) from a fixed-seed xorshift: reproducible, with no zeros to flatter a kernel.
fn random_bf16(len: usize, seed: u64, arg: &str) -> Result<Vec<bf16>> {
    let mut v = alloc_filled(len, bf16::ZERO, arg)?;
    let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    for x in v.iter_mut() {
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        *x = bf16::from_f32((s >> 40) as f32 / (1u64 << 23) as f32 - 1.0);
    }
    Ok(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summers_agree_with_a_plain_sum() {
        let lines: Vec<Line> = (0..1003u64).map(|i| Line([i, i * 3, u64::MAX - i, 7, 0, 1, i << 40, 2])).collect();
        let want = lines.iter().flat_map(|l| l.0).fold(0u64, |s, v| s.wrapping_add(v));
        assert_eq!(sum_portable(&lines), want);
        assert_eq!(line_summer()(&lines), want);
    }

    #[test]
    fn stream_buffer_reads_every_line_once() {
        // Line i holds i in all eight words.
        let buf = StreamBuffer::new(1000 * 64 + 63).unwrap();
        assert_eq!(buf.bytes(), 1000 * 64);
        assert_eq!(buf.read_all(), 8 * (0..1000u64).sum::<u64>());
    }

    #[test]
    fn read_bandwidth_is_positive_and_finite() {
        let gb_s = read_bandwidth(8 << 20, 0.05).unwrap();
        assert!(gb_s.is_finite() && gb_s > 0.0, "{gb_s}");
    }

    #[test]
    fn gemm_peak_is_positive_and_finite() {
        let gflops = gemm_peak(64, 130, 96, 0.02).unwrap();
        assert!(gflops.is_finite() && gflops > 0.0, "{gflops}");
    }

    #[test]
    fn bad_arguments_are_named() {
        assert!(read_bandwidth(0, 1.0).unwrap_err().to_string().starts_with("bytes"));
        assert!(read_bandwidth(1 << 20, -1.0).unwrap_err().to_string().starts_with("seconds"));
        assert!(read_bandwidth(1 << 20, f64::NAN).unwrap_err().to_string().starts_with("seconds"));
        assert!(read_bandwidth(u64::MAX, 1.0).unwrap_err().to_string().starts_with("bytes"));
        assert!(gemm_peak(0, 8, 8, 1.0).unwrap_err().to_string().starts_with("m"));
        assert!(gemm_peak(8, 8, 0, 1.0).unwrap_err().to_string().starts_with("k"));
        assert!(gemm_peak(usize::MAX, usize::MAX, 2, 1.0).is_err());
        assert!(gemm_peak(8, 8, 8, 0.0).unwrap_err().to_string().starts_with("seconds"));
    }
}
