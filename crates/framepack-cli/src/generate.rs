//! `framepack generate`.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use clap::{Args, ValueEnum};
use framepack::bundle::{BundlePaths, DeviceChoice, parse_dtype};
use framepack::generator::{DecoderChoice, Frame, JobSettings};
use framepack::models::transformer::Residency;
use framepack::packing::{FPS, ScheduleChoice};
use framepack::pipeline::{Pipeline, Request};
use framepack::preprocess::RgbImage;
use framepack::sampling::Sampler;
use framepack_cli::error::{CliError, Result};
use framepack_cli::output::OrderedWriter;
use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

/// Where the model runs: device, dtype and low-VRAM budget (shared by `generate` and `worker`).
#[derive(Args, Debug, Clone)]
pub struct Placement {
    /// Device: cpu, cuda[:N] or metal[:N] (GPU backends need a build with the cuda/metal feature).
    #[arg(long, default_value = "cpu")]
    pub(crate) device: DeviceChoice,
    /// Weight and activation dtype: f32, bf16 or f16. Default: f32 on the CPU, bf16 on a GPU.
    #[arg(long, value_name = "DTYPE")]
    dtype: Option<String>,
    /// Low-VRAM mode: GiB of device memory the transformer's weights may use; its blocks then
    /// stream from the memory-mapped checkpoint (e.g. 6 for the 13B model in bf16).
    #[arg(long, value_name = "GIB")]
    low_vram: Option<f64>,
}

impl Placement {
    /// The dtype asked for, or the device's default.
    pub(crate) fn dtype(&self) -> Result<candle_core::DType> {
        Ok(match &self.dtype {
            Some(d) => parse_dtype(d)?,
            None if self.device == DeviceChoice::Cpu => candle_core::DType::F32,
            None => candle_core::DType::BF16,
        })
    }

    /// Where the transformer's weights live.
    pub(crate) fn residency(&self) -> Result<Residency> {
        match self.low_vram {
            None => Ok(Residency::Resident),
            Some(gib) if gib.is_finite() && gib > 0.0 => {
                Ok(Residency::Streamed { budget_bytes: (gib * (1u64 << 30) as f64) as u64 })
            }
            Some(gib) => Err(invalid("--low-vram", format!("{gib} is not a positive number of GiB"))),
        }
    }
}

/// Decoder choice on the command line.
#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum DecoderArg {
    /// The HunyuanVideo VAE (the released quality).
    Full,
    /// The tiny decoder (TAEHV): far faster, softer details. Needs `vae_tiny/` in the weights
    /// folder or `--tiny-decoder`.
    Tiny,
}

/// Sampler choice on the command line.
#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum SamplerArg {
    /// UniPC (bh1, order 3), FramePack's sampler.
    Unipc,
    /// First-order Euler.
    Euler,
}

#[derive(Args, Debug)]
pub struct GenerateArgs {
    /// Start frame (PNG or JPEG). It is matched to the nearest bucket of the resolution class,
    /// resized and center-cropped.
    #[arg(long, value_name = "FILE")]
    pub(crate) image: PathBuf,
    /// What happens in the video. Timestamps change the prompt over time, e.g.
    /// "[0s: a cat sits] [2s-4s: the cat jumps] in a garden"; text outside brackets is used
    /// wherever no tag applies. A section uses the prompt active when it starts.
    #[arg(long, default_value = "")]
    prompt: String,
    /// Video length in seconds at 30 fps, rounded to whole sections of 4·window frames
    /// (5 s gives 4 sections = 145 frames).
    #[arg(long, default_value_t = 5.0)]
    seconds: f64,
    /// Seed of the noise; the same request and seed give the same video on the CPU.
    #[arg(long, default_value_t = framepack::generator::DEFAULT_SEED)]
    seed: u64,
    /// Sampler steps per section (FramePack: 25).
    #[arg(long, default_value_t = 25)]
    pub(crate) steps: usize,
    /// Distilled guidance scale (FramePack: 10).
    #[arg(long, default_value_t = 10.0)]
    guidance: f64,
    /// Context schedule: `inverted` (the original FramePackI2V_HY model: the end of the video is
    /// generated first), `geometric` (the F1 model: forward, frames are written as they come),
    /// `first-frame` or `symmetric`. Use the one the checkpoint was trained for.
    #[arg(long, default_value = "inverted")]
    schedule: ScheduleChoice,
    /// Latent frames per section (FramePack: 9, i.e. 36 video frames).
    #[arg(long, default_value_t = 9)]
    window: usize,
    /// Resolution class of the size buckets (FramePack: 640, e.g. 640×608 for a square image).
    #[arg(long, default_value_t = 640)]
    resolution: usize,
    /// TeaCache: skip transformer passes whose input barely changed. `--teacache` alone uses
    /// FramePack's threshold 0.15 (≈2× faster, slightly worse details); give a value to change it.
    #[arg(long, value_name = "THRESHOLD", num_args = 0..=1, default_missing_value = "0.15")]
    teacache: Option<f64>,
    /// Optional end frame: the video is steered to finish on it (best with `--schedule inverted`;
    /// the same image as `--image` makes loops).
    #[arg(long, value_name = "FILE")]
    end_image: Option<PathBuf>,
    /// The weights folder (layout above; check it with `framepack info`). In a build with the
    /// `hf-hub` feature, `hub:original` or `hub:f1` downloads the released repositories instead
    /// (into the Hugging Face cache).
    #[arg(long, value_name = "DIR", required_unless_present_any = ["nano", "remote"], conflicts_with_all = ["nano", "remote"])]
    weights: Option<PathBuf>,
    /// Use the embedded nano model (64 × 64 procedural game clips) instead of a weights folder.
    #[arg(long, conflicts_with = "remote")]
    nano: bool,
    /// Generate on the workers behind this NATS server (`framepack worker`) instead of here,
    /// e.g. nats://127.0.0.1:4222 or tls://gpu-host:4222. The weights are the workers'.
    #[arg(
        long,
        value_name = "URL",
        conflicts_with_all = ["device", "dtype", "low_vram", "tiny_decoder", "preview"]
    )]
    pub(crate) remote: Option<String>,
    #[command(flatten)]
    pub(crate) nats: crate::remote::NatsArgs,
    /// Output: a folder of PNG frames, or a file ending in .gif, .mp4 (H.264) or .cutscene (a clip
    /// `bevy_framepack` plays as an asset, without the model).
    #[arg(long, value_name = "PATH")]
    pub(crate) out: PathBuf,
    #[command(flatten)]
    pub(crate) place: Placement,
    /// Sampler.
    #[arg(long, value_enum, default_value = "unipc")]
    sampler: SamplerArg,
    /// Decoder of the frames.
    #[arg(long, value_enum, default_value = "full")]
    decoder: DecoderArg,
    /// The tiny decoder (TAEHV) to use instead of the weights folder's `vae_tiny/`: a
    /// `taehv.safetensors` file (the released config) or a folder with it and a `config.json`.
    #[arg(long, value_name = "PATH")]
    tiny_decoder: Option<PathBuf>,
    /// Rewrite this PNG after every sampler step with the tiny decoder's frames of the current
    /// estimate of the section, side by side (needs a tiny decoder).
    #[arg(long, value_name = "FILE.png")]
    preview: Option<PathBuf>,
    /// No progress bars (the per-section lines are still printed).
    #[arg(long)]
    pub(crate) quiet: bool,
}

pub(crate) fn invalid(what: &'static str, reason: impl Into<String>) -> CliError {
    CliError::argument(what, reason)
}

fn load_image(path: &Path, what: &'static str) -> Result<RgbImage> {
    let img = image::open(path).map_err(|e| invalid(what, format!("cannot read {}: {e}", path.display())))?;
    let rgb = img.to_rgb8();
    Ok(RgbImage::new(rgb.width() as usize, rgb.height() as usize, rgb.into_raw())?)
}

pub(crate) fn style(template: &str) -> ProgressStyle {
    ProgressStyle::with_template(template).unwrap_or_else(|_| ProgressStyle::default_bar()).progress_chars("=> ")
}

pub(crate) fn fmt_duration(d: Duration) -> String {
    let s = d.as_secs();
    format!("{:02}:{:02}:{:02}", s / 3600, s / 60 % 60, s % 60)
}

/// The bundle a `--weights` argument names: a folder, or `hub:original` / `hub:f1` (downloads
/// show progress unless `quiet`).
pub fn bundle_paths(weights: &Path, quiet: bool) -> Result<BundlePaths> {
    if let Some(which) = weights.to_str().and_then(|s| s.strip_prefix("hub:")) {
        return hub(which, quiet);
    }
    if !weights.is_dir() {
        return Err(invalid("weights", format!("folder {} not found", weights.display())));
    }
    Ok(BundlePaths::from_dir(weights))
}

#[cfg(feature = "hf-hub")]
fn hub(which: &str, quiet: bool) -> Result<BundlePaths> {
    let repo = match which {
        "original" | "inverted" => framepack::hub::ORIGINAL,
        "f1" | "geometric" => framepack::hub::F1,
        other => {
            return Err(invalid("weights", format!("unknown hub model `{other}` (expected hub:original or hub:f1)")));
        }
    };
    framepack::hub::fetch_with(repo, framepack::hub::HubOptions { progress: !quiet, ..Default::default() })
}

#[cfg(not(feature = "hf-hub"))]
fn hub(_: &str, _quiet: bool) -> Result<BundlePaths> {
    Err(invalid("weights", "this build cannot download weights (rebuild with the `hf-hub` feature) — give a folder"))
}

/// Writes `frames` side by side into `path` (through a temporary file, so a viewer never reads
/// half a PNG).
fn write_strip(path: &Path, frames: &[Frame]) -> Result<(), String> {
    let Some(first) = frames.first() else {
        return Ok(());
    };
    let (w, h) = (first.width, first.height);
    let mut rgb = vec![0u8; frames.len() * w * h * 3];
    let row = frames.len() * w * 3;
    for (i, f) in frames.iter().enumerate() {
        for y in 0..h {
            rgb[y * row + i * w * 3..y * row + (i + 1) * w * 3].copy_from_slice(&f.rgb[y * w * 3..(y + 1) * w * 3]);
        }
    }
    let tmp = path.with_extension("png.tmp");
    framepack_cli::video::write_png(&tmp, (frames.len() * w) as u32, h as u32, &rgb).map_err(|e| e.to_string())?;
    std::fs::rename(&tmp, path).map_err(|e| format!("cannot write {}: {e}", path.display()))
}

pub fn run(args: GenerateArgs) -> Result<()> {
    let started = Instant::now();
    let dtype = args.place.dtype()?;
    let settings = JobSettings {
        seconds: args.seconds,
        seed: args.seed,
        steps: args.steps,
        guidance: args.guidance,
        schedule: args.schedule.clone(),
        window: args.window,
        sampler: match args.sampler {
            SamplerArg::Unipc => Sampler::UniPc,
            SamplerArg::Euler => Sampler::Euler,
        },
        teacache: args.teacache,
        decoder: match args.decoder {
            DecoderArg::Full => DecoderChoice::Full,
            DecoderArg::Tiny => DecoderChoice::Tiny,
        },
        previews: args.preview.is_some(),
        ..JobSettings::default()
    };
    if let Some(p) = &args.preview
        && !p.extension().is_some_and(|e| e.eq_ignore_ascii_case("png"))
    {
        return Err(invalid("--preview", format!("{} is not a .png file", p.display())));
    }
    framepack_cli::video::Format::from_path(&args.out).map_err(|e| invalid("--out", e.to_string()))?;
    let image = load_image(&args.image, "image")?;
    let end_image = args.end_image.as_deref().map(|p| load_image(p, "end image")).transpose()?;
    let request = Request {
        image,
        end_image,
        prompt: args.prompt.clone(),
        resolution: args.resolution,
        settings: settings.clone(),
    };
    let planned = request.plan()?;
    let plan = &planned.sections;
    if let Some(parent) = args.out.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent)
            .map_err(|e| invalid("out", format!("cannot create {}: {e}", parent.display())))?;
    }
    if let Some(url) = &args.remote {
        return crate::remote::generate(&args, url, &request, started);
    }
    let (mut paths, source) = match &args.weights {
        Some(w) => (bundle_paths(w, args.quiet)?, w.display().to_string()),
        None => (framepack_nano::bundle(), "the embedded nano model".to_string()),
    };
    if let Some(t) = &args.tiny_decoder {
        if !t.exists() {
            return Err(invalid("--tiny-decoder", format!("{} not found", t.display())));
        }
        paths.vae_tiny = t.clone();
    }
    let device = args.place.device.open()?;

    let multi = MultiProgress::with_draw_target(if args.quiet {
        ProgressDrawTarget::hidden()
    } else {
        ProgressDrawTarget::stderr()
    });
    let spinner = multi.add(ProgressBar::new_spinner().with_message(format!("loading {source}")));
    spinner.enable_steady_tick(Duration::from_millis(120));
    let residency = args.place.residency()?;
    let mut pipeline = Pipeline::load_with(&paths, &device, dtype, residency)?;
    spinner.set_message("encoding prompt and image");
    let job = pipeline.start_planned(&request, &planned)?;
    spinner.finish_and_clear();
    let (width, height) = job.frame_size();
    let total = job.total_frames();
    framepack_cli::say!(
        "{} section(s) of {} latents, {:?} order, {width}x{height}: {total} frames = {:.2} s at 30 fps",
        plan.sections,
        plan.window,
        plan.order,
        plan.duration_seconds()
    );

    let sections_bar = multi.add(ProgressBar::new(plan.sections as u64));
    sections_bar.set_style(style("sections [{bar:30}] {pos}/{len}  {msg}"));
    let steps_bar = multi.add(ProgressBar::new((plan.sections * settings.steps) as u64));
    steps_bar.set_style(style("steps    [{bar:30}] {pos}/{len}  {msg}"));
    let bar = steps_bar.clone();
    let preview = args.preview.clone();
    let preview_bar = steps_bar.clone();
    let job = job.on_progress(move |p| {
        if let Some(path) = &preview
            && let Err(e) = write_strip(path, p.preview)
        {
            preview_bar.println(format!("preview: {e}"));
        }
        bar.set_position((p.section * p.total_steps + p.step) as u64);
        bar.set_message(format!(
            "section {}/{} step {}/{}  elapsed {}  ETA {}",
            p.section + 1,
            p.sections,
            p.step,
            p.total_steps,
            fmt_duration(p.elapsed),
            fmt_duration(p.eta)
        ));
    });

    let mut writer = OrderedWriter::create(&args.out, width, height, FPS as u32, total)?;
    for section in job {
        let section = section?;
        let provisional = if section.provisional.is_empty() {
            String::new()
        } else {
            format!(", {} provisional {:?}", section.provisional.len(), section.provisional_range)
        };
        let teacache = if args.teacache.is_some() {
            format!(", TeaCache skipped {}/{} steps", section.teacache_skipped, settings.steps)
        } else {
            String::new()
        };
        let line = format!(
            "section {}/{}: latents {:?}, {} final frames {:?}{provisional}{teacache}",
            section.index + 1,
            section.sections,
            section.latents,
            section.frames.len(),
            section.frame_range,
        );
        multi.suspend(|| framepack_cli::say!("{line}"));
        writer.push(section)?;
        sections_bar.inc(1);
        sections_bar.set_message(format!("{} frames written", writer.written()));
    }
    writer.finish()?;
    steps_bar.finish_and_clear();
    sections_bar.finish_and_clear();
    framepack_cli::say!(
        "wrote {total} frames ({width}x{height}, {:.2} s) to {} in {:.1} s",
        total as f64 / FPS,
        args.out.display(),
        started.elapsed().as_secs_f64()
    );
    Ok(())
}
