//! 3-D rotary position tables on the post-patch grid, including the average-pooled tables of
//! the 2x/4x history tokens.
//!
//! Tables hold one value per channel *pair* (`head_dim / 2` columns, laid out `[t | y | x]`), the
//! format [`candle_nn::rotary_emb::rope_i`] takes. Every channel depends on one axis only, so a
//! table is built from three small per-axis tables by broadcasting; pooling the full
//! `(T, H, W)` map with kernel `k` equals averaging each axis over its own `k` positions.

use candle_core::{DType, Device, Result, Tensor};

/// Frequencies `1 / theta^(2k / dim)` of one axis, rounded like diffusers' f32 computation.
fn axis_freqs(theta: f64, dim: usize) -> Vec<f32> {
    let theta = theta as f32 as f64;
    (0..dim / 2)
        .map(|k| {
            let e = (2 * k) as f32 / dim as f32;
            1.0f32 / (theta.powf(e as f64) as f32)
        })
        .collect()
}

/// Cos and sin of `pos · freq` for every position (row-major `(n_out, freqs.len())`), with the
/// positions replicate-padded at the end to a multiple of `pool` and averaged in groups of `pool`.
fn pooled_axis(pos: &[f32], freqs: &[f32], pool: usize) -> (Vec<f32>, Vec<f32>, usize) {
    let n_out = pos.len().div_ceil(pool);
    let mut cos = Vec::with_capacity(n_out * freqs.len());
    let mut sin = Vec::with_capacity(n_out * freqs.len());
    for o in 0..n_out {
        for &f in freqs {
            let (mut c, mut s) = (0f64, 0f64);
            for i in 0..pool {
                let p = pos[(o * pool + i).min(pos.len() - 1)];
                let angle = (p * f) as f64;
                c += angle.cos();
                s += angle.sin();
            }
            cos.push((c / pool as f64) as f32);
            sin.push((s / pool as f64) as f32);
        }
    }
    (cos, sin, n_out)
}

/// One group of image tokens: its frame indices, the post-patch grid and the pooling factor
/// (1 for noisy and 1x clean tokens, 2 or 4 for the history groups).
#[derive(Debug, Clone)]
pub(crate) struct RopeGroup<'a> {
    pub frames: &'a [f32],
    pub height: usize,
    pub width: usize,
    pub pool: usize,
}

/// `(cos, sin)` f32 tables of shape `(tokens, head_dim / 2)` for one group, rows in the
/// `(t, y, x)` row-major token order of the patch embedders.
pub(crate) fn group_tables(
    g: &RopeGroup<'_>,
    theta: f64,
    axes: [usize; 3],
    device: &Device,
) -> Result<(Tensor, Tensor)> {
    let rows: Vec<f32> = (0..g.height).map(|i| i as f32).collect();
    let cols: Vec<f32> = (0..g.width).map(|i| i as f32).collect();
    let positions = [g.frames, rows.as_slice(), cols.as_slice()];
    let mut cos_parts = Vec::with_capacity(3);
    let mut sin_parts = Vec::with_capacity(3);
    let mut sizes = [0usize; 3];
    for a in 0..3 {
        let freqs = axis_freqs(theta, axes[a]);
        let (c, s, n) = pooled_axis(positions[a], &freqs, g.pool);
        sizes[a] = n;
        cos_parts.push(Tensor::from_vec(c, (n, freqs.len()), device)?);
        sin_parts.push(Tensor::from_vec(s, (n, freqs.len()), device)?);
    }
    let [nt, ny, nx] = sizes;
    let expand = |parts: &[Tensor]| -> Result<Tensor> {
        let t = parts[0].reshape((nt, 1, 1, axes[0] / 2))?.broadcast_as((nt, ny, nx, axes[0] / 2))?;
        let y = parts[1].reshape((1, ny, 1, axes[1] / 2))?.broadcast_as((nt, ny, nx, axes[1] / 2))?;
        let x = parts[2].reshape((1, 1, nx, axes[2] / 2))?.broadcast_as((nt, ny, nx, axes[2] / 2))?;
        Tensor::cat(&[t, y, x], 3)?.reshape((nt * ny * nx, (axes[0] + axes[1] + axes[2]) / 2))
    };
    Ok((expand(&cos_parts)?, expand(&sin_parts)?))
}

/// Extends `(…, n, d)` tables with `extra` identity rows (cos 1, sin 0), so that one `rope_i`
/// call over `[image | text]` rotates only the image tokens.
pub(crate) fn with_identity_rows(cos: &Tensor, sin: &Tensor, extra: usize) -> Result<(Tensor, Tensor)> {
    if extra == 0 {
        return Ok((cos.clone(), sin.clone()));
    }
    let mut dims = cos.dims().to_vec();
    let row_dim = dims.len() - 2;
    dims[row_dim] = extra;
    let ones = Tensor::ones(dims.as_slice(), DType::F32, cos.device())?;
    let zeros = Tensor::zeros(dims.as_slice(), DType::F32, cos.device())?;
    Ok((Tensor::cat(&[cos, &ones], row_dim)?, Tensor::cat(&[sin, &zeros], row_dim)?))
}
