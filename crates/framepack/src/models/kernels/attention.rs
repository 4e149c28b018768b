//! Multi-head attention pieces shared by the models: head splitting, scaled dot-product
//! attention with f32 scores (chunked over queries so the score block stays bounded) and the
//! transformer's joint attention with per-group RMSNorm and rotary embeddings.

use candle_core::{DType, Module, Result, Tensor};
use candle_nn::VarBuilder;

use crate::models::kernels::cpu;
use crate::models::kernels::linear::{Linear, linear};
use crate::models::ops;

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

/// Per-head RMSNorm in f32 (statistics and scale), returned as f32 `(B, H, L, Dh)`.
fn norm_heads(x: &Tensor, heads: usize, weight: &Tensor, eps: f32) -> Result<Tensor> {
    let (b, l, d) = x.dims3()?;
    let x = x.reshape((b, l, heads, d / heads))?.to_dtype(DType::F32)?.contiguous()?;
    ops::rms_norm(&x, weight, eps)?.transpose(1, 2)?.contiguous()
}

/// Rotary `(cos, sin)` tables covering `[image | context]`: the packed image tokens' tables
/// followed by identity rows for the context tokens.
pub(crate) type JointRope = (Tensor, Tensor);

/// A projection `(B, n, H·Dh)` with the RMSNorm weight of its heads.
pub(crate) type NormedPart<'a> = (Tensor, &'a Tensor);

/// Joint attention over consecutive token groups (`[image | context]`): each group's queries and
/// keys are RMS-normalized per head with the group's own weight, then rotated with the tables
/// that cover all groups (`eps` is the RMSNorm epsilon). The queries may be a sub-range of the
/// keys' tokens starting at token `q_row0`. Returns the merged heads `(B, Lq, H·Dh)` in the
/// values' dtype. On the CPU in f32 the normalization, rotation and attention are fused.
pub(crate) fn joint_attention(
    (q, q_row0): (&[NormedPart<'_>], usize),
    k: &[NormedPart<'_>],
    v: &[Tensor],
    (cos, sin): &JointRope,
    (heads, eps): (usize, f32),
    bias: Option<&Tensor>,
) -> Result<Tensor> {
    let fused = |parts: &[NormedPart<'_>], mut row0: usize| -> Result<Option<Tensor>> {
        let mut out = Vec::with_capacity(parts.len());
        for (x, w) in parts {
            match cpu::norm_rope(x, w, cos, sin, row0, eps)? {
                Some(t) => out.push(t),
                None => return Ok(None),
            }
            row0 += x.dim(1)?;
        }
        Tensor::cat(&out, 1).map(Some)
    };
    if let (Some(q), Some(k)) = (fused(q, q_row0)?, fused(k, 0)?) {
        return attention_merged(&q, &k, &Tensor::cat(v, 1)?, heads, bias);
    }
    let dtype = v[0].dtype();
    let rotated = |parts: &[NormedPart<'_>], row0: usize| -> Result<Tensor> {
        let normed = parts.iter().map(|(x, w)| norm_heads(x, heads, w, eps)).collect::<Result<Vec<_>>>()?;
        let x = Tensor::cat(&normed, 2)?;
        let (rows, n) = (cos.rank() - 2, x.dim(2)?);
        let (c, s) = (cos.narrow(rows, row0, n)?.contiguous()?, sin.narrow(rows, row0, n)?.contiguous()?);
        ops::rope_i(&x, &c, &s)?.to_dtype(dtype)
    };
    let (q, k) = (rotated(q, q_row0)?, rotated(k, 0)?);
    let v = Tensor::cat(v, 1)?;
    let (b, l, d) = v.dims3()?;
    let v = v.reshape((b, l, heads, d / heads))?.transpose(1, 2)?;
    if let Some(o) = cpu::attention(&q, &k, &v, bias)? {
        return Ok(o);
    }
    merge_heads(&attention(&q, &k, &v.contiguous()?, bias)?)
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
