//! `Linear` layers with a CPU f32 fast path (see [`cpu::linear`](super::cpu::linear)).

use candle_core::{Module, Result, Tensor};
use candle_nn::VarBuilder;

use crate::models::kernels::cpu;

/// [`candle_nn::Linear`] whose CPU f32 forward is one GEMM with the bias fused.
#[derive(Debug, Clone)]
pub(crate) struct Linear(candle_nn::Linear);

/// A `Linear` with bias loaded from `vb` (`weight` `(out, in)`, `bias` `(out)`).
pub(crate) fn linear(in_dim: usize, out_dim: usize, vb: VarBuilder) -> Result<Linear> {
    candle_nn::linear(in_dim, out_dim, vb).map(Linear)
}

impl Module for Linear {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        match cpu::linear(x, self.0.weight(), self.0.bias())? {
            Some(y) => Ok(y),
            None => self.0.forward(x),
        }
    }
}

impl Linear {
    pub(crate) fn new(weight: Tensor, bias: Option<Tensor>) -> Self {
        Self(candle_nn::Linear::new(weight, bias))
    }

    pub(crate) fn weight(&self) -> &Tensor {
        self.0.weight()
    }

    pub(crate) fn bias(&self) -> Option<&Tensor> {
        self.0.bias()
    }
}
