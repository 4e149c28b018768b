//! The packed HunyuanVideo DiT of FramePack (diffusers `HunyuanVideoFramepackTransformer3DModel`,
//! original `HunyuanVideoTransformer3DModelPacked`).
//!
//! Weight names are the diffusers checkpoint keys. One forward pass embeds the noisy latents and
//! the clean history (1x, 2x, 4x), packs them as `[4x | 2x | 1x clean | noisy]` with matching 3-D
//! RoPE tables, builds the context `[image tokens | refined text]`, runs the dual- and
//! single-stream blocks and returns the flow velocity of the noisy latents only.
//!
//! Numerics follow the reference: weights and activations in the VarBuilder's dtype, while the
//! q/k RMSNorm, RoPE, attention scores and softmax, and the final `proj_out` run in f32. The
//! timestep and guidance are embedded exactly as given; rounding `σ·1000` to bf16 is the
//! sampler's job. Text masks must be a prefix of ones per row: batch 1 crops the text to its
//! valid tokens, larger batches crop to the longest and mask the rest like diffusers.

mod config;
mod inputs;
mod layers;
mod model;
mod rope;
mod streaming;
mod teacache;

pub use config::Config;
pub use inputs::TransformerInputs;
pub use model::{Packed, Trace, Transformer};
pub use streaming::{MemoryPlan, Residency};
pub use teacache::{TEACACHE_COEFFICIENTS, TeaCache};
