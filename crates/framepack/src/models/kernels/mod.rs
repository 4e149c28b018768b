//! The models' fused operations, in one place. Each takes the fast path where it applies (CPU,
//! f32, outside autograd) and candle's ops everywhere else (other devices and dtypes, tensors
//! that track gradients), inside the one call; the layers call it without caring which ran.
//!
//! - [`attention`]: attention shared by the text and vision encoders (f32 scores, chunked) and
//!   the transformer's joint attention with RMSNorm and RoPE.
//! - [`cpu`]: transformer kernels: attention without score tensors, RMSNorm + RoPE, LayerNorm +
//!   modulation, gated residuals, the tanh GELU.
//! - [`linear`]: a Linear that is one GEMM onto bias rows.
//! - [`conv3d`]: the VAE's causal Conv3d (shifted GEMMs, im2col for training, conv2d over
//!   stacked taps), GroupNorm fused with SiLU; [`unfold`] is its differentiable im2col.
//! - [`conv3x3`]: TAEHV's 3×3 convolution with the memory input, residual and ReLU fused.
//!
//! `FRAMEPACK_CPU_KERNELS_OFF` switches fast paths off by name for benchmark ablations.

pub(crate) mod attention;
pub(crate) mod conv3d;
pub(crate) mod conv3x3;
pub(crate) mod cpu;
pub(crate) mod linear;
pub(crate) mod unfold;

use candle_core::{Result, Tensor};

/// `x + y · gate`.
pub(crate) fn gated_add(x: &Tensor, y: &Tensor, gate: &Tensor) -> Result<Tensor> {
    match cpu::gated_add(x, y, gate)? {
        Some(z) => Ok(z),
        None => x + y.broadcast_mul(gate)?,
    }
}

/// `x · (1 + scale) + shift`.
fn modulate(x: &Tensor, shift: &Tensor, scale: &Tensor) -> Result<Tensor> {
    x.broadcast_mul(&(scale + 1.0)?)?.broadcast_add(shift)
}

/// `LayerNorm(x) · (1 + scale) + shift` (AdaLN modulation; `ones` / `zeros` are the unit
/// affine weights): one pass on the CPU.
pub(crate) fn ln_modulate(
    x: &Tensor,
    (ones, zeros): (&Tensor, &Tensor),
    shift: &Tensor,
    scale: &Tensor,
    eps: f32,
) -> Result<Tensor> {
    match cpu::ln_modulate(x, shift, scale, eps)? {
        Some(y) => Ok(y),
        None => modulate(&crate::models::ops::layer_norm(x, ones, zeros, eps)?, shift, scale),
    }
}

/// Causal Conv3d of `x` `(B, C, T, H, W)` with `weight` `(O, C, k, k, k)` and `bias` `(O)`:
/// replicate padding of `k − 1` frames in front and `k / 2` pixels around, strides
/// `(time, space)`. Shifted GEMMs for stride 1 on the CPU in f32, im2col under autograd on the
/// CPU, candle's conv2d elsewhere.
pub(crate) fn causal_conv3d(
    x: &Tensor,
    (weight, bias): (&Tensor, &Tensor),
    k: usize,
    stride: (usize, usize),
) -> Result<Tensor> {
    let cpu_f32 = x.device().is_cpu() && x.dtype() == candle_core::DType::F32;
    if cpu_f32 && (x.track_op() || weight.track_op()) {
        return conv3d::unfolded(x, (weight, bias), k, stride);
    }
    if stride == (1, 1)
        && let Some(y) = conv3d::shifted_gemm(x, weight, bias, k)?
    {
        return Ok(y);
    }
    conv3d::stacked_conv2d(x, (weight, bias), k, stride)
}

/// `norm(x)`, followed by SiLU when `silu`: GroupNorm over `(B, C, …)` fused with SiLU on the CPU,
/// candle's `GroupNorm` elsewhere.
pub(crate) fn group_norm(
    norm: &candle_nn::GroupNorm,
    (weight, bias): (&Tensor, &Tensor),
    groups: usize,
    eps: f64,
    silu: bool,
    x: &Tensor,
) -> Result<Tensor> {
    if let Some(y) = conv3d::group_norm(x, weight, bias, groups, eps, silu)? {
        return Ok(y);
    }
    let y = candle_core::Module::forward(norm, x)?;
    if silu { y.silu() } else { Ok(y) }
}

/// `relu(conv3x3(x ‖ past, stride) + bias + residual)` with zero padding 1, each part optional:
/// shifted GEMMs on the CPU for stride 1, candle's `conv2d` on the concatenation elsewhere.
pub(crate) fn conv3x3_fused(
    x: &Tensor,
    past: Option<&Tensor>,
    (weight, bias): (&Tensor, Option<&Tensor>),
    stride: usize,
    residual: Option<&Tensor>,
    relu: bool,
) -> Result<Tensor> {
    if stride == 1
        && let Some(y) = conv3x3::conv3x3(x, past, weight, bias, residual, relu)?
    {
        return Ok(y);
    }
    let joined = match past {
        Some(p) => Tensor::cat(&[x, p], 1)?,
        None => x.clone(),
    };
    let mut y = joined.conv2d(weight, 1, stride, 1, 1)?;
    if let Some(b) = bias {
        y = y.broadcast_add(&b.reshape((1, (), 1, 1))?)?;
    }
    if let Some(r) = residual {
        y = (y + r)?;
    }
    if relu { y.relu() } else { Ok(y) }
}
