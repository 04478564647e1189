//! Reads a logical checkpoint tensor into an owned f32 buffer, checking its shape.
//!
//! This first f32 path upcasts bf16/f16 weights once at load time; computing on the
//! memory-mapped bf16 weights in place is the next step (issue 4).
use rio_core::{bf16, f16, DType, Error, Result, TensorRef};

use crate::Checkpoint;

/// The elements of `name`, in row-major order, as f32; `shape` is the shape it must have.
pub fn load_f32(ck: &Checkpoint, name: &str, shape: &[usize]) -> Result<Vec<f32>> {
    let dir = ck.dir().display().to_string();
    let stored = ck.get(name).ok_or_else(|| Error::checkpoint(&dir, format!("tensor {name} is missing")))?;
    if stored.shape != shape {
        return Err(Error::checkpoint(&dir, format!("tensor {name} has shape {:?}, expected {shape:?}", stored.shape)));
    }
    let mut out = Vec::with_capacity(stored.numel());
    for part in ck.parts(name)? {
        append_f32(&part, name, &dir, &mut out)?;
    }
    Ok(out)
}

fn append_f32(t: &TensorRef<'_>, name: &str, dir: &str, out: &mut Vec<f32>) -> Result<()> {
    let flat = t.to_contiguous();
    match flat.dtype() {
        DType::F32 => out.extend_from_slice(flat.as_slice::<f32>()),
        DType::BF16 => out.extend(flat.as_slice::<bf16>().iter().map(|v| v.to_f32())),
        DType::F16 => out.extend(flat.as_slice::<f16>().iter().map(|v| v.to_f32())),
        other => return Err(Error::checkpoint(dir, format!("tensor {name} has dtype {other}, expected a float dtype (BF16, F16 or F32)"))),
    }
    Ok(())
}
