//! Differentiable im2col for training the VAE on the CPU: `Unfold` turns a channels-last padded
//! video `(B, T', H', W', C)` into one row per output position holding its `k³` taps
//! (`(B·T·H·W, k³·C)`, taps in `(t, y, x)` order, channels innermost), so a causal Conv3d is one
//! matmul; its backward is `Fold`, the scatter-add back onto the input. Both are plain copies,
//! where slicing taps with `narrow` costs one zero-filled input-sized tensor per tap in the
//! backward.

use candle_core::{CpuStorage, CustomOp1, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

/// Geometry shared by the pair: kernel, strides, padded input and output extents.
#[derive(Clone, Copy, Debug)]
struct Geometry {
    k: usize,
    stride: (usize, usize),
    input: (usize, usize, usize, usize, usize),
    output: (usize, usize, usize),
}

impl Geometry {
    fn new(input: (usize, usize, usize, usize, usize), k: usize, stride: (usize, usize)) -> Result<Self> {
        let (_, t, h, w, _) = input;
        if t < k || h < k || w < k {
            candle_core::bail!("unfold: input {t}x{h}x{w} is smaller than the kernel {k}");
        }
        let out = |len: usize, s: usize| (len - k) / s + 1;
        Ok(Self { k, stride, input, output: (out(t, stride.0), out(h, stride.1), out(w, stride.1)) })
    }

    fn rows(&self) -> usize {
        self.input.0 * self.output.0 * self.output.1 * self.output.2
    }

    fn row_len(&self) -> usize {
        self.k * self.k * self.k * self.input.4
    }

    /// Flat input offset of tap `(a, b, d)` of output row `row`.
    fn visit(&self, row: usize, mut f: impl FnMut(usize, usize)) {
        let (_, ti, hi, wi, c) = self.input;
        let (to, ho, wo) = self.output;
        let (st, ss) = self.stride;
        let x = row % wo;
        let y = (row / wo) % ho;
        let t = (row / (wo * ho)) % to;
        let n = row / (wo * ho * to);
        let mut tap = 0;
        for a in 0..self.k {
            for b in 0..self.k {
                let base = (((n * ti + t * st + a) * hi + y * ss + b) * wi + x * ss) * c;
                for d in 0..self.k {
                    f(tap * c, base + d * c);
                    tap += 1;
                }
            }
        }
    }
}

fn f32_input<'a>(storage: &'a CpuStorage, layout: &Layout, op: &str) -> Result<&'a [f32]> {
    let CpuStorage::F32(data) = storage else { candle_core::bail!("{op}: f32 only") };
    match layout.contiguous_offsets() {
        Some((a, b)) => Ok(&data[a..b]),
        None => candle_core::bail!("{op}: the input must be contiguous"),
    }
}

struct Unfold(Geometry);

impl CustomOp1 for Unfold {
    fn name(&self) -> &'static str {
        "vae-unfold"
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> Result<(CpuStorage, Shape)> {
        let src = f32_input(storage, layout, "unfold")?;
        let g = self.0;
        let (len, c) = (g.row_len(), g.input.4);
        let mut out = vec![0f32; g.rows() * len];
        out.par_chunks_mut(len).enumerate().for_each(|(row, dst)| {
            g.visit(row, |o, i| dst[o..o + c].copy_from_slice(&src[i..i + c]));
        });
        Ok((CpuStorage::F32(out), Shape::from((g.rows(), len))))
    }

    fn bwd(&self, _arg: &Tensor, _res: &Tensor, grad: &Tensor) -> Result<Option<Tensor>> {
        Ok(Some(grad.contiguous()?.apply_op1_no_bwd(&Fold(self.0))?))
    }
}

struct Fold(Geometry);

impl CustomOp1 for Fold {
    fn name(&self) -> &'static str {
        "vae-fold"
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> Result<(CpuStorage, Shape)> {
        let src = f32_input(storage, layout, "fold")?;
        let g = self.0;
        let (b, t, h, w, c) = g.input;
        let per_clip = t * h * w * c;
        let rows_per_clip = g.rows() / b.max(1);
        let len = g.row_len();
        let mut out = vec![0f32; b * per_clip];
        // Clips never share input pixels, so each is summed by one task.
        out.par_chunks_mut(per_clip.max(1)).enumerate().for_each(|(n, dst)| {
            for row in n * rows_per_clip..(n + 1) * rows_per_clip {
                let s = &src[row * len..(row + 1) * len];
                g.visit(row, |o, i| {
                    let i = i - n * per_clip;
                    dst[i..i + c].iter_mut().zip(&s[o..o + c]).for_each(|(d, v)| *d += v);
                });
            }
        });
        Ok((CpuStorage::F32(out), Shape::from((b, t, h, w, c))))
    }
}

/// `(B·T·H·W, k³·C)` taps of a contiguous channels-last padded f32 CPU video `(B, T', H', W', C)`,
/// with `stride = (time, space)`; differentiable.
pub(crate) fn unfold(x: &Tensor, k: usize, stride: (usize, usize)) -> Result<Tensor> {
    let g = Geometry::new(x.dims5()?, k, stride)?;
    x.contiguous()?.apply_op1(Unfold(g))
}

/// Output extent `(T, H, W)` of [`unfold`] for a padded input `(T', H', W')`.
pub(crate) fn unfold_extent(
    padded: (usize, usize, usize),
    k: usize,
    stride: (usize, usize),
) -> Result<(usize, usize, usize)> {
    Ok(Geometry::new((1, padded.0, padded.1, padded.2, 1), k, stride)?.output)
}
