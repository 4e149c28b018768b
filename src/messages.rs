//! Messages the plugin writes as a generation job goes on (read them with `MessageReader`).

use std::ops::Range;
use std::time::Duration;

use bevy::prelude::*;

/// Identifies one generation job (returned by [`FramePack::generate`](crate::FramePack::generate)).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct JobId(pub u64);

/// The worker began a job (models loaded, prompts and images encoded).
#[derive(Message, Clone, Debug, PartialEq)]
pub struct GenerationStarted {
    /// The job.
    pub job: JobId,
    /// Sections it will generate.
    pub sections: usize,
    /// Frames of the finished video.
    pub total_frames: usize,
    /// Frame width in pixels.
    pub width: usize,
    /// Frame height in pixels.
    pub height: usize,
}

/// A section was generated and decoded; its frames went to the job's [`CutscenePlayer`](crate::CutscenePlayer)s.
#[derive(Message, Clone, Debug, PartialEq)]
pub struct SectionReady {
    /// The job.
    pub job: JobId,
    /// Generation-order index of the section (0-based).
    pub index: usize,
    /// Sections in the job.
    pub total: usize,
    /// Where the section's frames lie in the video.
    pub frames: Range<usize>,
}

/// A sampler step finished (progress messages are dropped, not queued, when the game lags).
#[derive(Message, Clone, Debug, PartialEq)]
pub struct GenerationProgress {
    /// The job.
    pub job: JobId,
    /// Generation-order index of the section being sampled.
    pub section: usize,
    /// Sections in the job.
    pub sections: usize,
    /// Steps done in this section.
    pub step: usize,
    /// Steps per section.
    pub total_steps: usize,
    /// Fraction of the whole job done, in `[0, 1]`.
    pub fraction: f32,
    /// Estimated time until sampling ends.
    pub eta: Duration,
}

/// A job generated all its sections.
#[derive(Message, Clone, Debug, PartialEq, Eq)]
pub struct GenerationFinished {
    /// The job.
    pub job: JobId,
}

/// A job failed: bad settings, a model that would not load, an inference error or panic.
#[derive(Message, Clone, Debug, PartialEq, Eq)]
pub struct GenerationFailed {
    /// The job.
    pub job: JobId,
    /// What went wrong, in words.
    pub error: String,
}

/// A job stopped because it was cancelled.
#[derive(Message, Clone, Debug, PartialEq, Eq)]
pub struct GenerationCancelled {
    /// The job.
    pub job: JobId,
}
