//! Training of the nano model, stage 1: the VAE (reconstruction + KL) on procedural clips, with
//! checkpoints that a later run resumes and a CSV loss log.
//!
//! A run directory holds `vae.safetensors` (the weights, diffusers names), `vae_state.json` (the
//! step reached and the settings) and `vae_loss.csv` (one line per step). Starting a run in a
//! directory that has them continues from the saved step. AdamW's moments are not saved (candle
//! keeps them private): a resumed run restarts them.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

use candle_core::{D, DType, Device, Tensor, Var};
use candle_nn::{AdamW, Optimizer, ParamsAdamW, VarBuilder, VarMap};
use serde::{Deserialize, Serialize};

use crate::clips::{self, ClipConfig};
use framepack::generator::NoiseRng;
use framepack::models::vae::{self, AutoencoderKLHunyuanVideo};
use framepack::{Error, Result};

/// The nano model's VAE: HunyuanVideo's layout (×8 space, ×4 time, 16 latent channels) with
/// channels 16/32/32/32, one layer per block and 4 norm groups.
pub fn nano_vae_config() -> vae::Config {
    vae::Config {
        block_out_channels: vec![16, 32, 32, 32],
        layers_per_block: 1,
        norm_num_groups: 4,
        ..vae::Config::hunyuan_video()
    }
}

/// Settings of a VAE training run.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct VaeTraining {
    /// Total optimizer steps (a resumed run stops here too).
    pub steps: usize,
    /// Clips per step.
    pub batch: usize,
    /// Frames per training clip (`4k + 1`).
    pub frames: usize,
    /// Clip size in pixels.
    pub size: usize,
    /// AdamW learning rate.
    pub lr: f64,
    /// Weight of the KL term against the pixel MSE.
    pub kl_weight: f64,
    /// Steps between checkpoints (the last step always saves).
    pub checkpoint_every: usize,
    /// Seed of the weight initialisation and of the clip and noise draws.
    pub seed: u64,
}

impl Default for VaeTraining {
    fn default() -> Self {
        Self { steps: 800, batch: 4, frames: 5, size: 64, lr: 1e-3, kl_weight: 1e-6, checkpoint_every: 50, seed: 0 }
    }
}

/// One line of the loss log.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct StepLoss {
    /// 1-based step.
    pub step: usize,
    /// `recon + kl_weight · kl`.
    pub loss: f32,
    /// Pixel MSE in `[-1, 1]` units.
    pub recon: f32,
    /// Mean KL divergence per latent element.
    pub kl: f32,
    /// Wall time of the step.
    pub seconds: f64,
}

#[derive(Serialize)]
struct State {
    step: usize,
    settings: VaeTraining,
}

/// Paths of a run directory.
pub struct RunFiles {
    /// The weights.
    pub weights: PathBuf,
    /// The step reached and the settings.
    pub state: PathBuf,
    /// The loss log.
    pub log: PathBuf,
}

impl RunFiles {
    /// The files of the VAE stage in `dir`.
    pub fn vae(dir: &Path) -> Self {
        Self { weights: dir.join("vae.safetensors"), state: dir.join("vae_state.json"), log: dir.join("vae_loss.csv") }
    }

    /// Loads the checkpoint into `map` (whose variables exist already) and returns its step, or
    /// 0 when the directory has none.
    pub(crate) fn resume(&self, map: &mut VarMap) -> Result<usize> {
        #[derive(Deserialize)]
        struct Step {
            step: usize,
        }
        if !(self.weights.exists() && self.state.exists()) {
            return Ok(0);
        }
        let text = std::fs::read_to_string(&self.state).map_err(|e| io(&self.state, e))?;
        let saved: Step = serde_json::from_str(&text).map_err(|e| io(&self.state, e))?;
        map.load(&self.weights).map_err(|e| io(&self.weights, e))?;
        Ok(saved.step)
    }

    /// Opens the loss log for appending after the checkpoint at step `start`: a fresh run
    /// (`start` 0) writes `header` first; a resumed run first drops the lines of steps after
    /// `start`, which a run stopped between checkpoints logged but did not save.
    pub(crate) fn open_log(&self, header: &str, start: usize) -> Result<std::fs::File> {
        if start > 0 && self.log.exists() {
            let text = std::fs::read_to_string(&self.log).map_err(|e| io(&self.log, e))?;
            let kept: String = text
                .lines()
                .enumerate()
                .filter(|(i, l)| {
                    *i == 0 || l.split(',').next().and_then(|s| s.parse::<usize>().ok()).is_some_and(|s| s <= start)
                })
                .map(|(_, l)| format!("{l}\n"))
                .collect();
            if kept.len() != text.len() {
                std::fs::write(&self.log, kept).map_err(|e| io(&self.log, e))?;
            }
        }
        let mut log =
            std::fs::OpenOptions::new().create(true).append(true).open(&self.log).map_err(|e| io(&self.log, e))?;
        if start == 0 {
            writeln!(log, "{header}").map_err(|e| io(&self.log, e))?;
        }
        Ok(log)
    }

    /// Saves a checkpoint: the weights of `map`, then `state` as JSON.
    pub(crate) fn save(&self, map: &VarMap, state: &impl Serialize) -> Result<()> {
        map.save(&self.weights).map_err(|e| io(&self.weights, e))?;
        let json = serde_json::to_string_pretty(state).map_err(|e| io(&self.state, e))?;
        std::fs::write(&self.state, json).map_err(|e| io(&self.state, e))
    }

    /// The files of the transformer stage in `dir`.
    pub fn dit(dir: &Path) -> Self {
        Self { weights: dir.join("dit.safetensors"), state: dir.join("dit_state.json"), log: dir.join("dit_loss.csv") }
    }
}

pub(crate) fn io(path: &Path, e: impl std::fmt::Display) -> Error {
    crate::invalid("training run", format!("{}: {e}", path.display()))
}

/// Trains (or resumes training of) the nano VAE in `dir`; `on_step` sees every step's losses.
/// Returns the step reached.
pub fn train_vae(dir: &Path, settings: &VaeTraining, mut on_step: impl FnMut(&StepLoss)) -> Result<usize> {
    if settings.batch == 0
        || settings.frames == 0
        || !(settings.frames - 1).is_multiple_of(4)
        || !settings.size.is_multiple_of(8)
    {
        return Err(crate::invalid(
            "training settings",
            format!("{settings:?}: need batch ≥ 1, frames = 4k + 1 and a size divisible by 8"),
        ));
    }
    std::fs::create_dir_all(dir).map_err(|e| io(dir, e))?;
    let files = RunFiles::vae(dir);
    let dev = Device::Cpu;
    let cfg = nano_vae_config();
    let mut map = VarMap::new();
    let shapes = framepack::weights::requested_shapes(|vb| AutoencoderKLHunyuanVideo::new(vb, &cfg))?;
    init_weights(&map, shapes, settings.seed, |_| false)?;
    let start = files.resume(&mut map)?;
    let vae = AutoencoderKLHunyuanVideo::new(VarBuilder::from_varmap(&map, DType::F32, &dev), &cfg)?;
    let params = ParamsAdamW { lr: settings.lr, weight_decay: 0.0, ..Default::default() };
    let mut opt = AdamW::new(map.all_vars(), params)?;
    let mut log = files.open_log("step,loss,recon,kl,seconds", start)?;
    let clip_cfg = ClipConfig { width: settings.size, height: settings.size, frames: settings.frames, fps: 30.0 };
    let save = |step: usize| files.save(&map, &State { step, settings: settings.clone() });
    for step in start + 1..=settings.steps {
        let t0 = Instant::now();
        let mut rng = NoiseRng::new(settings.seed ^ (step as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15));
        let x = batch(&mut rng, settings.batch, &clip_cfg, &dev)?;
        let posterior = vae.encode(&x)?;
        let (mean, logvar) = (posterior.mean()?, posterior.logvar()?);
        let noise = rng.normal_tensor(mean.dims(), &dev)?;
        let z = (&mean + (&logvar * 0.5)?.exp()?.mul(&noise)?)?;
        let recon = (vae.decode(&z)? - &x)?.sqr()?.mean_all()?;
        let kl = (((mean.sqr()? + logvar.exp()?)? - 1.0)? - &logvar)?.mean_all()?.affine(0.5, 0.0)?;
        let loss = (&recon + (&kl * settings.kl_weight)?)?;
        opt.backward_step(&loss)?;
        let entry = StepLoss {
            step,
            loss: loss.to_scalar()?,
            recon: recon.to_scalar()?,
            kl: kl.to_scalar()?,
            seconds: t0.elapsed().as_secs_f64(),
        };
        if !entry.loss.is_finite() {
            return Err(crate::invalid("training", format!("the loss diverged at step {step}: {entry:?}")));
        }
        writeln!(log, "{},{},{},{},{:.3}", entry.step, entry.loss, entry.recon, entry.kl, entry.seconds)
            .map_err(|e| io(&files.log, e))?;
        on_step(&entry);
        if step % settings.checkpoint_every.max(1) == 0 || step == settings.steps {
            save(step)?;
        }
    }
    Ok(settings.steps.max(start))
}

/// Random weights in `map` for every tensor of `shapes`: matrices and kernels normal with
/// variance `1/fan_in` (zero where `zero(name)`), 1-d weights 1, biases 0.
/// Moves every variable of `map` to `dev` (a no-op on the CPU), so a model built on it there
/// trains on that device; checkpoints still save to files.
pub(crate) fn move_vars(map: &VarMap, dev: &candle_core::Device) -> Result<()> {
    if !dev.is_cpu() {
        let mut data = map.data().lock().expect("not poisoned");
        for var in data.values_mut() {
            *var = candle_core::Var::from_tensor(&var.as_tensor().to_device(dev)?)?;
        }
    }
    Ok(())
}

pub(crate) fn init_weights(
    map: &VarMap,
    shapes: std::collections::BTreeMap<String, Vec<usize>>,
    seed: u64,
    zero: impl Fn(&str) -> bool,
) -> Result<()> {
    let mut data = map.data().lock().expect("not poisoned");
    let mut rng = NoiseRng::new(seed ^ 0x494e_4954_0000_0000);
    for (name, shape) in shapes {
        let n: usize = shape.iter().product();
        let t = if shape.len() > 1 && zero(&name) {
            Tensor::zeros(shape.as_slice(), DType::F32, &Device::Cpu)?
        } else if shape.len() > 1 {
            let fan_in = (n / shape[0].max(1)).max(1) as f64;
            (rng.normal_tensor(&shape, &Device::Cpu)? * (1.0 / fan_in).sqrt())?
        } else if name.ends_with("weight") {
            Tensor::ones(shape.as_slice(), DType::F32, &Device::Cpu)?
        } else {
            Tensor::zeros(shape.as_slice(), DType::F32, &Device::Cpu)?
        };
        data.insert(name, Var::from_tensor(&t)?);
    }
    Ok(())
}

/// `batch` clips from training seeds, `(B, 3, T, H, W)` in `[-1, 1]`.
fn batch(rng: &mut NoiseRng, batch: usize, cfg: &ClipConfig, dev: &Device) -> Result<Tensor> {
    let clips: Vec<Tensor> = (0..batch)
        .map(|_| {
            let mut seed = rng.next_u64() % 1_000_000;
            while clips::is_held_out(seed) {
                seed += 1;
            }
            clips::clip(seed, cfg)?.to_tensor(dev)
        })
        .collect::<Result<_>>()?;
    Ok(Tensor::cat(&clips, 0)?)
}

/// PSNR in dB of `decoded` against `x` (both in `[-1, 1]`), per clip.
pub fn psnr(decoded: &Tensor, x: &Tensor) -> Result<Vec<f32>> {
    let mse = (decoded - x)?.sqr()?.flatten_from(1)?.mean(D::Minus1)?.to_vec1::<f32>()?;
    Ok(mse.iter().map(|m| 10.0 * (4.0 / m.max(1e-12)).log10()).collect())
}
