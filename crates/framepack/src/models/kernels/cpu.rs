//! CPU f32 kernels for the models' hot paths: attention without score tensors or head
//! transposes, per-head RMSNorm fused with the rotary embedding, LayerNorm fused with AdaLN
//! modulation, gated residuals and the tanh GELU.
//!
//! Each kernel returns `None` when it does not apply (another device or dtype), and the caller
//! then uses the generic candle ops. Elementwise maths is written as plain loops over 8-lane
//! blocks that the compiler vectorizes; [`dispatch!`] compiles each of them a second time with
//! AVX2 + FMA and picks that copy at run time when the CPU has it. `exp` is a Cephes-style
//! polynomial (relative error ≈ 2 ulp), which is what makes softmax and GELU fast: the libm call
//! per element is the single largest cost of candle's CPU softmax and GELU.

use candle_core::{DType, Device, Result, Storage, Tensor};
use rayon::prelude::*;

/// Elements per rayon task in the elementwise kernels.
const CHUNK: usize = 1 << 14;

/// Most query rows one attention task handles (its score block is this × the key count).
const MAX_QUERY_BLOCK: usize = 256;

/// Kernels switched off by `FRAMEPACK_CPU_KERNELS_OFF` (comma-separated: `attention`, `gelu`,
/// `linear`, `norm_rope`, `ln_modulate`, `gated_add`, `conv3x3`, or `all`), read once. For benchmark ablations only: the generic path
/// computes the same values.
pub(crate) fn enabled(kernel: &str) -> bool {
    static OFF: std::sync::OnceLock<Vec<String>> = std::sync::OnceLock::new();
    let off = OFF.get_or_init(|| {
        std::env::var("FRAMEPACK_CPU_KERNELS_OFF")
            .map(|v| v.split(',').map(|s| s.trim().to_string()).collect())
            .unwrap_or_default()
    });
    !off.iter().any(|k| k == kernel || k == "all")
}

/// A CPU f32 tensor outside any autograd graph: the kernels build their outputs from raw
/// buffers, so gradients would not flow through them.
pub(crate) fn cpu_f32(x: &Tensor) -> bool {
    matches!(x.device(), Device::Cpu) && x.dtype() == DType::F32 && !x.track_op()
}

/// Runs `f` on the contiguous f32 data of `x`.
pub(crate) fn with_f32<R>(x: &Tensor, f: impl FnOnce(&[f32]) -> Result<R>) -> Result<Option<R>> {
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

/// Compiles `$generic::<true>` with AVX2 + FMA enabled and calls it when the CPU supports
/// them, else `$generic::<false>` (the const parameter says whether `mul_add` is a native FMA).
macro_rules! dispatch {
    ($(#[$m:meta])* fn $name:ident = $generic:ident($($arg:ident: $ty:ty),*) $(-> $ret:ty)?) => {
        $(#[$m])*
        fn $name($($arg: $ty),*) $(-> $ret)? {
            #[cfg(target_arch = "x86_64")]
            {
                #[target_feature(enable = "avx2,fma")]
                fn avx2($($arg: $ty),*) $(-> $ret)? {
                    $generic::<true>($($arg),*)
                }
                if std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma") {
                    // SAFETY: the CPU has the features `avx2` was compiled for.
                    return unsafe { avx2($($arg),*) };
                }
            }
            $generic::<false>($($arg),*)
        }
    };
}

const EXP_LO: f32 = -87.336_55;
const EXP_HI: f32 = 88.376_26;

/// `a·b + c`, fused where the CPU has FMA.
#[inline(always)]
fn fmadd<const FMA: bool>(a: f32, b: f32, c: f32) -> f32 {
    if FMA { a.mul_add(b, c) } else { a * b + c }
}

/// `eˣ` to ≈ 2 ulp, 0 below `EXP_LO` (so `exp(−∞) = 0`), branch-free so loops vectorize.
#[inline(always)]
fn exp<const FMA: bool>(x: f32) -> f32 {
    const LOG2E: f32 = std::f32::consts::LOG2_E;
    const ROUND: f32 = 12_582_912.0; // 1.5 · 2²³: adding and subtracting it rounds to an integer.
    const LN2_HI: f32 = 0.693_359_4;
    const LN2_LO: f32 = -2.121_944_4e-4;
    let xc = x.clamp(EXP_LO, EXP_HI);
    let t = fmadd::<FMA>(xc, LOG2E, ROUND);
    let n = t - ROUND;
    // The rounded integer sits in the low mantissa bits of `t` (read this way rather than with an
    // `as i32` cast, whose saturating semantics do not vectorize).
    let ni = (t.to_bits() as i32).wrapping_sub(ROUND.to_bits() as i32);
    let r = fmadd::<FMA>(-n, LN2_LO, fmadd::<FMA>(-n, LN2_HI, xc));
    let mut p = 1.987_569_1e-4;
    for c in [1.398_199_9e-3, 8.333_452e-3, 4.166_579_6e-2, 1.666_666_5e-1, 0.5] {
        p = fmadd::<FMA>(p, r, c);
    }
    let e = fmadd::<FMA>(p, r * r, r + 1.0);
    let scale = f32::from_bits((ni.wrapping_add(127) << 23) as u32);
    if x < EXP_LO { 0.0 } else { e * scale }
}

/// `x · sigmoid(2u)` with `u = √(2/π)(x + 0.044715x³)`, which equals the tanh form
/// `0.5x(1 + tanh u)` of PyTorch's `gelu(approximate="tanh")`.
#[inline(always)]
fn gelu_tanh_scalar<const FMA: bool>(x: f32) -> f32 {
    const K: f32 = 0.797_884_6; // √(2/π)
    let u = K * fmadd::<FMA>(0.044_715 * x * x, x, x);
    x / (1.0 + exp::<FMA>(-2.0 * u))
}

#[inline(always)]
fn gelu_slice_generic<const FMA: bool>(src: &[f32], dst: &mut [f32]) {
    for (d, &x) in dst.iter_mut().zip(src) {
        *d = gelu_tanh_scalar::<FMA>(x);
    }
}
dispatch!(fn gelu_slice = gelu_slice_generic(src: &[f32], dst: &mut [f32]));

/// Tanh-approximated GELU (candle's `gelu`), parallel and vectorized on the CPU in f32.
pub(crate) fn gelu_tanh(x: &Tensor) -> Result<Tensor> {
    if !cpu_f32(x) || !enabled("gelu") {
        return x.gelu();
    }
    let out = with_f32(x, |src| {
        let mut out = vec![0f32; src.len()];
        out.par_chunks_mut(CHUNK).zip(src.par_chunks(CHUNK)).for_each(|(d, s)| gelu_slice(s, d));
        Ok(out)
    })?;
    match out {
        Some(o) => Tensor::from_vec(o, x.dims(), x.device()),
        None => x.gelu(),
    }
}

/// Sum of `x` in 8 interleaved lanes.
#[inline(always)]
fn sum8(x: &[f32]) -> f32 {
    let mut acc = [0f32; 8];
    let mut chunks = x.chunks_exact(8);
    for c in &mut chunks {
        for i in 0..8 {
            acc[i] += c[i];
        }
    }
    acc.iter().sum::<f32>() + chunks.remainder().iter().sum::<f32>()
}

/// `Σ (x − m)²` in 8 interleaved lanes.
#[inline(always)]
fn sq_dev8(x: &[f32], m: f32) -> f32 {
    let mut acc = [0f32; 8];
    let mut chunks = x.chunks_exact(8);
    for c in &mut chunks {
        for i in 0..8 {
            let d = c[i] - m;
            acc[i] += d * d;
        }
    }
    acc.iter().sum::<f32>() + chunks.remainder().iter().map(|&v| (v - m) * (v - m)).sum::<f32>()
}

/// Softmax numerator of one score row in place: `row ← exp(row + bias − max)`; returns the sum.
#[inline(always)]
fn exp_row_generic<const FMA: bool>(row: &mut [f32], bias: Option<&[f32]>) -> f32 {
    if let Some(bias) = bias {
        for (r, &b) in row.iter_mut().zip(bias) {
            *r += b;
        }
    }
    let mut mx = [f32::NEG_INFINITY; 8];
    let mut chunks = row.chunks_exact(8);
    for c in &mut chunks {
        for i in 0..8 {
            mx[i] = mx[i].max(c[i]);
        }
    }
    let m = chunks.remainder().iter().fold(mx.iter().fold(f32::NEG_INFINITY, |a, &b| a.max(b)), |a, &b| a.max(b));
    if m == f32::NEG_INFINITY {
        row.fill(0.0);
        return 0.0;
    }
    for r in row.iter_mut() {
        *r = exp::<FMA>(*r - m);
    }
    sum8(row)
}
dispatch!(fn exp_row = exp_row_generic(row: &mut [f32], bias: Option<&[f32]>) -> f32);

/// Strided view of one attention operand: `(B, H, L, Dh)` with unit stride along `Dh`.
struct Operand<'a> {
    data: &'a [f32],
    offset: usize,
    stride: [usize; 3],
}

impl<'a> Operand<'a> {
    fn row_ptr(&self, b: usize, h: usize, l: usize) -> *const f32 {
        self.data[self.offset + b * self.stride[0] + h * self.stride[1] + l * self.stride[2]..].as_ptr()
    }
}

/// Reads `t`'s CPU f32 storage and strides; `None` if `Dh` is not its innermost unit-stride axis.
fn with_operand<R>(t: &Tensor, f: impl FnOnce(Operand<'_>) -> Result<R>) -> Result<Option<R>> {
    let (s, l) = t.storage_and_layout();
    let Storage::Cpu(s) = &*s else {
        return Ok(None);
    };
    let st = l.stride();
    if st.len() != 4 || (st[3] != 1 && t.dim(3)? > 1) {
        return Ok(None);
    }
    let data = s.as_slice::<f32>()?;
    let dims = t.dims();
    let last = l.start_offset() + (0..4).map(|i| (dims[i].max(1) - 1) * st[i]).sum::<usize>();
    if last >= data.len() {
        candle_core::bail!("attention operand storage smaller than its layout");
    }
    f(Operand { data, offset: l.start_offset(), stride: [st[0], st[1], st[2]] }).map(Some)
}

#[derive(Clone, Copy)]
struct SyncPtr(*mut f32);
// SAFETY: tasks write disjoint rows of the output through it.
unsafe impl Send for SyncPtr {}
unsafe impl Sync for SyncPtr {}

impl SyncPtr {
    /// Read through a method so closures capture the `SyncPtr`, not its raw field.
    fn get(self) -> *mut f32 {
        self.0
    }
}

/// Scaled dot-product attention of `q` `(B, H, Lq, Dh)` over `k`, `v` `(B, H, Lk, Dh)` (any
/// strides with unit stride along `Dh`, e.g. transposed views of `(B, L, H, Dh)`), with an
/// optional additive f32 `bias` broadcastable to `(B, H, Lq, Lk)`. Returns the heads merged,
/// `(B, Lq, H·Dh)`.
///
/// Work is split over batch, heads and blocks of query rows; each task computes its score rows
/// with one GEMM, exponentiates them in place and multiplies by `V` with a second GEMM straight
/// into the output rows, then divides by the softmax sums. Memory is one score block per thread.
pub(crate) fn attention(q: &Tensor, k: &Tensor, v: &Tensor, bias: Option<&Tensor>) -> Result<Option<Tensor>> {
    if ![q, k, v].iter().all(|t| cpu_f32(t)) || bias.is_some_and(|b| !cpu_f32(b)) || !enabled("attention") {
        return Ok(None);
    }
    let (b, h, lq, dh) = q.dims4()?;
    let lk = k.dim(2)?;
    if k.dims() != [b, h, lk, dh] || v.dims() != [b, h, lk, dh] {
        candle_core::bail!("attention: q {:?}, k {:?}, v {:?} do not match", q.dims(), k.dims(), v.dims());
    }
    let bias = match bias {
        None => None,
        Some(t) if t.rank() >= 2 && t.rank() <= 4 => {
            let mut dims = vec![1usize; 4 - t.rank()];
            dims.extend_from_slice(t.dims());
            let ok = (dims[0] == 1 || dims[0] == b)
                && (dims[1] == 1 || dims[1] == h)
                && (dims[2] == 1 || dims[2] == lq)
                && dims[3] == lk;
            if !ok {
                return Ok(None);
            }
            Some((t.reshape(dims.as_slice())?.contiguous()?.flatten_all()?.to_vec1::<f32>()?, dims))
        }
        Some(_) => return Ok(None),
    };
    if b * h * lq * dh == 0 {
        return Tensor::zeros((b, lq, h * dh), DType::F32, q.device()).map(Some);
    }
    let threads = rayon::current_num_threads().max(1);
    let tasks_per_head = (4 * threads).div_ceil(b * h).max(1);
    // Each task packs all of K and V for its GEMMs, so blocks should be long, but short enough to
    // give every thread a few tasks.
    let block = lq.div_ceil(tasks_per_head).clamp(16, MAX_QUERY_BLOCK).min(lq);
    let blocks = lq.div_ceil(block);
    let scale = 1.0 / (dh as f32).sqrt();
    let mut out = vec![0f32; b * lq * h * dh];
    let out_ptr = SyncPtr(out.as_mut_ptr());
    let done = with_operand(q, |qo| {
        with_operand(k, |ko| {
            with_operand(v, |vo| {
                (0..b * h * blocks).into_par_iter().for_each_init(
                    || vec![0f32; block * lk],
                    |scores, task| {
                        let (bh, blk) = (task / blocks, task % blocks);
                        let (bi, hi) = (bh / h, bh % h);
                        let q0 = blk * block;
                        let rows = block.min(lq - q0);
                        // SAFETY: lhs reads `rows` rows of Dh values of q (in bounds, checked in
                        // `with_operand`); rhs reads Lk rows of k; dst is the task's own score buffer
                        // of `block · Lk` elements.
                        unsafe {
                            gemm::gemm(
                                rows,
                                lk,
                                dh,
                                scores.as_mut_ptr(),
                                1,
                                lk as isize,
                                false,
                                qo.row_ptr(bi, hi, q0),
                                1,
                                qo.stride[2] as isize,
                                ko.row_ptr(bi, hi, 0),
                                ko.stride[2] as isize,
                                1,
                                0.0,
                                scale,
                                false,
                                false,
                                false,
                                gemm::Parallelism::None,
                            );
                        }
                        let mut sums = vec![0f32; rows];
                        for (r, row) in scores[..rows * lk].chunks_mut(lk).enumerate() {
                            let brow = bias.as_ref().map(|(data, d)| {
                                let qi = if d[2] == 1 { 0 } else { q0 + r };
                                let at = (((if d[0] == 1 { 0 } else { bi }) * d[1] + if d[1] == 1 { 0 } else { hi })
                                    * d[2]
                                    + qi)
                                    * lk;
                                &data[at..at + lk]
                            });
                            sums[r] = exp_row(row, brow);
                        }
                        // SAFETY: dst rows (bi, q0 + r, hi) for r < rows are written by this task
                        // only (tasks differ in (bi, hi, block)); lhs is the score buffer; rhs reads
                        // Lk rows of v.
                        let dst = unsafe { out_ptr.get().add(((bi * lq + q0) * h + hi) * dh) };
                        unsafe {
                            gemm::gemm(
                                rows,
                                dh,
                                lk,
                                dst,
                                1,
                                (h * dh) as isize,
                                false,
                                scores.as_ptr(),
                                1,
                                lk as isize,
                                vo.row_ptr(bi, hi, 0),
                                1,
                                vo.stride[2] as isize,
                                0.0,
                                1.0,
                                false,
                                false,
                                false,
                                gemm::Parallelism::None,
                            );
                            for (r, &s) in sums[..rows].iter().enumerate() {
                                let inv = if s > 0.0 { 1.0 / s } else { 0.0 };
                                let row = std::slice::from_raw_parts_mut(dst.add(r * h * dh), dh);
                                row.iter_mut().for_each(|x| *x *= inv);
                            }
                        }
                    },
                );
                Ok(())
            })
        })
    })?;
    if !matches!(done, Some(Some(Some(())))) {
        return Ok(None);
    }
    Tensor::from_vec(out, (b, lq, h * dh), q.device()).map(Some)
}

/// `x · Wᵀ + b` for `x` `(…, K)` and a contiguous `weight` `(N, K)`: one GEMM that reads the
/// weight in place and accumulates onto rows initialized with the bias.
pub(crate) fn linear(x: &Tensor, weight: &Tensor, bias: Option<&Tensor>) -> Result<Option<Tensor>> {
    if !cpu_f32(x)
        || !cpu_f32(weight)
        || bias.is_some_and(|b| !cpu_f32(b))
        || !weight.is_contiguous()
        || !enabled("linear")
    {
        return Ok(None);
    }
    let (n, k) = weight.dims2()?;
    let dims = x.dims();
    if dims.last() != Some(&k) || bias.is_some_and(|b| b.dims() != [n]) {
        candle_core::bail!("linear: input {dims:?} does not fit weight {:?}", weight.dims());
    }
    let m = x.elem_count() / k.max(1);
    let mut out_dims = dims.to_vec();
    *out_dims.last_mut().expect("checked above") = n;
    if m * n * k == 0 {
        return Tensor::zeros(out_dims, DType::F32, x.device()).map(Some);
    }
    let bias = bias.map(|b| b.to_vec1::<f32>()).transpose()?;
    let threads = rayon::current_num_threads();
    let par =
        if threads > 1 && m * n * k >= 1 << 18 { gemm::Parallelism::Rayon(threads) } else { gemm::Parallelism::None };
    let out = with_f32(x, |xs| {
        with_f32(weight, |ws| {
            let mut out = vec![0f32; m * n];
            if let Some(b) = &bias {
                out.par_chunks_mut(n).for_each(|row| row.copy_from_slice(b));
            }
            // SAFETY: lhs reads m rows of k, rhs reads n rows of k (as its k × n transpose), dst
            // writes m rows of n: all within the three buffers, which are distinct.
            unsafe {
                gemm::gemm(
                    m,
                    n,
                    k,
                    out.as_mut_ptr(),
                    1,
                    n as isize,
                    bias.is_some(),
                    xs.as_ptr(),
                    1,
                    k as isize,
                    ws.as_ptr(),
                    k as isize,
                    1,
                    1.0,
                    1.0,
                    false,
                    false,
                    false,
                    par,
                );
            }
            Ok(out)
        })
    })?;
    match out.flatten() {
        Some(o) => Tensor::from_vec(o, out_dims, x.device()).map(Some),
        None => Ok(None),
    }
}

#[inline(always)]
fn norm_rope_row_generic<const FMA: bool>(
    src: &[f32],
    dst: &mut [f32],
    weight: &[f32],
    cos: &[f32],
    sin: &[f32],
    eps: f32,
) {
    let dh = weight.len();
    for (s, d) in src.chunks_exact(dh).zip(dst.chunks_exact_mut(dh)) {
        let ms = {
            let mut acc = [0f32; 8];
            let mut chunks = s.chunks_exact(8);
            for c in &mut chunks {
                for i in 0..8 {
                    acc[i] += c[i] * c[i];
                }
            }
            acc.iter().sum::<f32>() + chunks.remainder().iter().map(|v| v * v).sum::<f32>()
        } / dh as f32;
        let r = 1.0 / (ms + eps).sqrt();
        for (p, (sp, dp)) in s.chunks_exact(2).zip(d.chunks_exact_mut(2)).enumerate() {
            let a = sp[0] * r * weight[2 * p];
            let b = sp[1] * r * weight[2 * p + 1];
            dp[0] = a * cos[p] - b * sin[p];
            dp[1] = a * sin[p] + b * cos[p];
        }
    }
}
dispatch!(fn norm_rope_row = norm_rope_row_generic(
    src: &[f32], dst: &mut [f32], weight: &[f32], cos: &[f32], sin: &[f32], eps: f32
));

/// Per-head RMSNorm (weight `(Dh)`) followed by the interleaved rotary embedding, on the
/// projection output `x` `(B, L, H·Dh)` in place of a transpose to heads. `cos`/`sin` are
/// `(N, Dh/2)` or `(B, N, Dh/2)` tables whose row `row0 + l` belongs to token `l`.
pub(crate) fn norm_rope(
    x: &Tensor,
    weight: &Tensor,
    cos: &Tensor,
    sin: &Tensor,
    row0: usize,
    eps: f32,
) -> Result<Option<Tensor>> {
    if ![x, weight, cos, sin].iter().all(|t| cpu_f32(t)) || !enabled("norm_rope") {
        return Ok(None);
    }
    let (b, l, d) = x.dims3()?;
    let dh = weight.dim(0)?;
    let half = dh / 2;
    let per_sample = cos.rank() == 3;
    let rows = cos.dim(cos.rank() - 2)?;
    if dh == 0
        || !dh.is_multiple_of(2)
        || !d.is_multiple_of(dh)
        || cos.dims() != sin.dims()
        || row0 + l > rows
        || cos.dim(cos.rank() - 1)? != half
        || (per_sample && cos.dim(0)? != b)
    {
        candle_core::bail!(
            "norm_rope: x {:?}, weight {:?}, tables {:?} from row {row0} do not fit",
            x.dims(),
            weight.dims(),
            cos.dims()
        );
    }
    let w = weight.to_vec1::<f32>()?;
    // The tables are read in place (they cover every token and are shared by all blocks).
    let out = with_f32(cos, |cos| {
        with_f32(sin, |sin| {
            with_f32(x, |src| {
                let mut out = vec![0f32; src.len()];
                out.par_chunks_mut(d).zip(src.par_chunks(d)).enumerate().for_each(|(t, (dst, s))| {
                    let (bi, li) = (t / l, t % l);
                    let row = if per_sample { bi * rows + row0 + li } else { row0 + li };
                    let tab = row * half..(row + 1) * half;
                    norm_rope_row(s, dst, &w, &cos[tab.clone()], &sin[tab], eps);
                });
                Ok(out)
            })
        })
    })?;
    match out.flatten().flatten() {
        Some(o) => Tensor::from_vec(o, (b, l, d), x.device()).map(Some),
        None => Ok(None),
    }
}

#[inline(always)]
fn ln_modulate_row_generic<const FMA: bool>(src: &[f32], dst: &mut [f32], shift: &[f32], scale: &[f32], eps: f32) {
    let n = src.len() as f32;
    let mean = sum8(src) / n;
    let rstd = 1.0 / (sq_dev8(src, mean) / n + eps).sqrt();
    for (i, (d, &x)) in dst.iter_mut().zip(src).enumerate() {
        *d = ((x - mean) * rstd) * (1.0 + scale[i]) + shift[i];
    }
}
dispatch!(fn ln_modulate_row = ln_modulate_row_generic(
    src: &[f32], dst: &mut [f32], shift: &[f32], scale: &[f32], eps: f32
));

/// Reads a `(B, 1, D)` (or `(1, D)`/`(D)`) per-sample vector as `B` rows of `D`.
fn per_sample_rows(t: &Tensor, b: usize, d: usize) -> Result<Option<Vec<f32>>> {
    let n = t.elem_count();
    if n != d && n != b * d {
        return Ok(None);
    }
    let v = t.flatten_all()?.to_vec1::<f32>()?;
    Ok(Some(if n == d { v.repeat(b) } else { v }))
}

/// Affine-free LayerNorm followed by AdaLN modulation, `LN(x)·(1 + scale) + shift`, for `x`
/// `(B, L, D)` and `shift`/`scale` `(B, 1, D)`.
pub(crate) fn ln_modulate(x: &Tensor, shift: &Tensor, scale: &Tensor, eps: f32) -> Result<Option<Tensor>> {
    if ![x, shift, scale].iter().all(|t| cpu_f32(t)) || !enabled("ln_modulate") {
        return Ok(None);
    }
    let (b, l, d) = x.dims3()?;
    let (Some(sh), Some(sc)) = (per_sample_rows(shift, b, d)?, per_sample_rows(scale, b, d)?) else {
        return Ok(None);
    };
    let out = with_f32(x, |src| {
        let mut out = vec![0f32; src.len()];
        out.par_chunks_mut(d).zip(src.par_chunks(d)).enumerate().for_each(|(t, (dst, s))| {
            let bi = t / l.max(1);
            ln_modulate_row(s, dst, &sh[bi * d..(bi + 1) * d], &sc[bi * d..(bi + 1) * d], eps);
        });
        Ok(out)
    })?;
    out.map(|o| Tensor::from_vec(o, (b, l, d), x.device())).transpose()
}

/// `x + y · gate` for `x`, `y` `(B, L, D)` and `gate` `(B, 1, D)`.
pub(crate) fn gated_add(x: &Tensor, y: &Tensor, gate: &Tensor) -> Result<Option<Tensor>> {
    if ![x, y, gate].iter().all(|t| cpu_f32(t)) || x.dims() != y.dims() || !enabled("gated_add") {
        return Ok(None);
    }
    let (b, l, d) = x.dims3()?;
    let Some(g) = per_sample_rows(gate, b, d)? else {
        return Ok(None);
    };
    let y = y.contiguous()?;
    let out = with_f32(x, |xs| {
        with_f32(&y, |ys| {
            let mut out = vec![0f32; xs.len()];
            out.par_chunks_mut(d).zip(xs.par_chunks(d).zip(ys.par_chunks(d))).enumerate().for_each(
                |(t, (o, (xr, yr)))| {
                    let gr = &g[(t / l.max(1)) * d..][..d];
                    for i in 0..d {
                        o[i] = xr[i] + yr[i] * gr[i];
                    }
                },
            );
            Ok(out)
        })
    })?;
    match out.flatten() {
        Some(o) => Tensor::from_vec(o, (b, l, d), x.device()).map(Some),
        None => Ok(None),
    }
}

#[cfg(test)]
mod tests {
    use candle_core::Module;

    use super::*;

    #[test]
    fn exp_is_within_a_few_ulp() {
        let mut worst = 0f64;
        let mut x = -87.0f32;
        while x < 88.0 {
            let want = (x as f64).exp();
            for got in [exp::<false>(x) as f64, exp::<true>(x) as f64] {
                worst = worst.max(((got - want) / want).abs());
            }
            x += 0.000_37;
        }
        assert!(worst < 3.0 * f32::EPSILON as f64, "worst relative error {worst:e}");
        assert_eq!(exp::<false>(f32::NEG_INFINITY), 0.0);
        assert_eq!(exp::<true>(-100.0), 0.0);
        assert!(exp::<false>(f32::NAN).is_nan());
    }

    #[test]
    fn gelu_matches_the_tanh_formula() -> Result<()> {
        let x = Tensor::arange(-40_000i64, 40_000, &Device::Cpu)?.to_dtype(DType::F32)?.affine(1e-3, 0.0)?;
        let want: Vec<f64> = x
            .to_vec1::<f32>()?
            .iter()
            .map(|&x| {
                let x = x as f64;
                0.5 * x * (1.0 + ((2.0 / std::f64::consts::PI).sqrt() * (x + 0.044715 * x.powi(3))).tanh())
            })
            .collect();
        let got = gelu_tanh(&x)?.to_vec1::<f32>()?;
        for (g, w) in got.iter().zip(&want) {
            assert!((*g as f64 - w).abs() <= 1e-6 * w.abs().max(1e-3), "{g} vs {w}");
        }
        Ok(())
    }

    fn max_diff(a: &Tensor, b: &Tensor) -> Result<f32> {
        (a - b)?.abs()?.flatten_all()?.max(0)?.to_scalar::<f32>()
    }

    #[test]
    fn attention_on_strided_views_equals_candle() -> Result<()> {
        let dev = Device::Cpu;
        let (b, h, lq, lk, dh) = (2, 3, 37, 29, 16);
        // Projections laid out (B, L, H·Dh), viewed as heads without copying.
        let heads = |t: Tensor, l| t.reshape((b, l, h, dh))?.transpose(1, 2);
        let q = heads(Tensor::randn(0f32, 1., (b, lq, h * dh), &dev)?, lq)?;
        let k = heads(Tensor::randn(0f32, 1., (b, lk, h * dh), &dev)?, lk)?;
        let v = heads(Tensor::randn(0f32, 1., (b, lk, h * dh), &dev)?, lk)?;
        let mut mask = vec![0f32; b * lk];
        mask[lk + 20..2 * lk].fill(f32::NEG_INFINITY);
        let key_bias = Tensor::from_vec(mask, (b, 1, 1, lk), &dev)?;
        let full_bias = Tensor::randn(0f32, 1., (b, 1, lq, lk), &dev)?;
        for bias in [None, Some(&key_bias), Some(&full_bias)] {
            let reference = {
                let s = (q.contiguous()?.matmul(&k.contiguous()?.t()?)? / (dh as f64).sqrt())?;
                let s = match bias {
                    Some(bias) => s.broadcast_add(bias)?,
                    None => s,
                };
                let p = candle_nn::ops::softmax_last_dim(&s)?;
                p.matmul(&v.contiguous()?)?.transpose(1, 2)?.reshape((b, lq, h * dh))?
            };
            let got = attention(&q, &k, &v, bias)?.expect("cpu f32 applies");
            assert!(max_diff(&got, &reference)? < 2e-6);
        }
        Ok(())
    }

    #[test]
    fn tensors_that_track_gradients_take_the_generic_path() -> Result<()> {
        let dev = Device::Cpu;
        let w = candle_core::Var::randn(0f32, 1., (7, 5), &dev)?;
        let x = Tensor::randn(0f32, 1., (2, 5), &dev)?;
        assert!(linear(&x, w.as_tensor(), None)?.is_none());
        let y = candle_nn::Linear::new(w.as_tensor().clone(), None).forward(&x)?;
        assert!(gelu_tanh(&y)?.track_op(), "the generic GELU keeps the graph");
        let grads = gelu_tanh(&y)?.sum_all()?.backward()?;
        assert!(grads.get(w.as_tensor()).is_some());
        Ok(())
    }

    #[test]
    fn linear_equals_candle() -> Result<()> {
        let dev = Device::Cpu;
        let w = Tensor::randn(0f32, 1., (7, 5), &dev)?;
        let b = Tensor::randn(0f32, 1., 7, &dev)?;
        let x = Tensor::randn(0f32, 1., (2, 3, 5), &dev)?;
        for bias in [None, Some(&b)] {
            let want = candle_nn::Linear::new(w.clone(), bias.cloned()).forward(&x)?;
            let got = linear(&x, &w, bias)?.expect("cpu f32 applies");
            assert!(max_diff(&got, &want)? < 1e-5);
        }
        Ok(())
    }

    #[test]
    fn fused_norms_equal_candle() -> Result<()> {
        let dev = Device::Cpu;
        let (b, l, h, dh) = (2, 5, 3, 8);
        let x = Tensor::randn(0f32, 1., (b, l, h * dh), &dev)?;
        let w = Tensor::randn(1f32, 0.1, dh, &dev)?;
        let cos = Tensor::randn(0f32, 1., (9, dh / 2), &dev)?;
        let sin = Tensor::randn(0f32, 1., (9, dh / 2), &dev)?;
        let got = norm_rope(&x, &w, &cos, &sin, 3, 1e-6)?.expect("cpu f32 applies");
        let heads = x.reshape((b, l, h, dh))?;
        let normed = candle_nn::ops::rms_norm(&heads, &w, 1e-6)?.transpose(1, 2)?.contiguous()?;
        let want = candle_nn::rotary_emb::rope_i(&normed, &cos.narrow(0, 3, l)?, &sin.narrow(0, 3, l)?)?
            .transpose(1, 2)?
            .reshape((b, l, h * dh))?;
        assert!(max_diff(&got, &want)? < 1e-5);

        let shift = Tensor::randn(0f32, 1., (b, 1, h * dh), &dev)?;
        let scale = Tensor::randn(0f32, 1., (b, 1, h * dh), &dev)?;
        let got = ln_modulate(&x, &shift, &scale, 1e-6)?.expect("cpu f32 applies");
        let ones = Tensor::ones(h * dh, DType::F32, &dev)?;
        let ln = candle_nn::ops::layer_norm(&x, &ones, &ones.zeros_like()?, 1e-6)?;
        let want = ln.broadcast_mul(&(&scale + 1.0)?)?.broadcast_add(&shift)?;
        assert!(max_diff(&got, &want)? < 1e-5);

        let got = gated_add(&x, &want, &scale)?.expect("cpu f32 applies");
        assert!(max_diff(&got, &(&x + want.broadcast_mul(&scale)?)?)? < 1e-6);
        Ok(())
    }
}
