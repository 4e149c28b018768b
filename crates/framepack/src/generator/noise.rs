//! The job's noise: one seeded stream per job, consumed section by section.
//!
//! FramePack draws every section's `randn(1, 16, W, h, w)` from one CPU `torch.Generator`
//! seeded once per job. Reproducing torch's mt19937 + Box–Muller bit for bit is not attempted:
//! this is xoshiro256++ (seeded through SplitMix64) with the Box–Muller transform in f64,
//! rounded to f32. Same seed → same numbers on every platform; the distribution is the same as
//! torch's, the values are not.

use candle_core::{Device, Tensor};

use crate::error::Result;

/// A seeded standard-normal generator (xoshiro256++ + Box–Muller).
#[derive(Debug, Clone)]
pub struct NoiseRng {
    s: [u64; 4],
    spare: Option<f64>,
}

fn splitmix64(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

impl NoiseRng {
    /// The stream of `seed`.
    pub fn new(seed: u64) -> Self {
        let mut st = seed;
        let s = [splitmix64(&mut st), splitmix64(&mut st), splitmix64(&mut st), splitmix64(&mut st)];
        Self { s, spare: None }
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        let s = &mut self.s;
        let result = s[0].wrapping_add(s[3]).rotate_left(23).wrapping_add(s[0]);
        let t = s[1] << 17;
        s[2] ^= s[0];
        s[3] ^= s[1];
        s[1] ^= s[2];
        s[0] ^= s[3];
        s[2] ^= t;
        s[3] = s[3].rotate_left(45);
        result
    }

    /// A uniform number in `[0, 1)` with 53 random bits.
    pub fn uniform(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// A standard normal number (Box–Muller; the second value of each pair is kept for the next
    /// call).
    pub fn normal(&mut self) -> f64 {
        if let Some(z) = self.spare.take() {
            return z;
        }
        let u1 = 1.0 - self.uniform(); // (0, 1]: ln never sees 0
        let u2 = self.uniform();
        let r = (-2.0 * u1.ln()).sqrt();
        let a = std::f64::consts::TAU * u2;
        self.spare = Some(r * a.sin());
        r * a.cos()
    }

    /// An f32 tensor of standard normal numbers, filled in row-major order.
    pub fn normal_tensor(&mut self, shape: &[usize], device: &Device) -> Result<Tensor> {
        let n: usize = shape.iter().product();
        let v: Vec<f32> = (0..n).map(|_| self.normal() as f32).collect();
        Ok(Tensor::from_vec(v, shape, device)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_seed_same_stream_and_moments_are_standard() {
        let (mut a, mut b, mut c) = (NoiseRng::new(31337), NoiseRng::new(31337), NoiseRng::new(31338));
        let xs: Vec<f64> = (0..200_000).map(|_| a.normal()).collect();
        let ys: Vec<f64> = (0..200_000).map(|_| b.normal()).collect();
        assert_eq!(xs, ys);
        assert_ne!(xs[..8], (0..8).map(|_| c.normal()).collect::<Vec<_>>()[..]);
        let mean = xs.iter().sum::<f64>() / xs.len() as f64;
        let var = xs.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / xs.len() as f64;
        assert!(mean.abs() < 0.01, "mean {mean}");
        assert!((var - 1.0).abs() < 0.01, "var {var}");
        let tail = xs.iter().filter(|x| x.abs() > 1.96).count() as f64 / xs.len() as f64;
        assert!((tail - 0.05).abs() < 0.003, "two-sided 5% tail {tail}");
    }
}
