//! Flow-matching sampling: FramePack's sigma schedule, the model-input conventions (timestep
//! and distilled guidance rounded to bf16), and two samplers — UniPC (bh1, up to order 3) and
//! Euler — that take the denoiser as a closure so they run without a model.
//!
//! Convention: `x_σ = (1 − σ)·x0 + σ·ε`; the denoiser returns the x0 prediction
//! (`x0 = x − σ·v` for a velocity model).

use candle_core::Tensor;

use crate::error::{Error, Result};

/// Scale from σ to the model's timestep.
pub const TIMESTEP_SCALE: f64 = 1000.0;
/// The cap of FramePack's dynamic shift: `μ ≤ ln 7`.
pub const MAX_SHIFT: f64 = 7.0;

/// FramePack's resolution-dependent shift exponent for `seq_len` noisy tokens:
/// `min(0.5 + 0.65/3840·(L − 256), ln 7)`.
pub fn flux_mu(seq_len: usize) -> f64 {
    let k = (1.15 - 0.5) / (4096.0 - 256.0);
    (0.5 + k * (seq_len as f64 - 256.0)).min(MAX_SHIFT.ln())
}

/// The `steps + 1` sigmas `σ_i = e^μ / (e^μ + 1/t_i − 1)` on `t = linspace(1, 0, steps + 1)`;
/// the last is 0.
pub fn framepack_sigmas(steps: usize, mu: f64) -> Result<Vec<f64>> {
    shifted_sigmas(steps, mu.exp())
}

/// The static-shift form `σ' = s·t / (1 + (s − 1)·t)` on `t = linspace(1, 0, steps + 1)` (what
/// diffusers' pipeline uses with shift 7). Equal to [`framepack_sigmas`] with `μ = ln s`.
pub fn shifted_sigmas(steps: usize, shift: f64) -> Result<Vec<f64>> {
    if steps == 0 {
        return Err(Error::invalid("steps", "the sampler needs at least 1 step"));
    }
    if !(shift.is_finite() && shift > 0.0) {
        return Err(Error::invalid("shift", format!("must be a positive number, got {shift}")));
    }
    Ok((0..=steps)
        .map(|i| {
            let t = 1.0 - i as f64 / steps as f64;
            if t <= 0.0 { 0.0 } else { shift * t / (1.0 + (shift - 1.0) * t) }
        })
        .collect())
}

/// Sigmas for a section of `frames × h × w` latents: `μ` from the noisy token count
/// `frames·h·w/4`.
pub fn section_sigmas(steps: usize, frames: usize, h: usize, w: usize) -> Result<Vec<f64>> {
    framepack_sigmas(steps, flux_mu(frames * h * w / 4))
}

/// Rounds to the nearest bfloat16 (ties to even), as FramePack does with its model inputs.
pub fn round_bf16(x: f32) -> f32 {
    if x.is_nan() {
        return x;
    }
    let bits = x.to_bits();
    let lsb = (bits >> 16) & 1;
    f32::from_bits(bits.wrapping_add(0x7fff + lsb) & 0xffff_0000)
}

/// The timestep fed to the transformer for `sigma`: `bf16(σ·1000)` (0.9941 → 996).
pub fn model_timestep(sigma: f64) -> f32 {
    round_bf16((sigma * TIMESTEP_SCALE) as f32)
}

/// The distilled-guidance input for a guidance scale: `bf16(g·1000)` (10 → 9984).
pub fn model_guidance(scale: f64) -> f32 {
    round_bf16((scale * TIMESTEP_SCALE) as f32)
}

/// A denoiser: returns the x0 prediction for `x` at noise level `sigma`.
pub trait Denoiser {
    /// One model evaluation.
    fn denoise(&mut self, x: &Tensor, sigma: f64) -> Result<Tensor>;
}

impl<F: FnMut(&Tensor, f64) -> Result<Tensor>> Denoiser for F {
    fn denoise(&mut self, x: &Tensor, sigma: f64) -> Result<Tensor> {
        self(x, sigma)
    }
}

/// What a sampler reports after each step.
pub struct Step<'a> {
    /// 0-based step.
    pub index: usize,
    /// Total steps (model evaluations).
    pub total: usize,
    /// Sigma of this step.
    pub sigma: f64,
    /// Sampler state after the step.
    pub x: &'a Tensor,
    /// Latest x0 prediction (good for previews).
    pub denoised: &'a Tensor,
}

/// Called after every step; return an error (e.g. [`Error::Cancelled`]) to stop sampling.
pub type StepCallback<'a> = dyn FnMut(&Step<'_>) -> Result<()> + 'a;

/// FramePack's sampler: UniPC with the bh1 variant for flow matching, order
/// `min(3, steps − 1)` with warm-up orders 1 and 2. Evaluates the model exactly once per step
/// and returns the last x0 prediction (σ = 0 is never evaluated).
pub fn sample_unipc(
    model: &mut dyn Denoiser,
    noise: &Tensor,
    sigmas: &[f64],
    callback: &mut StepCallback<'_>,
) -> Result<Tensor> {
    check_sigmas(sigmas)?;
    let steps = sigmas.len() - 1;
    let order = (sigmas.len() - 2).min(3);
    let mut x = noise.clone();
    let mut models: Vec<Tensor> = Vec::with_capacity(3);
    let mut times: Vec<f64> = Vec::with_capacity(3);
    for (i, &s) in sigmas[..steps].iter().enumerate() {
        if i == 0 {
            models.push(model.denoise(&x, s)?);
        } else {
            let p = i.min(order);
            let (x_t, m_t) = unipc_update(model, &x, &models, &times, s, p)?;
            x = x_t;
            models.push(m_t);
        }
        times.push(s);
        if order > 0 && models.len() > order {
            models.remove(0);
            times.remove(0);
        }
        let denoised = models.last().expect("one model output per step");
        callback(&Step { index: i, total: steps, sigma: s, x: &x, denoised })?;
    }
    Ok(models.pop().expect("at least one step"))
}

fn check_sigmas(sigmas: &[f64]) -> Result<()> {
    if sigmas.len() < 2 {
        return Err(Error::invalid("sigmas", "need at least 2 sigmas (one step)"));
    }
    if sigmas[..sigmas.len() - 1].iter().any(|s| !(s.is_finite() && *s > 0.0)) {
        return Err(Error::invalid("sigmas", "all sigmas but the last must be positive and finite"));
    }
    if sigmas.windows(2).any(|w| w[1] >= w[0]) {
        return Err(Error::invalid("sigmas", "sigmas must strictly decrease"));
    }
    Ok(())
}

/// One UniPC predictor–corrector step of order `p` from `times.last()` to `t`.
fn unipc_update(
    model: &mut dyn Denoiser,
    x: &Tensor,
    models: &[Tensor],
    times: &[f64],
    t: f64,
    p: usize,
) -> Result<(Tensor, Tensor)> {
    let n = models.len();
    let (t0, m0) = (times[n - 1], &models[n - 1]);
    let lambda = |s: f64| -s.ln();
    let h = lambda(t) - lambda(t0);

    let mut rks = Vec::with_capacity(p);
    let mut diffs = Vec::with_capacity(p);
    for k in 1..p {
        let r = (lambda(times[n - 1 - k]) - lambda(t0)) / h;
        diffs.push(((&models[n - 1 - k] - m0)? / r)?);
        rks.push(r);
    }
    rks.push(1.0);

    let hh = -h;
    let phi1 = hh.exp_m1();
    let b_h = hh;
    let mut h_phi = phi1 / hh - 1.0;
    let mut factorial = 1.0;
    let mut r_mat = vec![vec![0.0; p]; p];
    let mut b = vec![0.0; p];
    for i in 0..p {
        for (j, r) in rks.iter().enumerate() {
            r_mat[i][j] = r.powi(i as i32);
        }
        b[i] = h_phi * factorial / b_h;
        factorial *= (i + 2) as f64;
        h_phi = h_phi / hh - 1.0 / factorial;
    }

    let x_lin = ((x * (t / t0))? - (m0 * phi1)?)?;
    let x_pred = if p >= 2 {
        let rhos_p = if p == 2 { vec![0.5] } else { solve(sub(&r_mat, p - 1), b[..p - 1].to_vec())? };
        (&x_lin - (weighted(&diffs, &rhos_p)? * b_h)?)?
    } else {
        x_lin.clone()
    };
    let m_t = model.denoise(&x_pred, t)?;
    let rhos_c = if p == 1 { vec![0.5] } else { solve(r_mat, b)? };
    let d_t = (&m_t - m0)?;
    let mut corr = (d_t * rhos_c[p - 1])?;
    if p >= 2 {
        corr = (corr + weighted(&diffs, &rhos_c[..p - 1])?)?;
    }
    let x_t = (x_lin - (corr * b_h)?)?;
    Ok((x_t, m_t))
}

fn weighted(terms: &[Tensor], coeffs: &[f64]) -> Result<Tensor> {
    let mut acc = (&terms[0] * coeffs[0])?;
    for (t, c) in terms.iter().zip(coeffs).skip(1) {
        acc = (acc + (t * *c)?)?;
    }
    Ok(acc)
}

fn sub(m: &[Vec<f64>], n: usize) -> Vec<Vec<f64>> {
    m[..n].iter().map(|row| row[..n].to_vec()).collect()
}

/// Solves the small dense system `a·x = b` by Gaussian elimination with partial pivoting.
fn solve(mut a: Vec<Vec<f64>>, mut b: Vec<f64>) -> Result<Vec<f64>> {
    let n = b.len();
    for col in 0..n {
        let pivot = (col..n).max_by(|&i, &j| a[i][col].abs().total_cmp(&a[j][col].abs())).expect("non-empty range");
        if a[pivot][col].abs() < 1e-300 {
            return Err(Error::invalid("sigmas", "UniPC coefficient system is singular (repeated sigmas?)"));
        }
        a.swap(col, pivot);
        b.swap(col, pivot);
        for row in col + 1..n {
            let f = a[row][col] / a[col][col];
            for k in col..n {
                a[row][k] -= f * a[col][k];
            }
            b[row] -= f * b[col];
        }
    }
    let mut x = vec![0.0; n];
    for row in (0..n).rev() {
        let s: f64 = (row + 1..n).map(|k| a[row][k] * x[k]).sum();
        x[row] = (b[row] - s) / a[row][row];
    }
    Ok(x)
}

/// Euler sampling of the flow ODE: `x ← x + (σ_{i+1} − σ_i)·(x − x0)/σ_i`, one model
/// evaluation per step; returns the final `x` at the last sigma.
pub fn sample_euler(
    model: &mut dyn Denoiser,
    noise: &Tensor,
    sigmas: &[f64],
    callback: &mut StepCallback<'_>,
) -> Result<Tensor> {
    check_sigmas(sigmas)?;
    let steps = sigmas.len() - 1;
    let mut x = noise.clone();
    for i in 0..steps {
        let (s, s_next) = (sigmas[i], sigmas[i + 1]);
        let denoised = model.denoise(&x, s)?;
        let v = ((&x - &denoised)? / s)?;
        x = (&x + (v * (s_next - s))?)?;
        callback(&Step { index: i, total: steps, sigma: s, x: &x, denoised: &denoised })?;
    }
    Ok(x)
}

/// Which sampler to run.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Sampler {
    /// [`sample_unipc`] (FramePack's default).
    #[default]
    UniPc,
    /// [`sample_euler`].
    Euler,
}

impl Sampler {
    /// Runs this sampler.
    pub fn sample(
        self,
        model: &mut dyn Denoiser,
        noise: &Tensor,
        sigmas: &[f64],
        callback: &mut StepCallback<'_>,
    ) -> Result<Tensor> {
        match self {
            Sampler::UniPc => sample_unipc(model, noise, sigmas, callback),
            Sampler::Euler => sample_euler(model, noise, sigmas, callback),
        }
    }
}
