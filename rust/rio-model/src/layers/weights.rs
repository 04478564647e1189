//! Weights read in place from the memory-mapped checkpoint, and the compute precision.
//!
//! A [`Weight`] is a view into a shard's mmap; it holds an `Arc` of the [`Checkpoint`], so the
//! mapping outlives every view and nothing is copied at load: pages are read when a kernel first
//! touches them. Only two cases own memory: a bf16 computation over a checkpoint stored in another
//! dtype (the one explicit converted copy, as transformers' `dtype=torch.bfloat16` makes), and
//! small per-channel vectors (norm weights, `A_log`, `dt_bias`, the depthwise conv), which are
//! widened to f32 once: at most a few KB per layer, and in bf16 they are first rounded to bf16,
//! as transformers' bf16 model holds them.
use std::sync::Arc;

use rio_core::moe::{ExpertMats, MoeWeights, SharedExpert};
use rio_core::{bf16, f16, DType, Error, Result, Tensor, TensorRef};
use rio_cpu::gemm::MatRef;

use crate::Checkpoint;

/// The dtype a forward pass computes in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Precision {
    /// Every activation in f32; weights of any stored dtype are widened inside the kernels.
    F32,
    /// transformers' bf16 dtype flow (spec section 9): activations rounded to bf16 wherever
    /// transformers holds bf16 tensors, f32 where it computes in f32.
    Bf16,
}

impl Precision {
    /// `"auto"` (the checkpoint's dtype: bf16 for bf16 checkpoints, f32 otherwise), `"bfloat16"`
    /// or `"float32"`.
    pub fn parse(name: &str, ck: &Checkpoint) -> Result<Precision> {
        match name {
            "float32" => Ok(Precision::F32),
            "bfloat16" => Ok(Precision::Bf16),
            "auto" => Ok(if checkpoint_dtype(ck) == Some(DType::BF16) { Precision::Bf16 } else { Precision::F32 }),
            other => Err(Error::value("dtype", format!("expected \"auto\", \"bfloat16\" or \"float32\", got {other:?}"))),
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Precision::F32 => "float32",
            Precision::Bf16 => "bfloat16",
        }
    }

    /// Rounds `values` to what the activation dtype holds (nothing to do in f32).
    #[inline]
    pub fn round(self, values: &mut [f32]) {
        if self == Precision::Bf16 {
            round_bf16(values);
        }
    }

    /// One value rounded to the activation dtype.
    #[inline]
    pub fn round1(self, v: f32) -> f32 {
        match self {
            Precision::F32 => v,
            Precision::Bf16 => bf16::from_f32(v).to_f32(),
        }
    }
}

/// Rounds every value to the nearest bf16 (ties to even), kept in f32.
pub fn round_bf16(values: &mut [f32]) {
    values.iter_mut().for_each(|v| *v = bf16::from_f32(*v).to_f32());
}

/// The dtype of most of a checkpoint's matrices (the embedding table's).
fn checkpoint_dtype(ck: &Checkpoint) -> Option<DType> {
    ck.parts("embed_tokens.weight").ok()?.first().map(|t| t.dtype())
}

/// What keeps the memory under a weight view alive.
#[derive(Clone, Debug)]
enum Backing {
    Mapped { _checkpoint: Arc<Checkpoint> },
    Converted { _copy: Arc<Tensor> },
}

/// A weight tensor: a view into the mapped checkpoint, or into a converted copy.
#[derive(Clone, Debug)]
pub struct Weight {
    /// Valid as long as `backing` lives; only handed out with the lifetime of `&self`.
    view: TensorRef<'static>,
    backing: Backing,
}

impl Weight {
    pub fn view(&self) -> &TensorRef<'_> {
        &self.view
    }

    pub fn dtype(&self) -> DType {
        self.view.dtype()
    }

    /// A 2-D weight as a row-major matrix.
    pub fn mat(&self) -> MatRef<'_> {
        MatRef::from_tensor(&self.view, "weight").expect("weights are contiguous matrices")
    }

    /// Row `r` of a 2-D weight widened into `out`.
    pub fn row_f32(&self, r: usize, out: &mut [f32]) {
        let m = self.mat();
        match m.dtype {
            DType::BF16 => out.iter_mut().zip(m.row::<bf16>(r)).for_each(|(o, v)| *o = v.to_f32()),
            DType::F16 => out.iter_mut().zip(m.row::<f16>(r)).for_each(|(o, v)| *o = v.to_f32()),
            _ => out.copy_from_slice(m.row::<f32>(r)),
        }
    }
}

/// Expert matrices of one MoE block (either checkpoint layout), kept alive with their memory.
struct ExpertWeights {
    mats: Vec<ExpertMats<'static>>,
    backing: Vec<Backing>,
}

/// The weights of one sparse MoE block as the MoE pipeline takes them, built and validated once
/// at load, kept alive with their memory.
#[derive(Debug)]
pub struct MoeStore {
    weights: MoeWeights<'static>,
    _backing: Vec<Backing>,
}

impl MoeStore {
    pub fn weights(&self) -> &MoeWeights<'_> {
        &self.weights
    }
}

/// Reads weights of one checkpoint for a model computing in `precision`.
pub struct Loader {
    ck: Arc<Checkpoint>,
    pub precision: Precision,
}

impl Loader {
    pub fn new(ck: Arc<Checkpoint>, precision: Precision) -> Loader {
        Loader { ck, precision }
    }

    pub fn checkpoint(&self) -> &Checkpoint {
        &self.ck
    }

    fn dir(&self) -> String {
        self.ck.dir().display().to_string()
    }

    fn checked(&self, name: &str, shape: &[usize]) -> Result<()> {
        let stored = self.ck.get(name).ok_or_else(|| Error::checkpoint(self.dir(), format!("tensor {name} is missing")))?;
        if stored.shape != shape {
            return Err(Error::checkpoint(self.dir(), format!("tensor {name} has shape {:?}, expected {shape:?}", stored.shape)));
        }
        Ok(())
    }

    /// The dtype weights are kept in: as stored in f32 precision, bf16 in bf16 precision.
    fn wanted(&self, stored: DType) -> DType {
        match self.precision {
            Precision::F32 => stored,
            Precision::Bf16 => DType::BF16,
        }
    }

    /// A matrix (or any tensor stored as one part) of `shape`, in place when its dtype is the
    /// one the precision computes with.
    pub fn weight(&self, name: &str, shape: &[usize]) -> Result<Weight> {
        self.checked(name, shape)?;
        let parts = self.ck.parts(name)?;
        let dtype = parts[0].dtype();
        expect_float(dtype, name, &self.dir())?;
        if parts.len() == 1 && self.wanted(dtype) == dtype {
            // SAFETY: the view points into the checkpoint's mmap, which `backing` keeps alive.
            let view = unsafe { extend(parts[0].clone()) };
            return Ok(Weight { view, backing: Backing::Mapped { _checkpoint: self.ck.clone() } });
        }
        self.converted(name, &parts, shape, self.wanted(dtype))
    }

    fn converted(&self, name: &str, parts: &[TensorRef<'_>], shape: &[usize], dtype: DType) -> Result<Weight> {
        let values = widen_parts(parts, name, &self.dir())?;
        let copy = Arc::new(match dtype {
            DType::BF16 => Tensor::from_vec(values.iter().map(|&v| bf16::from_f32(v)).collect(), shape)?,
            DType::F16 => Tensor::from_vec(values.iter().map(|&v| f16::from_f32(v)).collect(), shape)?,
            _ => Tensor::from_vec(values, shape)?,
        });
        // SAFETY: the view points into `copy`'s heap buffer, which `backing` keeps alive.
        let view = unsafe { extend(copy.view()) };
        Ok(Weight { view, backing: Backing::Converted { _copy: copy } })
    }

    /// The experts of `{block}` (`gate_up_proj [E, 2I, H]`, `down_proj [E, H, I]`, fused or
    /// per-expert), in place when their dtype is the computing one.
    fn experts(&self, block: &str, e: usize, h: usize, i: usize) -> Result<ExpertWeights> {
        let (gate_up, down) = (format!("{block}.gate_up_proj"), format!("{block}.down_proj"));
        self.checked(&gate_up, &[e, 2 * i, h])?;
        self.checked(&down, &[e, h, i])?;
        let mats = self.ck.experts(block)?;
        let stored = mats.first().map_or(DType::F32, |m| m.gate.dtype());
        expect_float(stored, &gate_up, &self.dir())?;
        if self.wanted(stored) == stored {
            // SAFETY: every view points into the checkpoint's mmap, which `_backing` keeps alive.
            let mats =
                mats.into_iter().map(|m| unsafe { ExpertMats { gate: extend(m.gate), up: extend(m.up), down: extend(m.down) } }).collect();
            return Ok(ExpertWeights { mats, backing: vec![Backing::Mapped { _checkpoint: self.ck.clone() }] });
        }
        let dtype = self.wanted(stored);
        let gu = self.converted(&gate_up, &self.ck.parts(&gate_up)?, &[e, 2 * i, h], dtype)?;
        let dn = self.converted(&down, &self.ck.parts(&down)?, &[e, h, i], dtype)?;
        let mats = (0..e)
            .map(|x| {
                let g = gu.view.index0(x);
                ExpertMats { gate: g.narrow0(0, i), up: g.narrow0(i, i), down: dn.view.index0(x) }
            })
            .collect();
        Ok(ExpertWeights { mats, backing: vec![gu.backing, dn.backing] })
    }

    /// A MoE block `{p}`: `gate.weight [E, H]`, `experts.*` (`dims` = (E, H, I)), and with
    /// `shared_intermediate = Some(I_s)` the shared expert `shared_expert.{gate,up,down}_proj`
    /// and its gate `shared_expert_gate.weight [1, H]`.
    pub fn moe(&self, p: &str, (e, h, i): (usize, usize, usize), shared_intermediate: Option<usize>) -> Result<MoeStore> {
        let router = self.weight(&format!("{p}.gate.weight"), &[e, h])?;
        let experts = self.experts(&format!("{p}.experts"), e, h, i)?;
        let mut backing = experts.backing;
        backing.push(router.backing);
        let shared = match shared_intermediate {
            Some(i_s) => {
                let mut part = |name: &str, shape: &[usize]| -> Result<TensorRef<'static>> {
                    let w = self.weight(&format!("{p}.{name}"), shape)?;
                    backing.push(w.backing);
                    Ok(w.view)
                };
                Some(SharedExpert {
                    mats: ExpertMats {
                        gate: part("shared_expert.gate_proj.weight", &[i_s, h])?,
                        up: part("shared_expert.up_proj.weight", &[i_s, h])?,
                        down: part("shared_expert.down_proj.weight", &[h, i_s])?,
                    },
                    gate_weight: Some(part("shared_expert_gate.weight", &[1, h])?),
                })
            }
            None => None,
        };
        let (mut gate, mut up, mut down) = (Vec::with_capacity(e), Vec::with_capacity(e), Vec::with_capacity(e));
        for m in experts.mats {
            gate.push(m.gate);
            up.push(m.up);
            down.push(m.down);
        }
        let weights = MoeWeights::per_expert(router.view, gate, up, down, shared)?;
        Ok(MoeStore { weights, _backing: backing })
    }

    /// A small per-channel tensor widened to f32 (rounded to bf16 first in bf16 precision).
    pub fn vector(&self, name: &str, shape: &[usize]) -> Result<Vec<f32>> {
        self.checked(name, shape)?;
        let mut values = widen_parts(&self.ck.parts(name)?, name, &self.dir())?;
        self.precision.round(&mut values);
        Ok(values)
    }
}

/// # Safety
/// The caller keeps the viewed memory alive as long as the returned view is used.
unsafe fn extend(view: TensorRef<'_>) -> TensorRef<'static> {
    std::mem::transmute::<TensorRef<'_>, TensorRef<'static>>(view)
}

fn expect_float(dtype: DType, name: &str, dir: &str) -> Result<()> {
    if matches!(dtype, DType::F32 | DType::BF16 | DType::F16) {
        return Ok(());
    }
    Err(Error::checkpoint(dir, format!("tensor {name} has dtype {dtype}, expected a float dtype (BF16, F16 or F32)")))
}

fn widen_parts(parts: &[TensorRef<'_>], name: &str, dir: &str) -> Result<Vec<f32>> {
    let mut out = Vec::with_capacity(parts.iter().map(|p| p.numel()).sum());
    for part in parts {
        let flat = part.to_contiguous();
        match flat.dtype() {
            DType::F32 => out.extend_from_slice(flat.as_slice::<f32>()),
            DType::BF16 => out.extend(flat.as_slice::<bf16>().iter().map(|v| v.to_f32())),
            DType::F16 => out.extend(flat.as_slice::<f16>().iter().map(|v| v.to_f32())),
            other => expect_float(other, name, dir)?,
        }
    }
    Ok(out)
}
