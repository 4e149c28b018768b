//! What a job does besides its conditioning: length, seed, steps, schedule, sampler, decoder.

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::models::transformer::TeaCache;
use crate::packing::{ContextSchedule, ScheduleChoice, SectionPlan};
use crate::sampling::Sampler;

/// FramePack's default seed.
pub const DEFAULT_SEED: u64 = 31337;
/// FramePack's TeaCache threshold.
pub const DEFAULT_TEACACHE_THRESHOLD: f64 = 0.15;

/// How the start (and end) image becomes a latent.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum ImageLatent {
    /// The posterior mean (deterministic; what most ports do).
    #[default]
    Mean,
    /// A sample `mean + σ·ε` with `ε` from the job's seed (FramePack samples, with torch's
    /// global RNG). A TAEHV VAE has no distribution: it gives its one latent either way.
    Sample,
}

/// Which model turns a job's latents into frames.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum DecoderChoice {
    /// The models' VAE, with FramePack's section cross-fade (the released behaviour). A TAEHV VAE
    /// (the nano model's) decodes forward jobs as one stream, like [`Self::Tiny`].
    #[default]
    Full,
    /// The tiny decoder (TAEHV) of [`Models::tiny`](super::Models::tiny): ≈ 70× fewer operations per pixel.
    /// Forward jobs decode it as one stream (each section continues the previous one's memory, no
    /// cross-fade); inverted jobs decode each section as the full VAE would, with the cross-fade.
    Tiny,
}

/// Everything about a job that is not conditioning.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct JobSettings {
    /// Video length in seconds (30 fps); rounded to whole sections like FramePack.
    pub seconds: f64,
    /// Seed of the job's noise stream.
    pub seed: u64,
    /// Sampler steps per section (model calls).
    pub steps: usize,
    /// Distilled guidance scale (`gs`, 10 in FramePack).
    pub guidance: f64,
    /// Context schedule; its order decides the loop (inverted = original checkpoint,
    /// geometric = F1).
    pub schedule: ScheduleChoice,
    /// Latent frames per section (`latent_window_size`, 9).
    pub window: usize,
    /// Sampler (UniPC in FramePack).
    pub sampler: Sampler,
    /// TeaCache threshold (0.15 in FramePack), or `None` for full computation.
    pub teacache: Option<f64>,
    /// How the start/end images are turned into latents.
    pub image_latent: ImageLatent,
    /// The decoder of the section frames.
    pub decoder: DecoderChoice,
    /// Decode every sampler step's denoised estimate with the tiny decoder (time upscale off: one
    /// frame per latent) into [`Progress::preview`](super::Progress::preview). Needs [`Models::tiny`](super::Models::tiny).
    pub previews: bool,
    /// On the CPU with at least 2 threads in the job's rayon pool: decode each section on a
    /// thread of its own (with a pool as large as the job's) while the next section samples.
    /// A section then costs about the longer of the two stages instead of their sum. Frames,
    /// sections and their order are the same either way; each section is handed out once it
    /// is decoded and the next one is sampled.
    pub pipeline: bool,
}

impl Default for JobSettings {
    fn default() -> Self {
        Self {
            seconds: 5.0,
            seed: DEFAULT_SEED,
            steps: 25,
            guidance: 10.0,
            schedule: ScheduleChoice::InvertedAntiDrifting,
            window: crate::packing::DEFAULT_WINDOW,
            sampler: Sampler::UniPc,
            teacache: None,
            image_latent: ImageLatent::Mean,
            decoder: DecoderChoice::Full,
            previews: false,
            pipeline: true,
        }
    }
}

impl JobSettings {
    /// Checks ranges; returns the resolved schedule and the section plan.
    pub fn plan(&self) -> Result<(ContextSchedule, SectionPlan)> {
        if self.steps == 0 {
            return Err(Error::invalid("steps", "need at least 1 sampler step"));
        }
        if !(self.guidance.is_finite() && self.guidance >= 0.0) {
            return Err(Error::invalid("guidance", format!("must be a non-negative number, got {}", self.guidance)));
        }
        if let Some(t) = self.teacache {
            TeaCache::new(t, self.steps)?;
        }
        let schedule = self.schedule.resolve();
        schedule.validate()?;
        let plan = SectionPlan::from_seconds(self.seconds, self.window, schedule.order)?;
        schedule.layout(&plan, 0)?.check_model_kernels()?;
        Ok((schedule, plan))
    }
}
