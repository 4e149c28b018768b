//! TAEHV, the Tiny AutoEncoder for Hunyuan Video (madebyollin/taehv, MIT): a small encoder and
//! decoder for exactly the latents the HunyuanVideo transformer works on (no scaling factor).
//!
//! Videos are `(batch, frames, 3, height, width)` in `[0, 1]` and latents `(batch, frames, 16,
//! height / 8, width / 8)`: time before channels, as upstream. Both halves are stacks of 3×3
//! 2-D convolutions run on every frame, with a one-frame temporal memory: each [`MemBlock`]
//! input is concatenated with the same block's input one frame earlier (zeros before the
//! first frame). Time is pooled by 1×1 convolutions over stacked frames in the encoder and
//! grown by 1×1 convolutions that emit several frames' channels in the decoder, so with the
//! default flags 4 frames make one latent and one latent decodes to 4 frames; the first 3
//! decoded frames are dropped, which gives the full VAE's `4T − 3` frames for `T` latents.
//!
//! Decoding costs ≈ 0.33 MFLOP per output pixel and frame at the default widths (the full
//! HunyuanVideo VAE decoder ≈ 24 MFLOP), and it is causal: [`StreamingDecoder`] decodes latent
//! by latent, yields each frame as soon as it exists and carries its memory from one call to
//! the next, with the same numbers as the time-parallel [`Taehv::decode`].
//!
//! On the CPU in f32 the stride-1 3×3 convolutions run as nine shifted GEMMs over a
//! zero-padded frame, reading a memory block's two inputs in place instead of concatenating
//! them (`models::kernels`); other devices and dtypes, and tensors that track gradients, use candle's
//! `conv2d`.
//!
//! [`MemBlock`]: blocks

mod blocks;
mod config;
mod model;
mod stream;

pub use config::Config;
pub use model::Taehv;
pub use stream::StreamingDecoder;
