//! Training of the nano model's TAEHV autoencoder (version 2): a TAEHV-architecture encoder and
//! decoder trained from scratch on procedural clips, to replace the small HunyuanVideo VAE.
//!
//! The loss is the pixel MSE of `decode(encode(x) + noise)` against `x` in `[0, 1]` units, plus a
//! small penalty `(mean(z²) − 1)²` that keeps the latents' scale near 1 for the transformer. The
//! noise, a fraction of the latents' RMS, makes the decoder tolerate the imperfect latents a
//! transformer predicts without limiting what the latents can carry. The decoder is trained on
//! its unclamped output.
//!
//! A run directory holds `taehv.safetensors` (upstream TAEHV names), `taehv_state.json` (the
//! step reached and the settings) and `taehv_loss.csv`; running again in the same directory
//! resumes from the last checkpoint (AdamW's moments restart, as in the VAE stage).

use std::io::Write;
use std::path::Path;
use std::time::Instant;

use candle_core::{DType, Device, Tensor};
use candle_nn::{AdamW, Optimizer, ParamsAdamW, VarBuilder, VarMap};
use serde::{Deserialize, Serialize};

use crate::clips::{self, ClipConfig};
use crate::train::{RunFiles, init_weights, io, move_vars};
use framepack::Result;
use framepack::generator::NoiseRng;
use framepack::models::taehv::{self, Taehv};

/// The nano model's TAEHV: HunyuanVideo's layout (×8 space, ×4 time, 16 latent channels) with
/// encoder width 32 and decoder widths 64/64/32/32.
pub fn nano_taehv_config() -> taehv::Config {
    taehv::Config { encoder_width: 32, decoder_widths: [64, 64, 32, 32], ..taehv::Config::hunyuan_video() }
}

/// Settings of a TAEHV training run.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct TaehvTraining {
    /// Total optimizer steps (a resumed run stops here too).
    pub steps: usize,
    /// Clips per step.
    pub batch: usize,
    /// Frames per training clip (`4k + 1`).
    pub frames: usize,
    /// Clip width in pixels (a multiple of 8).
    pub width: usize,
    /// Clip height in pixels (a multiple of 8).
    pub height: usize,
    /// Size of the random crop of each clip that a step trains on (multiples of 8, at most the
    /// clip's): the model is convolutional, so crops teach it the full frame for a fraction of
    /// the cost. `None`: whole frames.
    pub crop: Option<(usize, usize)>,
    /// AdamW learning rate.
    pub lr: f64,
    /// Weight of `(mean(z²) − 1)²` in the loss.
    pub latent_weight: f64,
    /// Standard deviation of the noise added to the latents before decoding, as a fraction of
    /// their RMS.
    pub latent_noise: f64,
    /// Steps between checkpoints (the last step always saves).
    pub checkpoint_every: usize,
    /// Seed of the weight initialisation and of the clip and noise draws.
    pub seed: u64,
    /// Train the decoder only, keeping the encoder (and so the latents) as they are: once a
    /// transformer trains on this TAEHV's latents, only the decoder may still change.
    pub freeze_encoder: bool,
}

impl Default for TaehvTraining {
    fn default() -> Self {
        Self {
            steps: 20_000,
            batch: 2,
            frames: 5,
            width: 128,
            height: 96,
            crop: Some((64, 48)),
            lr: 3e-4,
            latent_weight: 1e-3,
            latent_noise: 0.05,
            checkpoint_every: 50,
            seed: 0,
            freeze_encoder: false,
        }
    }
}

/// One line of the loss log.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct TaehvStepLoss {
    /// 1-based step.
    pub step: usize,
    /// `recon + latent_weight · (latent_ms − 1)²`.
    pub loss: f32,
    /// Pixel MSE in `[0, 1]` units.
    pub recon: f32,
    /// PSNR of the step's batch in dB (from `recon`, clamped output not applied).
    pub psnr: f32,
    /// Root mean square of the latents.
    pub latent_rms: f32,
    /// Wall time of the step.
    pub seconds: f64,
}

#[derive(Serialize)]
struct State {
    step: usize,
    settings: TaehvTraining,
}

impl RunFiles {
    /// The files of the TAEHV stage in `dir`.
    pub fn taehv(dir: &Path) -> Self {
        Self {
            weights: dir.join("taehv.safetensors"),
            state: dir.join("taehv_state.json"),
            log: dir.join("taehv_loss.csv"),
        }
    }
}

/// `(N, T, 3, H, W)` in `[0, 1]`: TAEHV's layout, from clips of training (or held-out) seeds.
fn batch(seeds: &[u64], cfg: &ClipConfig, dev: &Device) -> Result<Tensor> {
    let clips: Vec<Tensor> = seeds
        .iter()
        .map(|&s| Ok(clips::clip(s, cfg)?.to_tensor(dev)?.permute((0, 2, 1, 3, 4))?.affine(0.5, 0.5)?))
        .collect::<Result<_>>()?;
    Ok(Tensor::cat(&clips, 0)?)
}

/// Trains (or resumes training of) the nano TAEHV in `dir` on `dev` (the CPU, or a GPU in a
/// build with candle's backend); `on_step` sees every step's losses. Returns the step reached.
pub fn train_taehv(
    dir: &Path,
    settings: &TaehvTraining,
    dev: &Device,
    mut on_step: impl FnMut(&TaehvStepLoss),
) -> Result<usize> {
    if settings.batch == 0
        || settings.frames == 0
        || !(settings.frames - 1).is_multiple_of(4)
        || !settings.width.is_multiple_of(8)
        || !settings.height.is_multiple_of(8)
        || settings.crop.is_some_and(|(w, h)| {
            w == 0
                || h == 0
                || !w.is_multiple_of(8)
                || !h.is_multiple_of(8)
                || w > settings.width
                || h > settings.height
        })
    {
        return Err(crate::invalid(
            "training settings",
            format!("{settings:?}: need batch ≥ 1, frames = 4k + 1, sizes divisible by 8 and a crop inside the clip"),
        ));
    }
    std::fs::create_dir_all(dir).map_err(|e| io(dir, e))?;
    let files = RunFiles::taehv(dir);
    let cfg = nano_taehv_config();
    let mut map = VarMap::new();
    let shapes = framepack::weights::requested_shapes(|vb| Taehv::new(vb, &cfg))?;
    init_weights(&map, shapes, settings.seed, |_| false)?;
    let start = files.resume(&mut map)?;
    move_vars(&map, dev)?;
    let model = Taehv::new(VarBuilder::from_varmap(&map, DType::F32, dev), &cfg)?;
    let params = ParamsAdamW { lr: settings.lr, weight_decay: 0.0, ..Default::default() };
    let vars = if settings.freeze_encoder {
        let data = map.data().lock().expect("not poisoned");
        data.iter().filter(|(name, _)| !name.starts_with("encoder.")).map(|(_, v)| v.clone()).collect()
    } else {
        map.all_vars()
    };
    let mut opt = AdamW::new(vars, params)?;
    let mut log = files.open_log("step,loss,recon,psnr,latent_rms,seconds", start)?;
    let clip_cfg = ClipConfig { width: settings.width, height: settings.height, frames: settings.frames, fps: 30.0 };
    for step in start + 1..=settings.steps {
        let t0 = Instant::now();
        let mut rng = NoiseRng::new(settings.seed ^ (step as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15));
        let seeds: Vec<u64> = (0..settings.batch)
            .map(|_| {
                let mut s = rng.next_u64() % 1_000_000;
                while clips::is_held_out(s) {
                    s += 1;
                }
                s
            })
            .collect();
        let mut x = batch(&seeds, &clip_cfg, dev)?;
        if let Some((cw, ch)) = settings.crop {
            let left = 8 * (rng.next_u64() as usize % ((settings.width - cw) / 8 + 1));
            let top = 8 * (rng.next_u64() as usize % ((settings.height - ch) / 8 + 1));
            x = x.narrow(3, top, ch)?.narrow(4, left, cw)?.contiguous()?;
        }
        let z = if settings.freeze_encoder { model.encode(&x)?.detach() } else { model.encode(&x)? };
        let latent_ms = z.sqr()?.mean_all()?;
        let sigma = settings.latent_noise * f64::from(latent_ms.to_scalar::<f32>()?.sqrt());
        let noisy = (&z + (rng.normal_tensor(z.dims(), dev)? * sigma)?)?;
        let recon = (model.decode_unclamped(&noisy)? - &x)?.sqr()?.mean_all()?;
        let loss = (&recon + ((&latent_ms - 1.0)?.sqr()? * settings.latent_weight)?)?;
        opt.backward_step(&loss)?;
        let recon_v: f32 = recon.to_scalar()?;
        let entry = TaehvStepLoss {
            step,
            loss: loss.to_scalar()?,
            recon: recon_v,
            psnr: 10.0 * (1.0 / recon_v.max(1e-12)).log10(),
            latent_rms: latent_ms.to_scalar::<f32>()?.sqrt(),
            seconds: t0.elapsed().as_secs_f64(),
        };
        if !entry.loss.is_finite() {
            return Err(crate::invalid("training", format!("the loss diverged at step {step}: {entry:?}")));
        }
        writeln!(
            log,
            "{},{},{},{:.3},{:.4},{:.3}",
            entry.step, entry.loss, entry.recon, entry.psnr, entry.latent_rms, entry.seconds
        )
        .map_err(|e| io(&files.log, e))?;
        on_step(&entry);
        if step % settings.checkpoint_every.max(1) == 0 || step == settings.steps {
            files.save(&map, &State { step, settings: settings.clone() })?;
        }
    }
    Ok(settings.steps.max(start))
}

/// Mean reconstruction PSNR (dB, clamped output, `[0, 1]` units) of the TAEHV in `weights` over
/// `n` held-out clips of `cfg`'s size and length.
pub fn held_out_psnr(weights: &Path, n: usize, cfg: &ClipConfig) -> Result<f32> {
    let model = Taehv::load(&[weights], &nano_taehv_config(), DType::F32, &Device::Cpu)?;
    let mut total = 0.0;
    for seed in clips::held_out_seeds(n) {
        let x = batch(&[seed], cfg, &Device::Cpu)?;
        let y = model.decode(&model.encode(&x)?)?;
        let mse: f32 = (y - &x)?.sqr()?.mean_all()?.to_scalar()?;
        total += 10.0 * (1.0 / mse.max(1e-12)).log10();
    }
    Ok(total / n.max(1) as f32)
}
