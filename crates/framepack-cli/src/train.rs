//! `framepack train-nano`: the nano model's training stages and its export.

use std::path::{Path, PathBuf};

use crate::generate::invalid;
use candle_core::{DType, Device};
use clap::Args;
use framepack::Pipeline;
use framepack::bundle::BundlePaths;
use framepack::models::Autoencoder;
use framepack::models::transformer::Transformer;
use framepack::models::vae::AutoencoderKLHunyuanVideo;
use framepack_cli::error::Result;
use framepack_train::{bundle, dit, taehv, train};

/// Arguments of `framepack train-nano`.
#[derive(Args)]
pub struct TrainArgs {
    /// `vae` (stage 1), `dit` (stage 2, on the stage-1 VAE), `export` (the bundle in f16), or
    /// `taehv` (version 2's TAEHV autoencoder at 128 × 96; `--steps`, `--batch`, `--frames`, `--lr`).
    /// In a run directory with a `taehv` stage, `dit` trains version 2 on the TAEHV's latents
    /// (128 × 128 and 128 × 96, end frames), and `taehv` then trains its decoder only.
    #[arg(value_parser = ["vae", "dit", "export", "taehv"])]
    stage: String,
    /// Run directory.
    #[arg(long, value_name = "DIR")]
    out: PathBuf,
    /// Total optimizer steps (default: the stage's own).
    #[arg(long)]
    steps: Option<usize>,
    /// Clips (VAE) or sections (transformer) per step.
    #[arg(long)]
    batch: Option<usize>,
    /// AdamW learning rate.
    #[arg(long)]
    lr: Option<f64>,
    /// Steps between checkpoints.
    #[arg(long)]
    checkpoint_every: Option<usize>,
    /// Frames per training clip (VAE stage, `4k + 1`).
    #[arg(long)]
    frames: Option<usize>,
    /// Training clips encoded for the transformer stage.
    #[arg(long)]
    clips: Option<usize>,
    /// Device of the `taehv` and `dit` stages: cpu, or cuda[:N] / metal[:N] in a build with that
    /// backend (the `dit` stage encodes its clips on the CPU either way).
    #[arg(long, default_value = "cpu")]
    device: framepack::bundle::DeviceChoice,
    /// Transformer weights a fresh `dit` run starts from (e.g. `assets/nano/transformer/diffusion_pytorch_model.safetensors`).
    #[arg(long, value_name = "FILE")]
    init: Option<PathBuf>,
    /// Where `export` writes the f16 bundle.
    #[arg(long, value_name = "DIR")]
    to: Option<PathBuf>,
}

/// Time left in a training run, from the mean time of the steps this process has run.
struct Eta {
    started: std::time::Instant,
    first: Option<usize>,
    total: usize,
}

impl Eta {
    /// Counting from now, towards step `total`.
    fn new(total: usize) -> Self {
        Self { started: std::time::Instant::now(), first: None, total }
    }

    /// The time left once step `step` is done, formatted.
    fn after(&mut self, step: usize) -> String {
        let first = *self.first.get_or_insert(step);
        let per_step = self.started.elapsed().as_secs_f64() / (step + 1 - first) as f64;
        let left = per_step * self.total.saturating_sub(step) as f64;
        crate::generate::fmt_duration(std::time::Duration::from_secs_f64(left))
    }
}

/// Seed of the frozen random text and image encoders of the nano bundle.
const ENCODER_SEED: u64 = 0x4e41_4e4f;

pub fn run(a: TrainArgs) -> Result<()> {
    match a.stage.as_str() {
        "vae" => {
            let d = train::VaeTraining::default();
            let settings = train::VaeTraining {
                steps: a.steps.unwrap_or(d.steps),
                batch: a.batch.unwrap_or(d.batch),
                lr: a.lr.unwrap_or(d.lr),
                checkpoint_every: a.checkpoint_every.unwrap_or(d.checkpoint_every),
                frames: a.frames.unwrap_or(d.frames),
                ..d
            };
            let step = train::train_vae(&a.out, &settings, |s| {
                framepack_cli::say!(
                    "step {}: loss {:.5} (recon {:.5}, kl {:.3}) {:.2} s",
                    s.step,
                    s.loss,
                    s.recon,
                    s.kl,
                    s.seconds
                )
            })?;
            framepack_cli::say!("{}: vae step {step}", a.out.display());
            Ok(())
        }
        "taehv" => {
            let d = taehv::TaehvTraining::default();
            let freeze_encoder = a.out.join("bundle/vae").exists();
            if freeze_encoder {
                framepack_cli::say!(
                    "the transformer stage trains on this encoder's latents: training the decoder only"
                );
            }
            let settings = taehv::TaehvTraining {
                freeze_encoder,
                steps: a.steps.unwrap_or(d.steps),
                batch: a.batch.unwrap_or(d.batch),
                lr: a.lr.unwrap_or(d.lr),
                checkpoint_every: a.checkpoint_every.unwrap_or(d.checkpoint_every),
                frames: a.frames.unwrap_or(d.frames),
                ..d
            };
            let mut eta = Eta::new(settings.steps);
            let device = a.device.open()?;
            let step = taehv::train_taehv(&a.out, &settings, &device, |s| {
                framepack_cli::say!(
                    "step {}/{}: loss {:.5} (recon {:.5}, {:.2} dB, latent rms {:.3}) {:.2} s, ETA {}",
                    s.step,
                    settings.steps,
                    s.loss,
                    s.recon,
                    s.psnr,
                    s.latent_rms,
                    s.seconds,
                    eta.after(s.step)
                )
            })?;
            let psnr = taehv::held_out_psnr(
                &train::RunFiles::taehv(&a.out).weights,
                16,
                &framepack_train::clips::ClipConfig {
                    width: settings.width,
                    height: settings.height,
                    frames: 17,
                    fps: 30.0,
                },
            )?;
            framepack_cli::say!(
                "{}: taehv step {step}; held-out reconstruction {psnr:.2} dB (16 clips, 17 frames)",
                a.out.display()
            );
            Ok(())
        }
        "dit" => {
            let v2 = train::RunFiles::taehv(&a.out).weights.exists();
            let d = if v2 { dit::DitTraining::nano_v2() } else { dit::DitTraining::default() };
            let settings = dit::DitTraining {
                steps: a.steps.unwrap_or(d.steps),
                batch: a.batch.unwrap_or(d.batch),
                lr: a.lr.unwrap_or(d.lr),
                checkpoint_every: a.checkpoint_every.unwrap_or(d.checkpoint_every),
                clips: a.clips.unwrap_or(d.clips),
                init: a.init.clone(),
                ..d
            };
            let root = a.out.join("bundle");
            if !root.join("vae/config.json").exists() {
                if v2 {
                    prepare_bundle_v2(&a.out, &root)?
                } else {
                    prepare_bundle(&a.out, &root, &settings)?
                };
                framepack_train::testing::write_tiny_encoders(&root, ENCODER_SEED)?;
            }
            write_current_transformer(&a.out, &root, &settings)?;
            let mut pipeline = Pipeline::load(&BundlePaths::from_dir(&root), &Device::Cpu, DType::F32)?;
            let eta = std::cell::RefCell::new(Eta::new(settings.steps));
            let device = a.device.open()?;
            let step = dit::train_dit(
                &a.out,
                &mut pipeline,
                &settings,
                &device,
                |i, n| {
                    if i % 50 == 0 || i == n {
                        framepack_cli::say!("encoded {i}/{n} clips")
                    }
                    *eta.borrow_mut() = Eta::new(settings.steps);
                },
                |s| {
                    let eta = eta.borrow_mut().after(s.step);
                    framepack_cli::say!(
                        "step {}/{}: loss {:.5} {:.2} s, ETA {eta}",
                        s.step,
                        settings.steps,
                        s.loss,
                        s.seconds
                    )
                },
            )?;
            bundle::write_transformer(&root, &train::RunFiles::dit(&a.out).weights, &dit::nano_transformer_config())?;
            framepack_cli::say!("{}: transformer step {step}; bundle in {}", a.out.display(), root.display());
            Ok(())
        }
        _ => {
            let to = a.to.ok_or_else(|| invalid("export", "needs --to DIR"))?;
            let root = a.out.join("bundle");
            let weights = train::RunFiles::dit(&a.out).weights;
            if !weights.exists() || !root.exists() {
                return Err(invalid("export", format!("{}: train the dit stage first", a.out.display())));
            }
            // The latest checkpoints, also when a stage was stopped between checkpoints.
            bundle::write_transformer(&root, &weights, &dit::nano_transformer_config())?;
            let taehv_weights = train::RunFiles::taehv(&a.out).weights;
            if taehv_weights.exists() {
                bundle::refresh_taehv_decoder(&root, &taehv_weights)?;
            }
            let bytes = bundle::export_f16(&a.out.join("bundle"), &to)?;
            framepack_cli::say!("{}: {:.2} MB", to.display(), bytes as f64 / 1e6);
            Ok(())
        }
    }
}

/// Version 2's VAE for the transformer stage's bundle: the TAEHV of the `taehv` stage, its
/// `scaling_factor` 1/σ of its latents on training clips, written once (from then on the
/// `taehv` stage trains the decoder only).
fn prepare_bundle_v2(out: &Path, root: &Path) -> Result<()> {
    let weights = train::RunFiles::taehv(out).weights;
    let mut cfg = taehv::nano_taehv_config();
    let model = framepack::models::taehv::Taehv::load(&[&weights], &cfg, DType::F32, &Device::Cpu)?;
    let std = dit::latent_std(&model.into(), 16, 33, dit::DitTraining::nano_v2().sizes[0])?;
    cfg.scaling_factor = 1.0 / std;
    framepack_cli::say!("latent std {std:.4}: scaling_factor {:.4}", cfg.scaling_factor);
    Ok(bundle::write_taehv_vae(root, &weights, &cfg)?)
}

/// Version 1's VAE for the transformer stage's bundle: the stage-1 VAE with its latent scale
/// measured, written once.
fn prepare_bundle(out: &Path, root: &Path, settings: &dit::DitTraining) -> Result<()> {
    let vae_weights = train::RunFiles::vae(out).weights;
    if !vae_weights.exists() {
        return Err(invalid(
            "training run",
            format!("{} is missing: train the vae stage first", vae_weights.display()),
        ));
    }
    let mut vcfg = train::nano_vae_config();
    let unscaled = framepack::models::vae::Config { scaling_factor: 1.0, ..vcfg.clone() };
    let vae = AutoencoderKLHunyuanVideo::load(&[&vae_weights], &unscaled, DType::F32, &Device::Cpu)?;
    let std = dit::latent_std(&Autoencoder::hunyuan_video(vae, DType::F32), 16, 33, settings.sizes[0])?;
    vcfg.scaling_factor = 1.0 / std;
    framepack_cli::say!("latent std {std:.4}: scaling_factor {:.4}", vcfg.scaling_factor);
    Ok(bundle::write_vae(root, &vae_weights, &vcfg)?)
}

/// The bundle's transformer: the run's latest checkpoint, or random weights before the first
/// (the bundle's copy is not part of the committed run state).
fn write_current_transformer(out: &Path, root: &Path, settings: &dit::DitTraining) -> Result<()> {
    let checkpoint = train::RunFiles::dit(out).weights;
    if checkpoint.exists() {
        return Ok(bundle::write_transformer(root, &checkpoint, &dit::nano_transformer_config())?);
    }
    let tcfg = dit::nano_transformer_config();
    let first = root.join("transformer.init.safetensors");
    let w = framepack_train::testing::random_weights(settings.seed, 1.0, |vb| Transformer::new(vb, &tcfg))?;
    framepack_train::testing::save_safetensors(&w, &first)?;
    bundle::write_transformer(root, &first, &tcfg)?;
    std::fs::remove_file(&first).map_err(|e| invalid("training run", format!("{}: {e}", first.display())))
}
