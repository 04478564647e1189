//! [`CpuBackend`]: the `Backend` trait on the CPU kernels.
use rio_core::moe::{check_grouped_gemm_args, Dispatch, MoeWeights, RouterConfig, Routing};
use rio_core::{Backend, Error, Result, TensorMut, TensorRef};

use crate::gemm::MatRef;
use crate::moe::{self, rows};

#[derive(Clone, Copy, Debug, Default)]
pub struct CpuBackend;

impl Backend for CpuBackend {
    fn name(&self) -> &str {
        "cpu"
    }

    fn moe_route(&self, x: &TensorRef<'_>, router: &TensorRef<'_>, config: RouterConfig) -> Result<Routing> {
        moe::router::route(x, router, config)
    }

    fn moe_dispatch(&self, routing: &Routing, num_experts: usize) -> Result<Dispatch> {
        moe::dispatch::dispatch(routing, num_experts)
    }

    fn grouped_gemm(&self, x: &TensorRef<'_>, weights: &[TensorRef<'_>], offsets: &[u32], out: &mut TensorMut<'_>) -> Result<()> {
        let (s, n, k) = check_grouped_gemm_args(x, weights, offsets)?;
        let first = &weights[0];
        rows::expect_output(out, "out", &[s, n])?;
        let mats = weights
            .iter()
            .enumerate()
            .map(|(e, w)| {
                let arg = format!("weights[{e}]");
                w.expect_shape(&arg, &[Some(n), Some(k)], "(N, K)")?;
                if w.dtype() != first.dtype() {
                    return Err(Error::dtype(arg, first.dtype().name(), w.dtype()));
                }
                MatRef::from_tensor(w, &arg)
            })
            .collect::<Result<Vec<_>>>()?;
        let xs = rows::gather(x, None, 1, moe::compute_dtype(first.dtype()))?;
        let xm = MatRef::from_tensor(&xs.view(), "x")?;
        let mut acc = vec![0f32; s * n];
        crate::threads::pool().install(|| moe::experts::grouped_gemm(xm, &mats, offsets, &mut acc));
        rows::store(&acc, out)
    }

    fn moe_forward(&self, x: &TensorRef<'_>, weights: &MoeWeights<'_>, config: RouterConfig, out: &mut TensorMut<'_>) -> Result<()> {
        moe::forward(x, weights, config, out)
    }
}
