//! The embedded nano model: procedural game-like clips with prompts naming their actions, its
//! training (the VAE, then the transformer on that VAE's latents) and its bundle.

pub mod bundle;
pub mod clips;
pub mod dit;
pub mod train;
