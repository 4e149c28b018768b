//! FramePack video generation as a Bevy plugin: `app.add_plugins(FramePackPlugin)`.
//!
//! - [`FramePackPlugin`] with its [`FramePackSettings`] resource (model source, device, precision).
//! - A dedicated worker thread owns the models ([`FramePackWorker`]); start jobs with the
//!   [`FramePack`] system parameter, follow them with [`GenerationEvent`] messages (started,
//!   progress, section, then finished, failed with a [`GenerationError`], or cancelled).
//! - [`Preset`] assets (`*.preset.ron`) hold prompt, length, seed, steps, schedule, …
//! - [`CutscenePlayer`] plays a job's frames into an `Image` while later sections generate;
//!   a `Sprite`, `ImageNode` or `StandardMaterial` on the same entity is pointed at it.
//! - Feature `egui`: `FramePackPanelPlugin`, a panel with preset picker, prompt, start/cancel,
//!   progress and a live thumbnail. Feature `hot`: presets reload when their files change.
//! - Trigger [`CaptureCutscene`] on an entity to capture a camera or the window and generate from
//!   that frame; the entity gets the [`CutscenePlayer`], or a [`CaptureFailed`] event.
//!
//! The default model is the embedded *nano* model: a small transformer and VAE trained on
//! procedural 64 × 64 game clips (green square walking and jumping, bouncing ball, camera pans),
//! written to a temporary directory when the worker starts. It continues frames of such scenes
//! on a CPU with no download; point [`FramePackSettings::model`] at a real bundle for anything
//! else. The engine-agnostic core is re-exported as [`framepack`].
#![warn(missing_docs)]

mod capture;
mod messages;
mod nano;
#[cfg(feature = "egui")]
mod panel;
mod param;
mod playback;
mod plugin;
mod preset;
mod request;
mod settings;
mod worker;

pub use framepack;
pub use framepack::DecoderChoice;

pub use capture::{CaptureCutscene, CaptureFailed, CaptureSource};
pub use messages::{GenerationError, GenerationEvent, JobId};
#[cfg(feature = "egui")]
pub use panel::{FramePackPanel, FramePackPanelPlugin};
pub use param::{FramePack, FramePackWorker};
pub use playback::{BufferPolicy, CutscenePlayer, PlaybackClock, PlaybackState};
pub use plugin::{FramePackPlugin, FramePackSystems};
pub use preset::{Preset, PresetLoader, PresetLoaderError};
pub use request::{FramePackError, GenerationRequest, JobTicket, RgbaImage};
pub use settings::{FramePackSettings, ModelSource, Precision};

/// The types most games need.
pub mod prelude {
    pub use crate::{
        BufferPolicy, CaptureCutscene, CaptureFailed, CaptureSource, CutscenePlayer, DecoderChoice, FramePack,
        FramePackError, FramePackPlugin, FramePackSettings, FramePackSystems, GenerationError, GenerationEvent,
        GenerationRequest, JobId, JobTicket, ModelSource, PlaybackState, Precision, Preset, RgbaImage,
    };
    #[cfg(feature = "egui")]
    pub use crate::{FramePackPanel, FramePackPanelPlugin};
}
