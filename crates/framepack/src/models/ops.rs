//! candle's fused softmax, RMSNorm, LayerNorm and interleaved RoPE record no backward pass: on a
//! tensor that tracks gradients they would silently cut the graph. These wrappers use the fused
//! kernels for inference and the equivalent composite ops (which autograd follows) when any
//! input tracks gradients (training).

use candle_core::{D, DType, Result, Tensor};

fn tracks(ts: &[&Tensor]) -> bool {
    ts.iter().any(|t| t.track_op())
}

/// Softmax over the last axis.
pub(crate) fn softmax_last_dim(x: &Tensor) -> Result<Tensor> {
    if tracks(&[x]) { candle_nn::ops::softmax(x, D::Minus1) } else { candle_nn::ops::softmax_last_dim(x) }
}

/// RMSNorm over the last axis, `x / √(mean(x²) + eps) · weight`.
pub(crate) fn rms_norm(x: &Tensor, weight: &Tensor, eps: f32) -> Result<Tensor> {
    if !tracks(&[x, weight]) {
        return candle_nn::ops::rms_norm(x, weight, eps);
    }
    let x32 = x.to_dtype(DType::F32)?;
    let r = (x32.sqr()?.mean_keepdim(D::Minus1)? + eps as f64)?.sqrt()?.recip()?;
    x32.broadcast_mul(&r)?.to_dtype(x.dtype())?.broadcast_mul(weight)
}

/// LayerNorm over the last axis with `weight` and `bias`.
pub(crate) fn layer_norm(x: &Tensor, weight: &Tensor, bias: &Tensor, eps: f32) -> Result<Tensor> {
    if !tracks(&[x, weight, bias]) {
        return candle_nn::ops::layer_norm(&x.contiguous()?, weight, bias, eps);
    }
    let x32 = x.to_dtype(DType::F32)?;
    let centered = x32.broadcast_sub(&x32.mean_keepdim(D::Minus1)?)?;
    let r = (centered.sqr()?.mean_keepdim(D::Minus1)? + eps as f64)?.sqrt()?.recip()?;
    centered.broadcast_mul(&r)?.to_dtype(x.dtype())?.broadcast_mul(weight)?.broadcast_add(bias)
}

/// Interleaved rotary embedding of `(B, H, L, Dh)` with `(L, Dh/2)` or `(B, L, Dh/2)` tables.
pub(crate) fn rope_i(x: &Tensor, cos: &Tensor, sin: &Tensor) -> Result<Tensor> {
    if tracks(&[x, cos, sin]) { rope_i_composite(x, cos, sin) } else { candle_nn::rotary_emb::rope_i(x, cos, sin) }
}

/// Interleaved RoPE from differentiable ops, for `x` `(B, H, T, D)` and tables `(T, D/2)` or
/// per sample `(B, T, D/2)` (candle's `rope_i_slow` takes only the former).
fn rope_i_composite(x: &Tensor, cos: &Tensor, sin: &Tensor) -> Result<Tensor> {
    let (b, h, t, d) = x.dims4()?;
    let table = |c: &Tensor| match c.rank() {
        3 => c.reshape((b, 1, t, d / 2, 1)),
        _ => c.reshape((1, 1, t, d / 2, 1)),
    };
    let (cos, sin) = (table(cos)?, table(sin)?);
    let pairs = x.reshape((b, h, t, d / 2, 2))?;
    let (x0, x1) = (pairs.narrow(4, 0, 1)?, pairs.narrow(4, 1, 1)?);
    let y0 = (x0.broadcast_mul(&cos)? - x1.broadcast_mul(&sin)?)?;
    let y1 = (x0.broadcast_mul(&sin)? + x1.broadcast_mul(&cos)?)?;
    Tensor::cat(&[y0, y1], 4)?.reshape((b, h, t, d))
}

#[cfg(test)]
mod tests {
    use candle_core::{Device, Var};

    use super::*;

    fn max_diff(a: &Tensor, b: &Tensor) -> Result<f32> {
        (a - b)?.abs()?.flatten_all()?.max(0)?.to_scalar::<f32>()
    }

    #[test]
    fn composite_forms_match_the_fused_kernels_and_carry_gradients() -> Result<()> {
        let dev = Device::Cpu;
        let x = Var::randn(0f32, 1., (2, 3, 5, 8), &dev)?;
        let plain = x.as_tensor().detach();
        let w = Tensor::randn(1f32, 0.1, 8, &dev)?;
        let b = Tensor::randn(0f32, 0.1, 8, &dev)?;
        let cos = Tensor::randn(0f32, 1., (5, 4), &dev)?;
        let sin = Tensor::randn(0f32, 1., (5, 4), &dev)?;
        let pairs: [(Tensor, Tensor); 4] = [
            (softmax_last_dim(&x)?, softmax_last_dim(&plain)?),
            (rms_norm(&x, &w, 1e-6)?, rms_norm(&plain, &w, 1e-6)?),
            (layer_norm(&x, &w, &b, 1e-6)?, layer_norm(&plain, &w, &b, 1e-6)?),
            (rope_i(&x, &cos, &sin)?, rope_i(&plain, &cos, &sin)?),
        ];
        for (i, (tracked, fused)) in pairs.iter().enumerate() {
            assert!(max_diff(tracked, fused)? < 1e-5, "op {i}");
            let weights = Tensor::randn(0f32, 1., tracked.dims(), &dev)?;
            let grads = (tracked * &weights)?.sum_all()?.backward()?;
            let g = grads.get(x.as_tensor()).expect("a gradient reaches the input");
            assert!(g.abs()?.sum_all()?.to_scalar::<f32>()? > 0.0, "op {i}");
        }
        Ok(())
    }

    #[test]
    fn composite_rope_takes_per_sample_tables() -> Result<()> {
        let dev = Device::Cpu;
        let x = Tensor::randn(0f32, 1., (2, 3, 5, 8), &dev)?;
        let cos = Tensor::randn(0f32, 1., (2, 5, 4), &dev)?;
        let sin = Tensor::randn(0f32, 1., (2, 5, 4), &dev)?;
        let fused = candle_nn::rotary_emb::rope_i(&x, &cos, &sin)?;
        assert!(max_diff(&rope_i_composite(&x, &cos, &sin)?, &fused)? < 1e-5);
        Ok(())
    }
}
