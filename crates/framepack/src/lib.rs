//! Engine-agnostic core of FramePack video generation: frame-context packing schedules,
//! flow-matching samplers, the models (packed HunyuanVideo transformer, causal 3D VAE, text and
//! image encoders), strict weight loading, the section loops ([`generator`]: a [`Job`] yields
//! decoded sections, with progress, cancellation and TeaCache), model bundles on disk
//! ([`bundle`]) and the whole request-to-video [`pipeline`]. No Bevy here: the `bevy_framepack`
//! plugin and the `framepack` CLI both build on this crate.
#![warn(missing_docs)]

pub mod bundle;
pub mod clip;
pub mod error;
pub mod files;
pub mod generator;
#[cfg(feature = "hf-hub")]
pub mod hub;
pub mod models;
pub mod packing;
pub mod pipeline;
pub mod preprocess;
pub mod sampling;
pub mod weights;

pub use error::{BundleError, Error, Result, WeightsError};
pub use generator::{CancelToken, DecoderChoice, Generator, Job, JobSettings, Section};
pub use pipeline::{Pipeline, Request};
