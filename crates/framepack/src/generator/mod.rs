//! The generation loop: from a start image and encoded conditioning to a stream of decoded
//! sections.
//!
//! [`Generator`] holds the transformer and the VAE (shared, `Send + Sync`); [`Generator::start`]
//! turns [`Conditioning`] (start/end image pixels, SigLIP features, encoded prompts) and
//! [`JobSettings`] into a [`Job`], an iterator that samples, decodes and yields one [`Section`] per
//! iteration. FramePack's two section loops are the same code driven by the context schedule:
//!
//! - **inverted anti-drifting** (original checkpoint): sections are generated end first; each
//!   [`Section`] carries the frames that became final, which lie *before* everything yielded
//!   earlier; the video is complete after the last section.
//! - **forward / geometric** (F1): sections arrive in play order; frames can be shown or
//!   written as they come (streaming).
//!
//! The history keeps generated latents by real position (0 = start latent, `1..=n·W`
//! generated, `n·W + 1` = end latent); every context slot of
//! [`ContextSchedule::layout`](crate::packing::ContextSchedule::layout) is filled from it.
//! Decoding is FramePack's: only the section's latents plus the `W` next to them are decoded,
//! cross-faded over `4W − 3` frames ([`SectionDecoder`]); the original loop's last section
//! prepends the start latent, F1's first section starts with it.
//!
//! Noise comes from one seeded [`NoiseRng`] stream per job, consumed section by section
//! (FramePack draws each section's noise from one seeded generator too; these are not torch's
//! numbers). Same inputs and seed give bit-identical frames on the CPU.
//!
//! The job samples on whatever thread drives the iterator. On the CPU it decodes on a thread of
//! its own while the next section samples ([`JobSettings::pipeline`], on by default): a section
//! then costs about the longer of sampling and decoding, not their sum. A [`CancelToken`]
//! (clone it to another thread) is checked before every model call, after every sampler step
//! and between decoded frames, and a progress callback receives every step with an ETA.

mod conditioning;
mod decode;
mod frames;
mod job;
mod noise;
mod preview;
mod prompts;
mod settings;

pub use conditioning::{Conditioning, TextConditioning};
pub use frames::{Frame, to_frames};
pub use job::{CancelToken, FrameFn, Generator, Job, Models, Progress, ProgressFn, Section};
pub use noise::NoiseRng;
pub use preview::{LATENT_RGB_BIAS, LATENT_RGB_FACTORS, latent_preview};
pub use prompts::{PromptSchedule, TimedPrompt};
pub use settings::{DEFAULT_SEED, DEFAULT_TEACACHE_THRESHOLD, DecoderChoice, ImageLatent, JobSettings};
