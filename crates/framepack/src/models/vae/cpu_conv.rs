//! CPU fast path of the stride-1 causal Conv3d, without im2col.
//!
//! For one input channel, the padded volume `(T', H', W')` is a flat array, and an output voxel
//! `(t, y, x)` reads the taps at flat offsets `t·H'W' + y·W' + x + (j·H'W' + a·W' + b)`. So each
//! of the `k³` taps is one GEMM `(O × C) · (C × N)` whose right-hand side is the padded input
//! shifted by a constant offset (row stride = the channel stride, column stride 1), accumulated
//! into an output laid out on the padded grid. The `k − 1` extra rows and columns per frame are
//! computed and cropped afterwards. GEMMs come from the `gemm` crate (which candle uses too).

use candle_core::{DType, Device, Result, Storage, Tensor};

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
