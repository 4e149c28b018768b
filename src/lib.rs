//! FramePack video generation for Bevy.
//!
//! The plugin (`FramePackPlugin`: frame capture, background worker, streamed texture playback,
//! RON presets) is not part of this release yet. What exists today is the engine-agnostic
//! core, re-exported here as [`framepack`]: packing schedules, section planning and the
//! flow-matching samplers.
#![warn(missing_docs)]

pub use framepack;
