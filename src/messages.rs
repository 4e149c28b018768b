//! What the plugin tells the game about generation jobs: one [`GenerationEvent`] message per
//! step of a job's life (read them with `MessageReader<GenerationEvent>`).

use std::ops::Range;
use std::time::Duration;

use bevy::prelude::*;

/// Identifies one generation job (returned by [`FramePack::generate`](crate::FramePack::generate)).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Reflect)]
pub struct JobId(pub u64);

/// Why a job failed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error, Reflect)]
pub enum GenerationError {
    /// The model could not be prepared or loaded: missing or mismatched files, a device that
    /// cannot be opened, a memory budget too small for the model.
    #[error("cannot load the model: {0}")]
    ModelLoad(String),
    /// The model refused the request (images, prompts or settings that do not fit it).
    #[error("invalid request: {0}")]
    InvalidRequest(String),
    /// A tensor operation failed during generation.
    #[error("inference failed: {0}")]
    Inference(String),
    /// Inference panicked; the worker reloads the models for the next job.
    #[error("inference panicked: {0}")]
    Panicked(String),
    /// Remote generation could not reach or lost the NATS server (`ModelSource::Remote`).
    #[error("remote generation failed: {0}")]
    Remote(String),
}

impl GenerationError {
    /// Sorts a core error by where it came from (its message is kept whole).
    pub(crate) fn from_core(e: &framepack::Error) -> Self {
        match e {
            framepack::Error::Weights(_) | framepack::Error::Bundle(_) => Self::ModelLoad(e.to_string()),
            framepack::Error::Invalid { .. } => Self::InvalidRequest(e.to_string()),
            _ => Self::Inference(e.to_string()),
        }
    }
}

/// The life of a generation job, in order: `Started`, then `Progress` after every sampler step
/// and `Section` after every section (once it is decoded; while a decoder thread decodes it, the
/// next section's `Progress` comes first), then exactly one of `Finished`, `Failed` or
/// `Cancelled` (a job cancelled while queued gets only `Cancelled`).
#[derive(Message, Clone, Debug, PartialEq, Reflect)]
pub enum GenerationEvent {
    /// The worker began the job (models loaded, prompts and images encoded).
    Started {
        /// The job.
        job: JobId,
        /// Sections it will generate.
        sections: usize,
        /// Frames of the finished video.
        total_frames: usize,
        /// Frame width in pixels.
        width: u32,
        /// Frame height in pixels.
        height: u32,
    },
    /// A section was generated and decoded. Its frames are in the job's
    /// [`CutsceneClip`](crate::CutsceneClip) already: each arrives as soon as it is decoded (frame by
    /// frame with a TAEHV decoder, the nano model's, on a forward schedule).
    Section {
        /// The job.
        job: JobId,
        /// Generation-order index of the section (0-based).
        index: usize,
        /// Sections in the job.
        sections: usize,
        /// Where the section's frames lie in the video.
        frames: Range<usize>,
    },
    /// A sampler step finished (progress is dropped, not queued, when the game lags).
    Progress {
        /// The job.
        job: JobId,
        /// Generation-order index of the section being sampled.
        section: usize,
        /// Sections in the job.
        sections: usize,
        /// Steps done in this section.
        step: usize,
        /// Steps per section.
        steps: usize,
        /// Fraction of the whole job done, in `[0, 1]`.
        fraction: f32,
        /// Estimated time until sampling ends.
        eta: Duration,
    },
    /// The job generated all its sections.
    Finished {
        /// The job.
        job: JobId,
    },
    /// The job failed; the game and the worker keep running.
    Failed {
        /// The job.
        job: JobId,
        /// What went wrong.
        error: GenerationError,
    },
    /// The job stopped because it was cancelled.
    Cancelled {
        /// The job.
        job: JobId,
    },
}

impl GenerationEvent {
    /// The job the event is about.
    pub fn job(&self) -> JobId {
        match self {
            Self::Started { job, .. }
            | Self::Section { job, .. }
            | Self::Progress { job, .. }
            | Self::Finished { job }
            | Self::Failed { job, .. }
            | Self::Cancelled { job } => *job,
        }
    }

    /// Whether this is the job's last event (`Finished`, `Failed` or `Cancelled`).
    pub fn is_end(&self) -> bool {
        matches!(self, Self::Finished { .. } | Self::Failed { .. } | Self::Cancelled { .. })
    }
}
