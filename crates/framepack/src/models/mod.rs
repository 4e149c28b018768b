//! Neural network models of FramePack, built with candle from diffusers-format weights.

pub mod transformer;
pub mod vae;
