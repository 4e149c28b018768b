//! Neural network models of FramePack, built with candle from diffusers-format weights.

pub mod autoencoder;
pub(crate) mod kernels;
pub(crate) mod ops;
pub mod taehv;
pub mod text;
pub mod transformer;
pub mod vae;
pub mod vision;

pub use autoencoder::{Autoencoder, AutoencoderConfig};
