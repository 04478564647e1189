//! Dense projections through cuBLAS (`cublasGemmEx`, fp32 accumulation): the attention and
//! Gated DeltaNet projections and the LM head, where cuBLAS is the fastest choice. cuBLAS is
//! dlopened on first use; [`crate::probe`] reports whether it loads.
use std::sync::Mutex;

use cudarc::cublas::{result as cublas, sys as cb};
use rio_core::{DType, Error, Result};

use crate::device::gpu;

/// One cuBLAS handle per process, re-pointed at the caller's stream per call.
struct Handle(cb::cublasHandle_t);
// SAFETY: the handle is only used under the mutex.
unsafe impl Send for Handle {}

fn handle() -> Result<&'static Mutex<Handle>> {
    static HANDLE: std::sync::OnceLock<std::result::Result<Mutex<Handle>, String>> = std::sync::OnceLock::new();
    let h = HANDLE.get_or_init(|| {
        if !crate::probe().cublas {
            return Err("cuBLAS (libcublas.so.13) was not found; install nvidia-cublas or put it on LD_LIBRARY_PATH".into());
        }
        cublas::create_handle().map(|h| Mutex::new(Handle(h))).map_err(|e| format!("cublasCreate failed: {e:?}"))
    });
    h.as_ref().map_err(|reason| Error::Unsupported(reason.clone()))
}

fn cuda_type(d: DType) -> Result<cb::cudaDataType> {
    Ok(match d {
        DType::BF16 => cb::cudaDataType::CUDA_R_16BF,
        DType::F16 => cb::cudaDataType::CUDA_R_16F,
        DType::F32 => cb::cudaDataType::CUDA_R_32F,
        other => return Err(Error::dtype("x", "bfloat16, float16 or float32", other)),
    })
}

/// `c [m, n] = a [m, k] · wᵀ` with `w [n, k]`, all row-major device matrices with row strides
/// `lda`, `ldw`, `ldc` (elements); `a` and `w` of `dtype`, `c` of `out_dtype` (fp32 or `dtype`).
///
/// # Safety
/// The pointers must address device memory of the given shapes and strides; `stream` must be 0
/// or a live stream of device 0's primary context.
#[allow(clippy::too_many_arguments)]
pub unsafe fn gemm_nt(
    a: u64,
    lda: usize,
    w: u64,
    ldw: usize,
    c: u64,
    ldc: usize,
    (m, n, k): (usize, usize, usize),
    dtype: DType,
    out_dtype: DType,
    stream: u64,
) -> Result<()> {
    if out_dtype != DType::F32 && out_dtype != dtype {
        return Err(Error::dtype("out", format!("float32 or {}", dtype.name()), out_dtype));
    }
    if m == 0 || n == 0 {
        return Ok(());
    }
    let g = gpu()?;
    g.bind()?;
    let h = handle()?.lock().unwrap();
    let (alpha, beta) = (1f32, 0f32);
    // Row-major C = A·Wᵀ is column-major Cᵀ = W·Aᵀ: cuBLAS sees W (column-major [k, n]) transposed
    // times A (column-major [k, m]).
    let to_i32 = |v: usize, what: &str| i32::try_from(v).map_err(|_| Error::value(what, format!("{v} exceeds cuBLAS's 32-bit sizes")));
    cublas::set_stream(h.0, stream as cb::cudaStream_t).map_err(|e| Error::Unsupported(format!("cublasSetStream failed: {e:?}")))?;
    cublas::gemm_ex(
        h.0,
        cb::cublasOperation_t::CUBLAS_OP_T,
        cb::cublasOperation_t::CUBLAS_OP_N,
        to_i32(n, "n")?,
        to_i32(m, "m")?,
        to_i32(k, "k")?,
        &alpha as *const f32 as *const _,
        w as *const _,
        cuda_type(dtype)?,
        to_i32(ldw, "ldw")?,
        a as *const _,
        cuda_type(dtype)?,
        to_i32(lda, "lda")?,
        &beta as *const f32 as *const _,
        c as *mut _,
        cuda_type(out_dtype)?,
        to_i32(ldc, "ldc")?,
        cb::cublasComputeType_t::CUBLAS_COMPUTE_32F,
        cb::cublasGemmAlgo_t::CUBLAS_GEMM_DEFAULT,
    )
    .map_err(|e| Error::Unsupported(format!("cublasGemmEx failed: {e:?}")))
}
