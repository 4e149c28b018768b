//! The embedded nano model: procedural game-like clips with prompts naming their actions, and
//! its training (so far the VAE stage).

pub mod clips;
pub mod train;
