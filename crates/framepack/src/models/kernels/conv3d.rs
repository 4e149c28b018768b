//! CPU f32 fast paths: the stride-1 causal Conv3d without im2col and GroupNorm fused with
//! SiLU. Each returns `None` when it does not apply (other device
//! or dtype), and the caller then uses the generic candle ops.
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

use crate::models::kernels::cpu::{cpu_f32, with_f32};
use rayon::prelude::*;

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
pub(crate) fn causal_conv3d(x: &Tensor, weight: &Tensor, bias: &Tensor, k: usize) -> Result<Option<Tensor>> {
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
    let threads = candle_core::utils::get_num_threads();
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
