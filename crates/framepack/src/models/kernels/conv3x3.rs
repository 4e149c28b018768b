//! CPU f32 fast path of TAEHV's stride-1 3×3 convolutions.
//!
//! A zero-padded frame `(C, H + 2, W + 2)` is a flat array in which output pixel `(y, x)` reads
//! its taps at flat offsets `y·W' + x + (a·W' + b)`, so each of the nine taps is one GEMM
//! `(O × C) · (C × N)` whose right-hand side is the padded frame shifted by a constant (row
//! stride = the channel stride, column stride 1), accumulated into an output on the padded
//! grid whose two extra columns are dropped when it is copied out. A memory block's second
//! input is padded into the channels after the first, so the concatenation never exists as a
//! tensor; bias, residual and ReLU are applied while copying out. Frames run in parallel when
//! there are at least as many as threads; a single frame (streaming) parallelizes its GEMMs.

use candle_core::{Result, Tensor};
use rayon::prelude::*;

use crate::models::kernels::cpu::{cpu_f32, enabled, with_f32};

/// Per-frame working memory: the padded input and the output on the padded grid.
struct Scratch {
    padded: Vec<f32>,
    grid: Vec<f32>,
}

struct Shapes {
    c: usize,
    c_total: usize,
    o: usize,
    h: usize,
    w: usize,
}

impl Shapes {
    fn hp(&self) -> usize {
        self.h + 2
    }
    fn wp(&self) -> usize {
        self.w + 2
    }
    fn scratch(&self) -> Scratch {
        Scratch {
            padded: vec![0f32; self.c_total * self.hp() * self.wp()],
            grid: vec![0f32; self.o * self.h * self.wp()],
        }
    }
}

/// Copies the `c` channels of `src` `(c, H, W)` into the interior of `dst` `(c, H + 2, W + 2)`,
/// whose border stays zero.
fn pad_into(src: &[f32], dst: &mut [f32], s: &Shapes, par: bool) {
    let (h, w, wp) = (s.h, s.w, s.wp());
    let plane = s.hp() * wp;
    let copy = |(d, src): (&mut [f32], &[f32])| {
        for y in 0..h {
            d[(y + 1) * wp + 1..(y + 1) * wp + 1 + w].copy_from_slice(&src[y * w..(y + 1) * w]);
        }
    };
    if par {
        dst.par_chunks_mut(plane).zip(src.par_chunks(h * w)).for_each(copy);
    } else {
        dst.chunks_mut(plane).zip(src.chunks(h * w)).for_each(copy);
    }
}

/// One frame: pads `x` (and `past`) into the scratch, runs the nine GEMMs and writes
/// `relu(conv + bias + residual)` into `out` `(O, H, W)`.
#[allow(clippy::too_many_arguments)]
fn frame(
    x: &[f32],
    past: Option<&[f32]>,
    weight: &[f32],
    bias: Option<&[f32]>,
    residual: Option<&[f32]>,
    relu: bool,
    out: &mut [f32],
    s: &Shapes,
    scratch: &mut Scratch,
    threads: usize,
) {
    let (h, w, hp, wp, o, ct) = (s.h, s.w, s.hp(), s.wp(), s.o, s.c_total);
    let par = threads > 1;
    let plane = hp * wp;
    pad_into(x, &mut scratch.padded[..s.c * plane], s, par);
    if let Some(p) = past {
        pad_into(p, &mut scratch.padded[s.c * plane..], s, par);
    }
    let n = (h - 1) * wp + w;
    let parallelism = if par { gemm::Parallelism::Rayon(threads) } else { gemm::Parallelism::None };
    for tap in 0..9 {
        let shift = (tap / 3) * wp + tap % 3;
        debug_assert!((ct - 1) * plane + shift + n <= scratch.padded.len());
        // SAFETY: rhs reads ci·H'W' + shift + [0, n) for ci < C_total, inside `padded`
        // ((C_total − 1)·H'W' + shift + n ≤ C_total·H'W' since shift + n ≤ H'·W'); lhs reads
        // weight entries oi·C_total·9 + ci·9 + tap < O·C_total·9; dst writes oi·H·W' + [0, n)
        // inside `grid` (n ≤ H·W'); the three buffers are distinct allocations.
        unsafe {
            gemm::gemm(
                o,
                n,
                ct,
                scratch.grid.as_mut_ptr(),
                1,
                (h * wp) as isize,
                tap > 0,
                weight.as_ptr().add(tap),
                9,
                (ct * 9) as isize,
                scratch.padded.as_ptr().add(shift),
                1,
                plane as isize,
                1f32,
                1f32,
                false,
                false,
                false,
                parallelism,
            );
        }
    }
    let finish = |(oi, (dst, grid)): (usize, (&mut [f32], &[f32]))| {
        let b = bias.map_or(0.0, |b| b[oi]);
        for y in 0..h {
            let row = &mut dst[y * w..(y + 1) * w];
            row.copy_from_slice(&grid[y * wp..y * wp + w]);
            match residual {
                Some(r) => {
                    let r = &r[oi * h * w + y * w..oi * h * w + (y + 1) * w];
                    row.iter_mut().zip(r).for_each(|(v, r)| *v += b + r);
                }
                None => row.iter_mut().for_each(|v| *v += b),
            }
            if relu {
                row.iter_mut().for_each(|v| *v = v.max(0.0));
            }
        }
    };
    if par {
        out.par_chunks_mut(h * w).zip(scratch.grid.par_chunks(h * wp)).enumerate().for_each(finish);
    } else {
        out.chunks_mut(h * w).zip(scratch.grid.chunks(h * wp)).enumerate().for_each(finish);
    }
}

/// `relu(conv3x3(x ‖ past) + bias + residual)` with zero padding 1 and stride 1, for `x`
/// `(M, C, H, W)`, `past` of the same shape, `weight` `(O, C or 2C, 3, 3)` and `residual`
/// `(M, O, H, W)`. `None` when a tensor is not a CPU f32 tensor outside autograd.
pub(crate) fn conv3x3(
    x: &Tensor,
    past: Option<&Tensor>,
    weight: &Tensor,
    bias: Option<&Tensor>,
    residual: Option<&Tensor>,
    relu: bool,
) -> Result<Option<Tensor>> {
    let all = [Some(x), past, Some(weight), bias, residual];
    if !enabled("conv3x3") || !all.iter().flatten().all(|t| cpu_f32(t)) {
        return Ok(None);
    }
    let (m, c, h, w) = x.dims4()?;
    let c_total = c * if past.is_some() { 2 } else { 1 };
    let o = weight.dim(0)?;
    if weight.dims() != [o, c_total, 3, 3] {
        candle_core::bail!("conv3x3: weight {:?} does not fit {c_total} input channels", weight.dims());
    }
    if let Some(p) = past
        && p.dims() != x.dims()
    {
        candle_core::bail!("conv3x3: past {:?} and input {:?} differ", p.dims(), x.dims());
    }
    if let Some(r) = residual
        && r.dims() != [m, o, h, w]
    {
        candle_core::bail!("conv3x3: residual {:?} for output ({m}, {o}, {h}, {w})", r.dims());
    }
    let bias = bias.map(|b| b.to_vec1::<f32>()).transpose()?;
    let s = Shapes { c, c_total, o, h, w };
    let threads = rayon::current_num_threads().max(1);
    let (frame_in, frame_out) = (c * h * w, o * h * w);
    let empty = Tensor::zeros(0, candle_core::DType::F32, x.device())?;
    let out = with_f32(weight, |wd| {
        with_f32(x, |xd| {
            with_f32(past.unwrap_or(&empty), |pd| {
                with_f32(residual.unwrap_or(&empty), |rd| {
                    let mut out = vec![0f32; m * frame_out];
                    let run = |mi: usize, dst: &mut [f32], scratch: &mut Scratch, threads: usize| {
                        frame(
                            &xd[mi * frame_in..(mi + 1) * frame_in],
                            past.map(|_| &pd[mi * frame_in..(mi + 1) * frame_in]),
                            wd,
                            bias.as_deref(),
                            residual.map(|_| &rd[mi * frame_out..(mi + 1) * frame_out]),
                            relu,
                            dst,
                            &s,
                            scratch,
                            threads,
                        )
                    };
                    if m >= threads && threads > 1 {
                        out.par_chunks_mut(frame_out)
                            .enumerate()
                            .for_each_init(|| s.scratch(), |scratch, (mi, dst)| run(mi, dst, scratch, 1));
                    } else {
                        let mut scratch = s.scratch();
                        for (mi, dst) in out.chunks_mut(frame_out).enumerate() {
                            run(mi, dst, &mut scratch, threads);
                        }
                    }
                    Ok(out)
                })
            })
        })
    })?;
    match out.flatten().flatten().flatten() {
        Some(v) => Ok(Some(Tensor::from_vec(v, (m, o, h, w), x.device())?)),
        None => Ok(None),
    }
}
