//! Multi-head attention pieces shared by the models: head splitting and scaled dot-product
//! attention with f32 scores, chunked over queries so the score block stays bounded.

use candle_core::{DType, Module, Result, Tensor};
use candle_nn::VarBuilder;

use crate::models::kernels::linear::{Linear, linear};

/// Largest attention score block (elements) computed at once; longer query sets are chunked.
const MAX_SCORE_ELEMS: usize = 1 << 26;

/// `(B, L, H·Dh)` → contiguous `(B, H, L, Dh)`.
pub(crate) fn split_heads(x: &Tensor, heads: usize) -> Result<Tensor> {
    let (b, l, d) = x.dims3()?;
    x.reshape((b, l, heads, d / heads))?.transpose(1, 2)?.contiguous()
}

/// `(B, H, L, Dh)` → `(B, L, H·Dh)`.
pub(crate) fn merge_heads(x: &Tensor) -> Result<Tensor> {
    let (b, h, l, dh) = x.dims4()?;
    x.transpose(1, 2)?.reshape((b, l, h * dh))
}

/// Scaled dot-product attention. `q`, `k`: `(B, H, Lq|Lk, Dh)` (scores and softmax in f32),
/// `v`: `(B, H, Lk, Dh)`; `bias`: additive f32 mask broadcastable to `(B, 1, Lq, Lk)` (any rank ≥ 2; its query
/// axis is the second to last).
/// Returns `(B, H, Lq, Dh)` in `v`'s dtype. Long query sets are processed in chunks.
pub(crate) fn attention(q: &Tensor, k: &Tensor, v: &Tensor, bias: Option<&Tensor>) -> Result<Tensor> {
    attention_chunked(q, k, v, bias, MAX_SCORE_ELEMS)
}

fn attention_chunked(q: &Tensor, k: &Tensor, v: &Tensor, bias: Option<&Tensor>, max_elems: usize) -> Result<Tensor> {
    let (b, h, lq, dh) = q.dims4()?;
    let lk = k.dim(2)?;
    let scale = 1.0 / (dh as f64).sqrt();
    let q = q.to_dtype(DType::F32)?;
    let kt = k.to_dtype(DType::F32)?.t()?;
    let chunk = (max_elems / (b * h * lk).max(1)).clamp(1, lq.max(1));
    let mut outs: Vec<Tensor> = Vec::with_capacity(lq.div_ceil(chunk));
    let mut start = 0;
    while start < lq {
        let len = chunk.min(lq - start);
        let qc = q.narrow(2, start, len)?;
        let mut scores = (qc.matmul(&kt)? * scale)?;
        if let Some(bias) = bias {
            let rows = bias.rank() - 2;
            let bias = if bias.dim(rows)? == 1 { bias.clone() } else { bias.narrow(rows, start, len)? };
            scores = scores.broadcast_add(&bias)?;
        }
        let probs = crate::models::ops::softmax_last_dim(&scores)?.to_dtype(v.dtype())?;
        outs.push(probs.matmul(v)?);
        start += len;
    }
    Tensor::cat(&outs, 2)
}

/// [`attention`] on projections laid out `(B, L, H·Dh)`, returning `(B, Lq, H·Dh)`. On the CPU in
/// f32 the heads are read in place and the scores never materialize (see
/// [`cpu::attention`](super::cpu::attention)).
pub(crate) fn attention_merged(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    heads: usize,
    bias: Option<&Tensor>,
) -> Result<Tensor> {
    let view = |x: &Tensor| -> Result<Tensor> {
        let (b, l, d) = x.dims3()?;
        x.reshape((b, l, heads, d / heads))?.transpose(1, 2)
    };
    if let Some(out) = crate::models::kernels::cpu::attention(&view(q)?, &view(k)?, &view(v)?, bias)? {
        return Ok(out);
    }
    let (q, k, v) = (split_heads(q, heads)?, split_heads(k, heads)?, split_heads(v, heads)?);
    merge_heads(&attention(&q, &k, &v, bias)?)
}

/// Multi-head self-attention with `q_proj`/`k_proj`/`v_proj`/`out_proj` (CLIP and SigLIP
/// encoder layers).
pub(crate) struct SelfAttention {
    q_proj: Linear,
    k_proj: Linear,
    v_proj: Linear,
    out_proj: Linear,
    heads: usize,
}

impl SelfAttention {
    pub(crate) fn new(vb: VarBuilder<'_>, hidden: usize, heads: usize) -> Result<Self> {
        Ok(Self {
            q_proj: linear(hidden, hidden, vb.pp("q_proj"))?,
            k_proj: linear(hidden, hidden, vb.pp("k_proj"))?,
            v_proj: linear(hidden, hidden, vb.pp("v_proj"))?,
            out_proj: linear(hidden, hidden, vb.pp("out_proj"))?,
            heads,
        })
    }

    /// `x`: `(B, L, D)`; `bias`: as for [`attention`].
    pub(crate) fn forward(&self, x: &Tensor, bias: Option<&Tensor>) -> Result<Tensor> {
        let (q, k, v) = (self.q_proj.forward(x)?, self.k_proj.forward(x)?, self.v_proj.forward(x)?);
        self.out_proj.forward(&attention_merged(&q, &k, &v, self.heads, bias)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunked_attention_equals_one_block() -> Result<()> {
        let dev = candle_core::Device::Cpu;
        let q = Tensor::randn(0f32, 1., (2, 3, 7, 8), &dev)?;
        let k = Tensor::randn(0f32, 1., (2, 3, 9, 8), &dev)?;
        let v = Tensor::randn(0f32, 1., (2, 3, 9, 8), &dev)?;
        let mut mask = vec![0f32; 2 * 7 * 9];
        mask[7 * 9 + 5..7 * 9 + 9].fill(f32::NEG_INFINITY);
        let per_query = Tensor::from_vec(mask, (2, 1, 7, 9), &dev)?;
        let per_key = per_query.narrow(2, 6, 1)?;
        for bias in [None, Some(&per_query), Some(&per_key)] {
            let whole = attention_chunked(&q, &k, &v, bias, usize::MAX)?;
            for max_elems in [1, 2 * 3 * 9 * 2, 2 * 3 * 9 * 3] {
                let chunked = attention_chunked(&q, &k, &v, bias, max_elems)?;
                let diff = (chunked - &whole)?.abs()?.flatten_all()?.max(0)?.to_scalar::<f32>()?;
                assert!(diff < 1e-6, "max_elems {max_elems}: {diff}");
            }
        }
        Ok(())
    }
}
