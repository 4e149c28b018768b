//! FramePack video generation as a Bevy plugin: `app.add_plugins(FramePackPlugin)`.
//!
//! - [`FramePackPlugin`] with its [`FramePackSettings`] resource (model source, device, precision).
//! - A dedicated worker thread owns the models ([`FramePackWorker`]); start jobs with the
//!   [`FramePack`] system parameter, follow them with [`GenerationEvent`] messages (started,
//!   progress, section, then finished, failed with a [`GenerationError`], or cancelled).
//! - [`Preset`] assets (`*.preset.ron`) hold prompt, length, seed, steps, schedule, …
//! - A job fills a [`CutsceneClip`] asset (its [`JobTicket::clip`]) section by section; clips
//!   save to and load from `.cutscene` files, so a game can ship or cache cutscenes and replay
//!   them without the model.
//! - [`CutscenePlayer`] plays a clip into an `Image` while later sections generate (any number
//!   of players share one clip's frames); a `Sprite`, `ImageNode` or `StandardMaterial` on the
//!   same entity is pointed at it. [`CutscenePlayback`] sets the end mode (once, loop, despawn,
//!   remove), buffering, speed, pause and clock; [`CutsceneFinished`], [`CutsceneLooped`] and
//!   [`CutsceneFailed`] are triggered on the player's entity.
//! - [`FramePack::preload`] loads the model ahead of time; [`FramePackStatus`] says when it is
//!   ready.
//! - Feature `egui`: `FramePackPanelPlugin`, a panel with preset picker, prompt, start/cancel,
//!   progress and a live thumbnail. Feature `hot`: presets reload when their files change.
//! - Trigger [`CaptureCutscene`] on an entity to capture a camera or the window and generate from
//!   that frame; the entity gets the [`CutscenePlayer`] and a [`CaptureStarted`] event with the
//!   start image, or a [`CaptureFailed`] event.
//!
//! The default model is the embedded *nano* model: a small transformer with a TAEHV as its VAE,
//! trained on procedural 128 × 96 and 128 × 128 game clips (green square walking and jumping,
//! bouncing ball, camera pans), loaded from memory when the worker starts. It continues frames of such scenes
//! on a CPU with no download; point [`FramePackSettings::model`] at a real bundle for anything
//! else. The engine-agnostic core is re-exported as [`framepack`].
#![warn(missing_docs)]

mod cache;
mod capture;
mod clip;
mod messages;
#[cfg(feature = "egui")]
mod panel;
mod param;
mod playback;
mod plugin;
mod preset;
#[cfg(feature = "remote")]
mod remote;
mod request;
mod settings;
mod worker;

pub use framepack;
pub use framepack::DecoderChoice;
/// The remote path's options (`RemoteOptions`, `Credentials`, `Tls`) and its worker, for
/// [`ModelSource::Remote`].
#[cfg(feature = "remote")]
pub use framepack_remote;

pub use capture::{CaptureCutscene, CaptureFailed, CaptureSource, CaptureStarted};
pub use clip::{ClipStatus, CutsceneClip, CutsceneClipLoader, CutsceneClipLoaderError};
pub use messages::{GenerationError, GenerationEvent, JobId};
#[cfg(feature = "egui")]
pub use panel::{FramePackPanel, FramePackPanelPlugin};
pub use param::{FramePack, FramePackStatus, FramePackWorker};
pub use playback::{
    BufferPolicy, CutsceneError, CutsceneFailed, CutsceneFinished, CutsceneLooped, CutscenePlayback, CutscenePlayer,
    PlaybackClock, PlaybackMode, PlaybackState, PlaybackTime,
};
pub use plugin::{FramePackPlugin, FramePackSystems};
pub use preset::{Preset, PresetLoader, PresetLoaderError};
pub use request::{FramePackError, GenerationRequest, JobTicket, RgbaImage};
pub use settings::{FramePackSettings, ModelSource, Precision};

/// The types most games need.
pub mod prelude {
    pub use crate::{
        BufferPolicy, CaptureCutscene, CaptureFailed, CaptureSource, CaptureStarted, ClipStatus, CutsceneClip,
        CutsceneError, CutsceneFailed, CutsceneFinished, CutsceneLooped, CutscenePlayback, CutscenePlayer,
        DecoderChoice, FramePack, FramePackError, FramePackPlugin, FramePackSettings, FramePackStatus,
        FramePackSystems, GenerationError, GenerationEvent, GenerationRequest, JobId, JobTicket, ModelSource,
        PlaybackMode, PlaybackState, PlaybackTime, Precision, Preset, RgbaImage,
    };
    #[cfg(feature = "egui")]
    pub use crate::{FramePackPanel, FramePackPanelPlugin};
}
