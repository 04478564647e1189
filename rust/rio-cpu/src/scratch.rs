//! Scratch buffers reused across calls. A large buffer freshly allocated per call is a fresh
//! mapping, paid for in page faults (about 8% of a prefill layer); buffers taken here go back
//! to a process-wide free list when dropped, so steady-state calls map nothing new. Each taker
//! owns its buffer until the drop, so concurrent calls never share one.
use std::marker::PhantomData;
use std::sync::Mutex;

#[derive(Clone, Copy)]
#[repr(C, align(64))]
struct Chunk([u8; 64]);

static FREE: Mutex<Vec<Vec<Chunk>>> = Mutex::new(Vec::new());

/// Element types a scratch buffer can hold.
///
/// # Safety
/// Every bit pattern must be a valid value, and the alignment must be at most 64.
pub unsafe trait Plain: Copy {}
// SAFETY: plain numbers.
unsafe impl Plain for f32 {}
unsafe impl Plain for u32 {}
unsafe impl Plain for rio_core::bf16 {}

/// `len` elements of `T` from the free list; derefs to a slice.
pub struct Scratch<T: Plain> {
    chunks: Vec<Chunk>,
    len: usize,
    _marker: PhantomData<T>,
}

impl<T: Plain> Scratch<T> {
    /// A buffer whose contents are whatever its last user left: callers write before they read.
    pub fn stale(len: usize) -> Scratch<T> {
        let need = (len * std::mem::size_of::<T>()).div_ceil(64);
        if need == 0 {
            return Scratch { chunks: Vec::new(), len, _marker: PhantomData };
        }
        // Sizes round up to a power of two, and a buffer is reused only for its own size class:
        // best fit across classes would hand a small request the one large buffer a later large
        // request then has to map afresh.
        let class = need.next_power_of_two();
        let taken = {
            let mut free = FREE.lock().unwrap_or_else(|e| e.into_inner());
            free.iter().position(|b| b.len() == class).map(|i| free.swap_remove(i))
        };
        let chunks = taken.unwrap_or_else(|| fresh(class));
        Scratch { chunks, len, _marker: PhantomData }
    }

    /// A buffer of zeros.
    pub fn zeroed(len: usize) -> Scratch<T> {
        let mut s = Scratch::stale(len);
        // SAFETY: zero bytes are a valid T (`Plain`).
        unsafe { std::ptr::write_bytes(s.as_mut_ptr(), 0, len) };
        s
    }
}

/// `n` zeroed chunks, mapped lazily: pages past what a taker touches stay unmapped.
fn fresh(n: usize) -> Vec<Chunk> {
    let layout = std::alloc::Layout::array::<Chunk>(n).expect("scratch buffers fit in memory");
    // SAFETY: n > 0; zero bytes are valid chunks; the Vec owns the allocation, made with the
    // layout of `n` chunks as its own.
    unsafe {
        let ptr = std::alloc::alloc_zeroed(layout) as *mut Chunk;
        if ptr.is_null() {
            std::alloc::handle_alloc_error(layout);
        }
        Vec::from_raw_parts(ptr, n, n)
    }
}

impl<T: Plain> std::ops::Deref for Scratch<T> {
    type Target = [T];
    fn deref(&self) -> &[T] {
        // SAFETY: the chunks hold at least `len` elements (see `stale`), aligned (`Plain`).
        unsafe { std::slice::from_raw_parts(self.chunks.as_ptr() as *const T, self.len) }
    }
}

impl<T: Plain> std::ops::DerefMut for Scratch<T> {
    fn deref_mut(&mut self) -> &mut [T] {
        // SAFETY: as `deref`, and this buffer is owned by `self` alone.
        unsafe { std::slice::from_raw_parts_mut(self.chunks.as_mut_ptr() as *mut T, self.len) }
    }
}

impl<T: Plain> Drop for Scratch<T> {
    fn drop(&mut self) {
        let chunks = std::mem::take(&mut self.chunks);
        if !chunks.is_empty() {
            FREE.lock().unwrap_or_else(|e| e.into_inner()).push(chunks);
        }
    }
}

/// Fills buffers of the free list with NaN bit patterns, so tests catch a reader of stale data.
#[cfg(test)]
pub(crate) fn poison() {
    let taken: Vec<Scratch<u32>> = [1usize << 8, 1 << 12, 1 << 16, 1 << 20, 1 << 22].map(Scratch::stale).into_iter().collect();
    for mut b in taken {
        b.fill(f32::NAN.to_bits() | 0x0040_7fc0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zeroed_clears_what_an_earlier_user_left() {
        for len in [1, 1000, 1 << 20] {
            let mut dirty = Scratch::<u32>::stale(len);
            dirty.iter_mut().for_each(|v| *v = u32::MAX);
            drop(dirty);
            let f = Scratch::<f32>::zeroed(len);
            assert_eq!(f.len(), len);
            assert!(f.iter().all(|&v| v.to_bits() == 0), "a zeroed buffer of {len} holds old values");
            let h = Scratch::<rio_core::bf16>::zeroed(len);
            assert!(h.len() == len && h.iter().all(|v| v.to_bits() == 0));
        }
    }

    #[test]
    fn concurrent_takers_never_share_a_buffer() {
        std::thread::scope(|s| {
            for id in 0..8u32 {
                s.spawn(move || {
                    for _ in 0..200 {
                        let mut b = Scratch::<u32>::stale(4096 + id as usize);
                        b.iter_mut().for_each(|v| *v = id);
                        std::thread::yield_now();
                        assert!(b.iter().all(|&v| v == id), "another taker wrote into this buffer");
                    }
                });
            }
        });
    }
}
