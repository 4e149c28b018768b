//! CPU f32 fast paths: the stride-1 causal Conv3d without im2col, GroupNorm fused with SiLU,
//! and the causal replicate padding. Each returns `None` when it does not apply (other device
//! or dtype), and the caller then uses the generic candle ops.
//!
//! Convolution:
//! For one input channel, the padded volume `(T', H', W')` is a flat array, and an output voxel
//! `(t, y, x)` reads the taps at flat offsets `t·H'W' + y·W' + x + (j·H'W' + a·W' + b)`. So each
//! of the `k³` taps is one GEMM `(O × C) · (C × N)` whose right-hand side is the padded input
//! shifted by a constant offset (row stride = the channel stride, column stride 1), accumulated
//! into an output laid out on the padded grid. The `k − 1` extra rows and columns per frame are
//! computed and cropped afterwards. GEMMs come from the `gemm` crate (which candle uses too).

use candle_core::{DType, Device, Result, Storage, Tensor};
use rayon::prelude::*;

/// Returns `None` when the fast path does not apply (not CPU, not f32).
///
/// `xp` is the padded input `(B, C, T', H', W')`, `weight` `(O, C, k, k, k)`, `bias` `(O)`.
pub(crate) fn conv3d_stride1(xp: &Tensor, weight: &Tensor, bias: &Tensor, k: usize) -> Result<Option<Tensor>> {
    if !matches!(xp.device(), Device::Cpu) || xp.dtype() != DType::F32 || weight.dtype() != DType::F32 {
        return Ok(None);
    }
    let (b, c, tp, hp, wp) = xp.dims5()?;
    let o = weight.dim(0)?;
    if weight.dims() != [o, c, k, k, k] || tp < k || hp < k || wp < k {
        candle_core::bail!("conv3d: weight {:?} does not fit input {:?}", weight.dims(), xp.dims());
    }
    let (t_out, h_out, w_out) = (tp - k + 1, hp - k + 1, wp - k + 1);
    let xp = xp.contiguous()?;
    let weight = weight.contiguous()?;
    let bias = bias.to_dtype(DType::F32)?.to_vec1::<f32>()?;

    let frame = hp * wp;
    let chan_in = tp * frame;
    let chan_out = t_out * frame;
    let mut dst = vec![0f32; b * o * chan_out];
    for (i, chunk) in dst.chunks_mut(chan_out).enumerate() {
        chunk.fill(bias[i % o]);
    }
    let n = (t_out - 1) * frame + (h_out - 1) * wp + w_out;

    let (xs, xl) = xp.storage_and_layout();
    let (ws, wl) = weight.storage_and_layout();
    let (Storage::Cpu(xs), Storage::Cpu(ws)) = (&*xs, &*ws) else {
        return Ok(None);
    };
    let x = &xs.as_slice::<f32>()?[xl.start_offset()..];
    let w = &ws.as_slice::<f32>()?[wl.start_offset()..];
    if x.len() < b * c * chan_in || w.len() < o * c * k * k * k {
        candle_core::bail!("conv3d: storage smaller than its layout");
    }
    let k3 = k * k * k;
    let threads = candle_core::utils::get_num_threads();
    let par = if threads > 1 { gemm::Parallelism::Rayon(threads) } else { gemm::Parallelism::None };
    for bi in 0..b {
        let x_b = &x[bi * c * chan_in..(bi + 1) * c * chan_in];
        let d_b = &mut dst[bi * o * chan_out..(bi + 1) * o * chan_out];
        for j in 0..k {
            for a in 0..k {
                for bb in 0..k {
                    let tap = (j * k + a) * k + bb;
                    let shift = j * frame + a * wp + bb;
                    // The last column read is (c − 1)·chan_in + shift + n − 1 < c·chan_in, and the
                    // last written (o − 1)·chan_out + n − 1 < o·chan_out: both slices are in range.
                    debug_assert!((c - 1) * chan_in + shift + n <= x_b.len());
                    debug_assert!((o - 1) * chan_out + n <= d_b.len());
                    // SAFETY: bounds as above; lhs/rhs/dst do not alias (distinct allocations);
                    // gemm reads `m × k` lhs, `k × n` rhs and writes `m × n` dst with the strides given.
                    unsafe {
                        gemm::gemm(
                            o,
                            n,
                            c,
                            d_b.as_mut_ptr(),
                            1,
                            chan_out as isize,
                            true,
                            w.as_ptr().add(tap),
                            k3 as isize,
                            (c * k3) as isize,
                            x_b.as_ptr().add(shift),
                            1,
                            chan_in as isize,
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
    }
    let out = Tensor::from_vec(dst, (b, o, t_out, hp, wp), xp.device())?;
    if h_out == hp && w_out == wp {
        Ok(Some(out))
    } else {
        Ok(Some(out.narrow(3, 0, h_out)?.narrow(4, 0, w_out)?.contiguous()?))
    }
}

fn cpu_f32(x: &Tensor) -> bool {
    matches!(x.device(), Device::Cpu) && x.dtype() == DType::F32
}

/// Runs `f` on the contiguous f32 data of `x`.
fn with_f32<R>(x: &Tensor, f: impl FnOnce(&[f32]) -> Result<R>) -> Result<Option<R>> {
    let x = x.contiguous()?;
    let (s, l) = x.storage_and_layout();
    let Storage::Cpu(s) = &*s else {
        return Ok(None);
    };
    let data = &s.as_slice::<f32>()?[l.start_offset()..];
    let n = x.elem_count();
    if data.len() < n {
        candle_core::bail!("storage smaller than its layout");
    }
    f(&data[..n]).map(Some)
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
    if dims.len() < 3 || dims[1] % groups != 0 {
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

/// Replicate padding of `(B, C, T, H, W)`: `k − 1` frames in front, `k / 2` pixels on each side.
pub(crate) fn causal_pad(x: &Tensor, k: usize) -> Result<Option<Tensor>> {
    if !cpu_f32(x) {
        return Ok(None);
    }
    let (b, c, t, h, w) = x.dims5()?;
    let p = k / 2;
    let (tp, hp, wp) = (t + k - 1, h + 2 * p, w + 2 * p);
    let out = with_f32(x, |src| {
        let mut out = vec![0f32; b * c * tp * hp * wp];
        out.par_chunks_mut(tp * hp * wp).zip(src.par_chunks(t * h * w)).for_each(|(dst, src)| {
            for (ti, frame) in dst.chunks_mut(hp * wp).enumerate() {
                let st = ti.saturating_sub(k - 1);
                for (yi, row) in frame.chunks_mut(wp).enumerate() {
                    let sy = yi.saturating_sub(p).min(h - 1);
                    let s_row = &src[(st * h + sy) * w..(st * h + sy + 1) * w];
                    row[..p].fill(s_row[0]);
                    row[p..p + w].copy_from_slice(s_row);
                    row[p + w..].fill(s_row[w - 1]);
                }
            }
        });
        Ok(out)
    })?;
    out.map(|o| Tensor::from_vec(o, (b, c, tp, hp, wp), x.device())).transpose()
}
