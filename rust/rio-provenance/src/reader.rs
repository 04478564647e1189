//! Reads any element range of a logical tensor (one or many stored parts, each bf16, f16 or f32)
//! as f32 (exact for every stored dtype), widening with the best SIMD level available.
use half::slice::HalfFloatSliceExt;
use rio_core::{bf16, f16, DType, Error, Result, TensorRef};
use rio_cpu::features::{self, Isa};

/// A logical tensor as its parts' element slices, concatenated in row-major order.
pub struct Operand<'a> {
    parts: Vec<Slice<'a>>,
    /// First logical element of each part, plus the total at the end.
    starts: Vec<usize>,
}

enum Slice<'a> {
    BF16(&'a [bf16]),
    F16(&'a [f16]),
    F32(&'a [f32]),
}

impl<'a> Operand<'a> {
    /// `name` labels errors; parts must be contiguous float tensors.
    pub fn new(name: &str, parts: &[TensorRef<'a>]) -> Result<Operand<'a>> {
        let mut slices = Vec::with_capacity(parts.len());
        let mut starts = vec![0usize];
        for p in parts {
            let s = match p.dtype() {
                DType::BF16 => p.as_slice::<bf16>().map(Slice::BF16),
                DType::F16 => p.as_slice::<f16>().map(Slice::F16),
                DType::F32 => p.as_slice::<f32>().map(Slice::F32),
                d => return Err(Error::dtype(name, "bfloat16, float16 or float32", d)),
            }
            .ok_or_else(|| Error::value(name, "stored tensor is not contiguous"))?;
            starts.push(starts.last().expect("non-empty") + p.numel());
            slices.push(s);
        }
        Ok(Operand { parts: slices, starts })
    }

    pub fn numel(&self) -> usize {
        *self.starts.last().expect("non-empty")
    }

    /// Stored bytes per element of the first part (for throughput accounting).
    pub fn element_size(&self) -> usize {
        self.parts.first().map_or(0, |p| match p {
            Slice::BF16(_) | Slice::F16(_) => 2,
            Slice::F32(_) => 4,
        })
    }

    /// The bf16 elements from `start` to the end of the part holding it, if that part is bf16:
    /// the fused kernels read these in place, with no widening pass.
    pub fn bf16_from(&self, start: usize) -> Option<&'a [bf16]> {
        let part = self.starts.partition_point(|&s| s <= start) - 1;
        match self.parts.get(part)? {
            Slice::BF16(s) => s.get(start - self.starts[part]..),
            _ => None,
        }
    }

    /// Asks the OS to fetch elements `[start, start + len)` ahead of reading them.
    pub fn will_need(&self, start: usize, len: usize) {
        for (slice, offset, n) in self.segments(start, len.min(self.numel().saturating_sub(start))) {
            let bytes = match slice {
                Slice::BF16(s) => as_bytes(&s[offset..offset + n]),
                Slice::F16(s) => as_bytes(&s[offset..offset + n]),
                Slice::F32(s) => as_bytes(&s[offset..offset + n]),
            };
            rio_model::safetensors::will_need(bytes);
        }
    }

    /// Widens elements `[start, start + out.len())` into `out`.
    pub fn read(&self, start: usize, out: &mut [f32]) {
        assert!(start + out.len() <= self.numel(), "read past the end of the tensor");
        let isa = features::active_isa();
        let mut done = 0;
        for (slice, offset, n) in self.segments(start, out.len()) {
            widen(slice, offset, &mut out[done..done + n], isa);
            done += n;
        }
    }

    /// The pieces of elements `[start, start + len)`: (part, offset in it, count), in order.
    fn segments(&self, start: usize, len: usize) -> impl Iterator<Item = (&Slice<'a>, usize, usize)> + '_ {
        let mut part = self.starts.partition_point(|&s| s <= start).saturating_sub(1);
        let (mut pos, end) = (start, start + len);
        std::iter::from_fn(move || {
            if pos >= end {
                return None;
            }
            let offset = pos - self.starts[part];
            let n = (self.starts[part + 1] - pos).min(end - pos);
            let piece = (&self.parts[part], offset, n);
            pos += n;
            part += 1;
            Some(piece)
        })
    }
}

fn as_bytes<T: Copy>(s: &[T]) -> &[u8] {
    // SAFETY: the elements are plain numbers; the byte view covers exactly their memory.
    unsafe { std::slice::from_raw_parts(s.as_ptr() as *const u8, std::mem::size_of_val(s)) }
}

fn widen(src: &Slice<'_>, offset: usize, out: &mut [f32], isa: Isa) {
    let n = out.len();
    match src {
        Slice::F16(s) => s[offset..offset + n].convert_to_f32_slice(out),
        Slice::BF16(s) => {
            let s = &s[offset..offset + n];
            match isa {
                // SAFETY: the active level never exceeds what the CPU supports.
                Isa::Avx512 | Isa::Avx512Bf16 | Isa::Amx => unsafe { widen_bf16_avx512(s, out) },
                Isa::Avx2 => unsafe { widen_bf16_avx2(s, out) },
                Isa::Scalar => widen_bf16(s, out),
            }
        }
        Slice::F32(s) => {
            out.copy_from_slice(&s[offset..offset + n]);
        }
    }
}

/// bf16 is the top half of an f32: shift, reinterpret, convert.
#[inline(always)]
fn widen_bf16(src: &[bf16], out: &mut [f32]) {
    for (o, v) in out.iter_mut().zip(src) {
        *o = f32::from_bits((v.to_bits() as u32) << 16);
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn widen_bf16_avx512(src: &[bf16], out: &mut [f32]) {
    widen_bf16(src, out)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn widen_bf16_avx2(src: &[bf16], out: &mut [f32]) {
    widen_bf16(src, out)
}

#[cfg(not(target_arch = "x86_64"))]
unsafe fn widen_bf16_avx512(src: &[bf16], out: &mut [f32]) {
    widen_bf16(src, out)
}

#[cfg(not(target_arch = "x86_64"))]
unsafe fn widen_bf16_avx2(src: &[bf16], out: &mut [f32]) {
    widen_bf16(src, out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_across_parts_of_mixed_dtypes() {
        let a: Vec<bf16> = [1.5f32, -2.0, 3.25].iter().map(|&v| bf16::from_f32(v)).collect();
        let b: Vec<f16> = [4.0f32, 5.5].iter().map(|&v| f16::from_f32(v)).collect();
        let c = [6.0f32, 7.0, 8.0];
        let parts =
            [TensorRef::from_slice(&a, &[3]).unwrap(), TensorRef::from_slice(&b, &[2]).unwrap(), TensorRef::from_slice(&c, &[3]).unwrap()];
        let op = Operand::new("t", &parts).unwrap();
        assert_eq!(op.numel(), 8);
        let mut out = [0.0f32; 6];
        op.read(1, &mut out);
        assert_eq!(out, [-2.0, 3.25, 4.0, 5.5, 6.0, 7.0]);
        let mut one = [0.0f32; 1];
        op.read(7, &mut one);
        assert_eq!(one, [8.0]);
    }
}
