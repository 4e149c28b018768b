//! The VAE's causal Conv3d in three forms, and GroupNorm fused with SiLU.
//!
//! - [`shifted_gemm`]: stride 1 on the CPU in f32, without im2col (described below); `None`
//!   when it does not apply.
//! - [`unfolded`]: CPU f32 under autograd: im2col of all `k³` taps and one matmul, whose
//!   backward is a GEMM or a copy where conv2d's backward (a transposed convolution) is slow on
//!   the CPU.
//! - [`stacked_conv2d`]: everywhere else (other devices and dtypes, the strided downsamplers):
//!   one conv2d per chunk of output frames over the `k` time taps stacked into the channel axis
//!   (weights `(O, C, k, k, k)` reshape to `(O, C·k, k, k)` for free).
//!
//!
//! Convolution: for one input channel, a replicate-padded frame `(H', W')` is a flat array and
//! output pixel `(y, x)` reads its taps at flat offsets `y·W' + x + (a·W' + b)`. So each of the
//! `k³` taps is one GEMM `(O × C) · (C × N)` whose right-hand side is a padded input frame
//! shifted by a constant offset (row stride = the channel stride, column stride 1), accumulated
//! into an output frame on the padded grid whose `k − 1` extra columns (and rows) are dropped
//! when it is copied out. Only the `k` padded input frames the current output frame needs are
//! kept (a ring buffer), so the memory is input + output + `k` frames. GEMMs come from the
//! `gemm` crate (which candle uses too).

use candle_core::{Result, Storage, Tensor};

use super::unfold;

use crate::models::kernels::cpu::{cpu_f32, with_f32};
use rayon::prelude::*;

/// Upper bound (bytes) of the stacked conv input built per chunk of frames; bounds the memory of
/// a causal convolution independently of the frame count.
const CONV_CHUNK_BYTES: usize = 256 << 20;

/// `x` `(B, C, T, H, W)` permuted by `order`, replicate-padded by `k − 1` frames in front and
/// `k / 2` pixels around and made contiguous, with the padded `(T', H', W')`.
fn causal_pad(
    x: &Tensor,
    order: (usize, usize, usize, usize, usize),
    k: usize,
) -> Result<(Tensor, (usize, usize, usize))> {
    let (_, _, t, h, w) = x.dims5()?;
    let p = k / 2;
    let dims = [order.0, order.1, order.2, order.3, order.4];
    let axis = |d: usize| dims.iter().position(|&a| a == d).unwrap_or_else(|| unreachable!("a permutation"));
    let mut y = x.permute(order)?;
    if k > 1 {
        y = y.pad_with_same(axis(2), k - 1, 0)?.pad_with_same(axis(3), p, p)?.pad_with_same(axis(4), p, p)?;
    }
    let (tp, hp, wp) = (t + k - 1, h + 2 * p, w + 2 * p);
    if tp < k || hp < k || wp < k {
        candle_core::bail!("causal conv input too small: {t}x{h}x{w} frames x pixels");
    }
    Ok((y.contiguous()?, (tp, hp, wp)))
}

/// Causal Conv3d through candle's conv2d: `x` `(B, C, T, H, W)`, `weight` `(O, C, k, k, k)`,
/// replicate padding of `k − 1` frames in front and `k / 2` pixels around, strides
/// `(time, space)`.
pub(crate) fn stacked_conv2d(
    x: &Tensor,
    (weight, bias): (&Tensor, &Tensor),
    k: usize,
    (stride_t, stride_hw): (usize, usize),
) -> Result<Tensor> {
    let (b, c, _, _, _) = x.dims5()?;
    let o = weight.dim(0)?;
    // (B, T, C, H, W): frames next to the batch so every frame is one conv2d image.
    let (xt, (tp, hp, wp)) = causal_pad(x, (0, 2, 1, 3, 4), k)?;
    let t_out = (tp - k) / stride_t + 1;
    let weight = weight.reshape((o, c * k, k, k))?;
    let bias = bias.reshape((1, o, 1, 1))?;

    let frame_bytes = c * k * hp * wp * x.dtype().size_in_bytes() * 2;
    let chunk = (CONV_CHUNK_BYTES / frame_bytes.max(1)).clamp(1, t_out);
    // Input frames `(t0 + i)·stride + j` for `i < n`, as `(B, n, C, H, W)`.
    let tap = |t0: usize, n: usize, j: usize| -> Result<Tensor> {
        if stride_t == 1 {
            xt.narrow(1, t0 + j, n)
        } else {
            let ids: Vec<u32> = (0..n).map(|i| ((t0 + i) * stride_t + j) as u32).collect();
            xt.index_select(&Tensor::new(ids.as_slice(), xt.device())?, 1)
        }
    };
    let mut outs = Vec::with_capacity(t_out.div_ceil(chunk));
    let mut t0 = 0;
    while t0 < t_out {
        let n = chunk.min(t_out - t0);
        let taps = (0..k).map(|j| tap(t0, n, j)).collect::<Result<Vec<_>>>()?;
        let stacked = if k == 1 { taps[0].clone() } else { Tensor::stack(&taps, 3)? };
        let stacked = stacked.reshape((b * n, c * k, hp, wp))?;
        let y = stacked.conv2d(&weight, 0, stride_hw, 1, 1)?.broadcast_add(&bias)?;
        let (_, o, ho, wo) = y.dims4()?;
        outs.push(y.reshape((b, n, o, ho, wo))?);
        t0 += n;
    }
    let y = if outs.len() == 1 { outs.pop().unwrap_or_else(|| unreachable!()) } else { Tensor::cat(&outs, 1)? };
    y.permute((0, 2, 1, 3, 4))?.contiguous()
}

/// Causal Conv3d as channels-last im2col and one matmul (the training path); arguments as
/// [`stacked_conv2d`].
pub(crate) fn unfolded(
    x: &Tensor,
    (weight, bias): (&Tensor, &Tensor),
    k: usize,
    stride: (usize, usize),
) -> Result<Tensor> {
    let (b, c, _, _, _) = x.dims5()?;
    let o = weight.dim(0)?;
    let (xl, (tp, hp, wp)) = causal_pad(x, (0, 2, 3, 4, 1), k)?;
    let (to, ho, wo) = unfold::unfold_extent((tp, hp, wp), k, stride)?;
    // Rows hold taps in (t, y, x) order with channels innermost.
    let weight = weight.permute((0, 2, 3, 4, 1))?.reshape((o, k * k * k * c))?;
    let cols = unfold::unfold(&xl, k, stride)?;
    let y = cols.matmul(&weight.t()?)?.broadcast_add(bias)?;
    y.reshape((b, to, ho, wo, o))?.permute((0, 4, 1, 2, 3))?.contiguous()
}

/// Replicate-pads frame `f` of `src` `(C, T, H, W)` by `p` pixels into `dst` `(C, H + 2p, W + 2p)`.
fn pad_frame(src: &[f32], dst: &mut [f32], (c, t, h, w): (usize, usize, usize, usize), f: usize, p: usize) {
    let (hp, wp) = (h + 2 * p, w + 2 * p);
    dst.par_chunks_mut(hp * wp).take(c).enumerate().for_each(|(ci, d)| {
        let s = &src[(ci * t + f) * h * w..(ci * t + f + 1) * h * w];
        for (yi, row) in d.chunks_mut(wp).enumerate() {
            let sy = yi.saturating_sub(p).min(h - 1);
            let s_row = &s[sy * w..(sy + 1) * w];
            row[..p].fill(s_row[0]);
            row[p..p + w].copy_from_slice(s_row);
            row[p + w..].fill(s_row[w - 1]);
        }
    });
}

/// Stride-1 causal Conv3d of `x` `(B, C, T, H, W)` with `weight` `(O, C, k, k, k)` and `bias`
/// `(O)`: replicate padding of `k − 1` frames in front and `k / 2` pixels around, output
/// `(B, O, T, H, W)`. `None` when not on the CPU in f32.
pub(crate) fn shifted_gemm(x: &Tensor, weight: &Tensor, bias: &Tensor, k: usize) -> Result<Option<Tensor>> {
    if !cpu_f32(x) || !cpu_f32(weight) || !cpu_f32(bias) {
        return Ok(None);
    }
    let (b, c, t, h, w) = x.dims5()?;
    let o = weight.dim(0)?;
    if weight.dims() != [o, c, k, k, k] || k.is_multiple_of(2) {
        candle_core::bail!("conv3d: weight {:?} does not fit input {:?}", weight.dims(), x.dims());
    }
    let p = k / 2;
    let (hp, wp) = (h + 2 * p, w + 2 * p);
    let frame_in = c * hp * wp;
    let bias = bias.to_vec1::<f32>()?;
    let weight = weight.contiguous()?;
    let (ws, wl) = weight.storage_and_layout();
    let Storage::Cpu(ws) = &*ws else {
        return Ok(None);
    };
    let wdata = &ws.as_slice::<f32>()?[wl.start_offset()..];
    let k3 = k * k * k;
    if wdata.len() < o * c * k3 {
        candle_core::bail!("conv3d: weight storage smaller than its layout");
    }
    let threads = rayon::current_num_threads();
    let par = if threads > 1 { gemm::Parallelism::Rayon(threads) } else { gemm::Parallelism::None };
    // Output columns on the padded grid: the last one read is (h − 1)·W' + (w − 1) + shift.
    let n = (h - 1) * wp + w;

    let out = with_f32(x, |src| {
        let mut out = vec![0f32; b * o * t * h * w];
        let mut ring = vec![0f32; k * frame_in];
        let mut scratch = vec![0f32; o * hp * wp];
        for bi in 0..b {
            let src_b = &src[bi * c * t * h * w..(bi + 1) * c * t * h * w];
            let out_b = &mut out[bi * o * t * h * w..(bi + 1) * o * t * h * w];
            // Padded frame `pf` (0..T + k − 1) sits in ring slot pf % k.
            let mut held = vec![usize::MAX; k];
            for ti in 0..t {
                for j in 0..k {
                    let pf = ti + j;
                    let slot = pf % k;
                    if held[slot] != pf {
                        let sf = pf.saturating_sub(k - 1);
                        pad_frame(src_b, &mut ring[slot * frame_in..(slot + 1) * frame_in], (c, t, h, w), sf, p);
                        held[slot] = pf;
                    }
                }
                for (oi, chunk) in scratch.chunks_mut(hp * wp).enumerate() {
                    chunk.fill(bias[oi]);
                }
                for j in 0..k {
                    let slot_ptr = ring[((ti + j) % k) * frame_in..].as_ptr();
                    for a in 0..k {
                        for bb in 0..k {
                            let tap = (j * k + a) * k + bb;
                            let shift = a * wp + bb;
                            debug_assert!((c - 1) * hp * wp + shift + n <= frame_in);
                            // SAFETY: rhs reads rows ci·H'W' + shift + [0, n) for ci < C, all inside
                            // the ring slot ((C − 1)·H'W' + shift + n ≤ C·H'W'); lhs reads weight
                            // entries oi·C·k³ + ci·k³ + tap < O·C·k³; dst writes oi·H'W' + [0, n)
                            // inside `scratch`; the three buffers are distinct allocations.
                            unsafe {
                                gemm::gemm(
                                    o,
                                    n,
                                    c,
                                    scratch.as_mut_ptr(),
                                    1,
                                    (hp * wp) as isize,
                                    true,
                                    wdata.as_ptr().add(tap),
                                    k3 as isize,
                                    (c * k3) as isize,
                                    slot_ptr.add(shift),
                                    1,
                                    (hp * wp) as isize,
                                    1f32,
                                    1f32,
                                    false,
                                    false,
                                    false,
                                    par,
                                );
                            }
                        }
                    }
                }
                out_b.par_chunks_mut(t * h * w).zip(scratch.par_chunks(hp * wp)).for_each(|(dst, s)| {
                    let dst = &mut dst[ti * h * w..(ti + 1) * h * w];
                    for (y, row) in dst.chunks_mut(w).enumerate() {
                        row.copy_from_slice(&s[y * wp..y * wp + w]);
                    }
                });
            }
        }
        Ok(out)
    })?;
    out.map(|o_| Tensor::from_vec(o_, (b, o, t, h, w), x.device())).transpose()
}

/// GroupNorm over `(B, C, …)` (statistics per batch item and group of `C / groups` channels over
/// all remaining axes), optionally followed by SiLU. Statistics in f64, the affine map in f32 as
/// `x·scale + shift` (like PyTorch's CPU kernel).
pub(crate) fn group_norm(
    x: &Tensor,
    weight: &Tensor,
    bias: &Tensor,
    groups: usize,
    eps: f64,
    silu: bool,
) -> Result<Option<Tensor>> {
    if !cpu_f32(x) || !cpu_f32(weight) || !cpu_f32(bias) {
        return Ok(None);
    }
    let dims = x.dims().to_vec();
    if groups == 0 || dims.len() < 3 || !dims[1].is_multiple_of(groups) {
        candle_core::bail!("group norm: {groups} groups do not fit shape {dims:?}");
    }
    let c = dims[1];
    let s: usize = dims[2..].iter().product();
    let per_group = c / groups * s;
    let w = weight.to_vec1::<f32>()?;
    let b = bias.to_vec1::<f32>()?;
    if w.len() != c || b.len() != c {
        candle_core::bail!("group norm: {} weights for {c} channels", w.len());
    }
    let out = with_f32(x, |src| {
        let mut out = vec![0f32; src.len()];
        out.par_chunks_mut(per_group.max(1)).zip(src.par_chunks(per_group.max(1))).enumerate().for_each(
            |(i, (dst, src))| {
                let n = src.len() as f64;
                let mean = src.iter().map(|&v| v as f64).sum::<f64>() / n;
                let var = src.iter().map(|&v| (v as f64 - mean).powi(2)).sum::<f64>() / n;
                let rstd = 1.0 / (var + eps).sqrt();
                let first = (i % groups) * (c / groups);
                for (ci, (d, x)) in dst.chunks_mut(s).zip(src.chunks(s)).enumerate() {
                    let scale = (rstd * w[first + ci] as f64) as f32;
                    let shift = (b[first + ci] as f64 - mean * rstd * w[first + ci] as f64) as f32;
                    if silu {
                        for (d, &x) in d.iter_mut().zip(x) {
                            let y = x * scale + shift;
                            *d = y / (1.0 + (-y).exp());
                        }
                    } else {
                        for (d, &x) in d.iter_mut().zip(x) {
                            *d = x * scale + shift;
                        }
                    }
                }
            },
        );
        Ok(out)
    })?;
    out.map(|o| Tensor::from_vec(o, dims, x.device())).transpose()
}
